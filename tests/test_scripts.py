"""Running Lua scripts: grouped calls from many threads, against a real Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from chalicelib.script_calls import BeginDelivery
from chalicelib.scripts import Call, Scripts, _GroupCommit
from chalicelib.store import DELIVERY_FIELDS

CALLERS = 10


def _queued(client: redis.Redis, ref: str, token: str) -> None:
    client.hset(f"item:{ref}", mapping={"status": "queued", "token": token, "attempts": "0"})


def _begin(scripts: Scripts, ref: str, token: str) -> Any:
    call = BeginDelivery(
        message_key=f"item:{ref}", inflight_key="inflight", calls_key="calls", waiting_key="waiting",
        state_key="state", breaker_key="breaker", message_counts_key="counts", message_ref=ref,
        claim_token=token, lease_deadline_ms=5,
        now_ms=0, max_calls=0, claim_body="", due_ms=0, postpone_token="later", grace_ms=0,
        known_destination="",
    )
    return scripts.run(call.script, keys=call.keys(), args=call.args())


def test_grouped_calls_from_many_threads_each_get_their_own_answer(redis_client: redis.Redis) -> None:
    scripts = Scripts(redis_client)
    for i in range(200):
        _queued(redis_client, f"m{i}", f"t{i}")
    with ThreadPoolExecutor(max_workers=32) as pool:
        # Every other call carries a wrong token, so its answer must be the empty "nothing claimed".
        tokens = [f"t{i}" if i % 2 else "stale" for i in range(200)]
        answers = list(pool.map(lambda i: _begin(scripts, f"m{i}", tokens[i]), range(200)))
    for i, answer in enumerate(answers):
        if i % 2:
            verdict, fields = answer
            assert verdict == "go"
            assert dict(zip(DELIVERY_FIELDS, fields, strict=True))["token"] == f"t{i}"
        else:
            assert answer == []
    assert redis_client.zcard("inflight") == 100


def test_an_error_in_one_call_raises_in_that_caller_only(redis_client: redis.Redis) -> None:
    scripts = Scripts(redis_client)
    _queued(redis_client, "good", "t")
    redis_client.set("item:bad", "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        _begin(scripts, "bad", "t")
    assert _begin(scripts, "good", "t") != []


def test_grouped_calls_survive_a_script_flush(redis_client: redis.Redis) -> None:
    scripts = Scripts(redis_client)
    _queued(redis_client, "a", "t")
    _queued(redis_client, "b", "t")
    assert _begin(scripts, "a", "t") != []
    redis_client.script_flush()
    assert _begin(scripts, "b", "t") != []


class _HeldSend:
    """A send that holds its first group until the test lets it go, recording every group."""

    def __init__(self, fail_first: BaseException | None = None) -> None:
        self.groups: list[list[Call]] = []
        self.release = threading.Event()
        self._fail_first = fail_first

    def __call__(self, calls: list[Call]) -> list[Any]:
        self.groups.append(calls)
        if len(self.groups) == 1:
            self.release.wait(timeout=10)
            if self._fail_first:
                raise self._fail_first
        return [f"answer {args[0]}" for _, args in calls]


def _wait_for_threads(condition: Callable[[], bool]) -> None:
    """Wait for other threads to get somewhere (not for the clock); fail rather than hang."""
    for _ in range(10_000):
        if condition():
            return
        threading.Event().wait(0.001)
    raise AssertionError("the callers never got there")


def _call_while_first_is_held(group: _GroupCommit, send: _HeldSend) -> list[Callable[[], Any]]:
    """Call 0 is in flight; calls 1..CALLERS-1 arrive meanwhile; then call 0 is answered."""
    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        first = pool.submit(group.call, ([], [0]))
        _wait_for_threads(lambda: bool(send.groups))
        rest = [pool.submit(group.call, ([], [i])) for i in range(1, CALLERS)]
        _wait_for_threads(lambda: len(group._waiting) == CALLERS - 1)  # queued behind call 0
        send.release.set()
        return [future.result for future in [first, *rest]]


def test_calls_arriving_while_a_group_is_in_flight_go_together_in_the_next() -> None:
    send = _HeldSend()
    group = _GroupCommit(send)
    results = [result() for result in _call_while_first_is_held(group, send)]
    assert results == [f"answer {i}" for i in range(CALLERS)]
    assert [[args[0] for _, args in calls] for calls in send.groups] == [[0], list(range(1, CALLERS))]
    assert group.call(([], ["alone"])) == "answer alone"  # nothing left in flight
    assert len(send.groups) == 3


@pytest.mark.parametrize("failure", [redis.ConnectionError("connection lost"), SystemExit(1)])
def test_a_failed_send_fails_its_own_group_only(failure: BaseException) -> None:
    send = _HeldSend(fail_first=failure)
    group = _GroupCommit(send)
    futures = _call_while_first_is_held(group, send)
    with pytest.raises(type(failure)):
        futures[0]()
    assert [result() for result in futures[1:]] == [f"answer {i}" for i in range(1, CALLERS)]
    assert group.call(([], ["after"])) == "answer after"
