"""On a Redis in cluster mode every script's keys, and every key, hash to one slot.

Every ScriptCall class in chalicelib/script_calls.py is built with the keys its callers build
(keys.Keys, cluster layout) and run on a cluster of three primaries: a script whose keys
spanned slots would be refused with CROSSSLOT. A new script, or a key field under a new name,
fails here until it is named in KEY_BUILDERS below.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from chalicelib import script_calls
from chalicelib.keys import Keys, has_hash_tag, slot_head
from chalicelib.scripts import ScriptCall, Scripts
from tests.conftest import RedisServers

KEYS = Keys("punctual", cluster=True)
# What each key field of a ScriptCall is built from, by its callers (store.py, agent_store.py,
# run_store.py, live_store.py); a variadic field gets several keys.
KEY_BUILDERS: dict[str, Callable[[Keys], Any]] = {
    "message_key": lambda k: k.message("m-1"),
    "pending_messages_key": lambda k: k.pending_messages,
    "due_key": lambda k: k.due,
    "inflight_key": lambda k: k.inflight,
    "sweep_key": lambda k: k.sweep(1_893_456_000_000),
    "zset_key": lambda k: k.runs_of("agent-1"),
    "item_keys": lambda k: (k.item("m:m-1"), k.item("r:agent-1/run-1")),
    "agent_key": lambda k: k.agent("agent-1"),
    "agents_key": lambda k: k.agents,
    "schedules_key": lambda k: k.schedules,
    "paused_key": lambda k: k.paused,
    "recent_runs_key": lambda k: k.runs_of("agent-1"),
    "pending_slot_key": lambda k: k.run(""),
    "next_slot_key": lambda k: k.run("run-2"),
    "run_key": lambda k: k.run("run-1"),
    "ready_key": lambda k: k.ready,
    "running_key": lambda k: k.running,
    "run_keys": lambda k: (k.run("run-1"), k.run("run-2")),
    "agent_topic_key": lambda k: k.ws_topic("agent:agent-1"),
    "scheduler_topic_key": lambda k: k.ws_topic("scheduler"),
    "connection_key": lambda k: k.ws_connection("conn-1"),
    "subscriptions_key": lambda k: k.ws_subscriptions("conn-1"),
    "topic_key": lambda k: k.ws_topic("agent:agent-1"),
    "topic_keys": lambda k: (k.ws_topic("agent:agent-1"), k.ws_topic("scheduler")),
    "progress_key": lambda k: k.ws_progress("run-1"),
    "calls_key": lambda k: k.flow("https://hooks.example.com:443").calls,
    "waiting_key": lambda k: k.flow("https://hooks.example.com:443", "tenant-7").waiting,
    "state_key": lambda k: k.flow("https://hooks.example.com:443").state,
    "breaker_key": lambda k: k.breaker("https://hooks.example.com:443"),
    "destinations_key": lambda k: k.destinations,
    "token_connections_key": lambda k: k.ws_token_connections("0123456789abcdef"),
    "tokens_key": lambda k: k.ws_tokens,
    "failed_messages_key": lambda k: k.failed_messages,
    "message_counts_key": lambda k: k.message_counts,
    "stats_minute_key": lambda k: k.stats_minute(1_893_456_000_000),
}

CALLS = sorted(
    (cls for _, cls in inspect.getmembers(script_calls, inspect.isclass)
     if issubclass(cls, ScriptCall) and cls is not ScriptCall),
    key=lambda cls: cls.__name__,
)


def _call(cls: type[ScriptCall], keys: Keys) -> ScriptCall:
    """A call with the keys its callers build, and placeholder arguments."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("key"):
            assert spec.name in KEY_BUILDERS, f"{cls.__name__}.{spec.name}: name its builder in KEY_BUILDERS"
            values[spec.name] = KEY_BUILDERS[spec.name](keys)
        else:
            values[spec.name] = () if spec.metadata.get("tail") else ""
    return cls(**values)


@pytest.fixture(scope="module")
def cluster(redis_servers: RedisServers) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_servers.get("cluster").url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def test_every_script_call_is_checked() -> None:
    assert len(CALLS) >= 25
    assert {"ClaimDue", "CreateMessage", "Fire", "Disconnect"} <= {cls.__name__ for cls in CALLS}


@pytest.mark.parametrize("cls", CALLS, ids=lambda cls: cls.__name__)
def test_a_scripts_keys_share_one_slot_and_the_cluster_runs_it(
    cls: type[ScriptCall], cluster: RedisCluster
) -> None:
    call = _call(cls, KEYS)
    keys = call.keys()
    assert keys and all(key.startswith("{punctual}:") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    script = Scripts(cluster).get(cls.script)
    try:
        cluster.evalsha(script.sha, len(keys), *keys, *call.args())
    except redis.exceptions.NoScriptError:
        cluster.script_load(script.script)
        try:
            cluster.evalsha(script.sha, len(keys), *keys, *call.args())
        except redis.ResponseError as exc:
            _only_placeholder_trouble(exc)
    except redis.ResponseError as exc:
        _only_placeholder_trouble(exc)


def _only_placeholder_trouble(exc: redis.ResponseError) -> None:
    """The placeholder arguments may upset the script itself; the cluster must not refuse it."""
    text = str(exc)
    assert "CROSSSLOT" not in text and "MOVED" not in text and "non local key" not in text, text


def test_every_key_builder_shares_the_slot() -> None:
    built = [builder(KEYS) for builder in KEY_BUILDERS.values()]
    flat = [key for value in built for key in (value if isinstance(value, tuple) else (value,))]
    flat += [KEYS.tick_heartbeat, KEYS.ws_status_lock, KEYS.ws_status_pending, KEYS.ws_fanout("f-1")]
    assert len({key_slot(key.encode()) for key in flat}) == 1


def test_a_plain_redis_keeps_the_names_every_earlier_release_used() -> None:
    # The upgrade path on a plain Redis: no key is renamed, so accepted messages and agents are
    # found where the previous release stored them.
    plain = Keys("punctual")
    assert (plain.due, plain.inflight, plain.pending_messages) == ("punctual:due", "punctual:inflight",
                                                                   "punctual:msgs:pending")
    assert plain.message("x") == "punctual:msg:x"
    assert plain.agent("a") == "punctual:agent:a"
    assert plain.run("r") == "punctual:run:r"


def test_a_prefix_that_already_holds_a_hash_tag_is_used_as_it_is() -> None:
    # REDIS_KEY_PREFIX='{punctual}' was the only way onto a cluster before: its data stays put.
    assert Keys("{punctual}", cluster=True).due == "{punctual}:due"
    assert Keys("{punctual}").due == "{punctual}:due"
    assert slot_head("app", cluster=True) == "{app}"
    assert [has_hash_tag(text) for text in ("{a}", "x{a}y", "{}", "{", "}{", "a")] == [
        True, True, False, False, False, False]
