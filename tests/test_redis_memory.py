"""Redis running out of memory: an evicting Redis is refused at start and reported by /health;
under noeviction a full Redis answers writes with a 503 that says so (issue 21, finding 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from chalice.test import Client

import app as app_module
from chalicelib import services
from chalicelib.config import Settings
from chalicelib.errors import EvictingStorage
from chalicelib.redis_client import connect
from chalicelib.services import Services
from emulator.redis_server import RedisServer
from tests.conftest import AUTH, TOKEN, Harness, RedisServers, message

LATER = "2030-01-01T01:00:00Z"
URL = "http://127.0.0.1:9/hook"
DETAIL = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def lru_server() -> Iterator[RedisServer]:
    server = RedisServer("--maxmemory-policy", "allkeys-lru")
    yield server
    server.stop()


@pytest.fixture
def started_from_env(monkeypatch: pytest.MonkeyPatch, aws: Any) -> Iterator[Client]:
    """The app as a Lambda container starts it: services built from the environment."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("PUNCTUAL_LOCAL", "1")
    services.install(None)
    with Client(app_module.app) as client:
        yield client
    services.install(None)


def body(response: Any) -> Any:
    return json.loads(response.body)


def test_start_refuses_an_evicting_redis(lru_server: RedisServer, aws: Any) -> None:
    with pytest.raises(EvictingStorage) as refused:
        Services.build(Settings.from_env({"REDIS_URL": lru_server.url, "API_TOKEN": TOKEN}), sqs_client=aws)
    assert "maxmemory-policy allkeys-lru" in refused.value.message
    assert "set maxmemory-policy to noeviction" in refused.value.message
    assert refused.value.status_code == 503


def test_every_route_answers_the_refusal_and_health_reports_it(
    lru_server: RedisServer, started_from_env: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", lru_server.url)
    new = json.dumps(message("m", LATER, URL))
    response = started_from_env.http.post("/messages", headers=AUTH, body=new)
    assert response.status_code == 503
    assert "maxmemory-policy allkeys-lru" in body(response)["detail"]
    assert lru_server.url.split("//")[1].split("/")[0] not in response.body.decode()
    # /health: the spec's fields for anyone, the reason for the token's holder.
    response = started_from_env.http.get("/health")
    assert (response.status_code, body(response)) == (503, {"status": "unhealthy", "redis": "connected"})
    response = started_from_env.http.get("/health", headers=DETAIL)
    assert response.status_code == 503
    detail = body(response)
    assert detail["status"] == "unhealthy" and detail["evictionPolicy"] == "allkeys-lru"
    assert "silently lose accepted messages" in detail["reason"]


def test_fixing_the_policy_needs_no_redeploy(
    lru_server: RedisServer, started_from_env: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", lru_server.url)
    assert started_from_env.http.get("/health").status_code == 503
    redis.Redis.from_url(lru_server.url).config_set("maxmemory-policy", "noeviction")
    response = started_from_env.http.get("/health")
    assert (response.status_code, body(response)) == (200, {"status": "healthy", "redis": "connected"})


def test_a_policy_changed_while_running_is_reported(harness: Harness) -> None:
    harness.redis.config_set("maxmemory-policy", "volatile-lru")
    try:
        response = harness.get("/health")
    finally:
        harness.redis.config_set("maxmemory-policy", "noeviction")
    assert response.status_code == 503
    detail = body(response)
    assert detail["evictionPolicy"] == "volatile-lru" and "volatile-lru" in detail["reason"]


def test_the_policy_is_read_from_info_where_config_is_refused(aws: Any) -> None:
    # ElastiCache refuses CONFIG; INFO memory still tells.
    server = RedisServer("--maxmemory-policy", "allkeys-random", "--rename-command", "CONFIG", "")
    try:
        with pytest.raises(redis.ResponseError):
            redis.Redis.from_url(server.url).config_get("maxmemory-policy")
        with pytest.raises(EvictingStorage, match="allkeys-random"):
            connect(server.url)
    finally:
        server.stop()


def test_every_primary_of_a_cluster_is_checked(redis_servers: RedisServers) -> None:
    cluster = redis_servers.get("cluster")
    last = cluster.node(cluster.ports[-1])
    last.config_set("maxmemory-policy", "allkeys-lfu")
    try:
        with pytest.raises(EvictingStorage, match="allkeys-lfu"):
            connect(cluster.url)
    finally:
        last.config_set("maxmemory-policy", "noeviction")
    connect(cluster.url).client.close()


def test_a_full_redis_answers_writes_with_a_503_that_says_so(harness: Harness) -> None:
    server = RedisServer("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    try:
        client = connect(server.url).client
        harness.redis = client
        harness.configure()
        filler = redis.Redis.from_url(server.url)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(10_000):
                filler.set(f"filler:{i}", "x" * 4096)
        response = harness.post(message("full", LATER, URL))
        assert response.status_code == 503
        assert body(response) == {"detail": "Redis is out of memory: the request was not stored; retry later"}
        assert harness.get("/messages/full").status_code == 404  # refused, not half-stored
        status, answer = harness.api("POST", "/api/agents", {"id": "a1", "name": "A",
                                                             "endpointUrl": "http://127.0.0.1:9/run"})
        assert status == 503 and answer["error"].startswith("Redis is out of memory")
        filler.flushall()  # room again: the same message is accepted
        assert harness.post(message("full", LATER, URL)).status_code == 200
        client.close()
    finally:
        server.stop()
