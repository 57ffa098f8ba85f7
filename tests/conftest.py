from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
import redis
from chalice.local import LambdaContext
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import services
from chalicelib.clock import FakeClock
from chalicelib.config import DEFAULT_DISPATCH_QUEUE, DEFAULT_FANOUT_QUEUE, Settings
from chalicelib.redis_client import connect
from chalicelib.services import Services
from emulator.redis_cluster import LocalCluster
from emulator.redis_server import RedisServer
from tests.receiver import Receiver

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
# 2030-01-01T00:00:00Z
T0 = 1_893_456_000_000
LAMBDA_TIMEOUT_MS = 60_000


# The Redis shapes the storage-facing tests run against: a plain redis-server, a cluster of three
# primaries, and one cluster node holding every slot (how ElastiCache Serverless presents itself).
REDIS_SHAPES = ("plain", "cluster", "one-node")
# Test modules run once per shape; the others on a plain Redis only.
ON_EVERY_SHAPE = {"test_delivery", "test_agent_runs", "test_live", "test_messages_api", "test_agents_api",
                  "test_attempts", "test_stats"}


class RedisServers:
    """Each shape's server, started on first use and kept for the session."""

    def __init__(self) -> None:
        self._started: dict[str, RedisServer | LocalCluster] = {}

    def get(self, shape: str) -> RedisServer | LocalCluster:
        if shape not in self._started:
            if shape == "plain":
                self._started[shape] = RedisServer()
            elif shape == "replicated":  # a replica per primary, to fail over to
                self._started[shape] = LocalCluster(primaries=3, replicas=1)
            else:
                self._started[shape] = LocalCluster(primaries=3, one_node=shape == "one-node")
        return self._started[shape]

    def stop(self) -> None:
        for server in self._started.values():
            server.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "redis_server" in metafunc.fixturenames and module in ON_EVERY_SHAPE:
        metafunc.parametrize("redis_server", REDIS_SHAPES, indirect=True)


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[RedisServers]:
    servers = RedisServers()
    yield servers
    servers.stop()


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, redis_servers: RedisServers) -> RedisServer | LocalCluster:
    return redis_servers.get(getattr(request, "param", "plain"))


@pytest.fixture
def redis_client(redis_server: RedisServer | LocalCluster) -> Iterator[redis.Redis]:
    """The client the app would build for this server (a RedisCluster on a cluster), emptied:
    on a cluster, FLUSHALL goes to every primary."""
    client = connect(redis_server.url).client
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def env(redis_server: RedisServer | LocalCluster) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "API_TOKEN": TOKEN,
        "PUNCTUAL_LOCAL": "1",
        # Every SQS message visible at once; the dispatcher waits on the fake clock.
        "DISPATCH_LEAD_SECONDS": "900",
    }


@pytest.fixture(scope="session")
def moto_sqs() -> Iterator[Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # Lambda always has one
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def aws(moto_sqs: Any) -> Iterator[Any]:
    """moto's SQS with fresh, empty dispatch and fan-out queues."""
    names = (DEFAULT_DISPATCH_QUEUE, DEFAULT_FANOUT_QUEUE)
    urls = [moto_sqs.create_queue(QueueName=name)["QueueUrl"] for name in names]
    yield moto_sqs
    for url in urls:
        moto_sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver()
    yield rcv
    rcv.stop()


class RecordingPublisher:
    """Keeps every published event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def publish(self, event: str, agent_id: str | None, data: dict[str, Any], audience: Any = None) -> None:
        with self._lock:
            self.events.append((event, data))

    def agent_events(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(e, d) for e, d in self.events if e != "scheduler:status"]

    def status_changed(self, audience: Any = None) -> None:
        with self._lock:
            self.events.append(("scheduler:status", {}))

    def progress(self, agent_id: str, run_id: str, data: dict[str, Any]) -> None:
        self.publish("agent:progress", agent_id, data)  # every report: the recorder coalesces none

    def run_ended(self, agent_id: str, run_id: str) -> None:
        pass

    def names(self, agent_id: str | None = None) -> list[str]:
        with self._lock:
            return [
                e
                for e, d in self.events
                if (agent_id is None and e != "scheduler:status")
                or (agent_id and d.get("agentId") == agent_id)
            ]


@dataclass
class Harness:
    client: Client
    svc: Services
    sqs: Any
    clock: FakeClock
    redis: redis.Redis
    published: RecordingPublisher

    def configure(self, **changes: Any) -> None:
        """Rebuild the services with changed settings (same clock, Redis, SQS, recorder)."""
        settings = replace(self.svc.settings, **changes)
        self.svc = Services.build(
            settings, clock=self.clock, redis_client=self.redis, sqs_client=self.sqs, publisher=self.published
        )
        services.install(self.svc)

    @property
    def queue_url(self) -> str:
        return self.svc.dispatch_queue.url

    @property
    def fanout_url(self) -> str:
        return str(self.sqs.get_queue_url(QueueName=self.svc.settings.fanout_queue_name)["QueueUrl"])

    def post(self, body: Any, headers: dict[str, str] | None = None) -> Any:
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.http.post("/messages", headers=AUTH if headers is None else headers, body=raw)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.http.get(path, headers=AUTH if headers is None else headers)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.http.delete(path, headers=AUTH if headers is None else headers)

    def message_key(self, message_id: str) -> str:
        """The Redis key of a message (without flow control) in its home shard."""
        return self.svc.message_store.shards.home(message_id).message(message_id)

    def ids_in_one_shard(self, prefix: str, count: int) -> list[str]:
        """`count` message ids (prefix0, prefix1, ...: the first that qualify) whose home is one
        shard, for a test of what one shard's batches do."""
        shards = self.svc.message_store.shards
        by_shard: dict[str, list[str]] = {}
        for i in range(count * shards.current.count * 4):
            ids = by_shard.setdefault(shards.home(f"{prefix}{i}").shard, [])
            ids.append(f"{prefix}{i}")
            if len(ids) == count:
                return ids
        raise AssertionError("no shard got enough ids")

    def sweep_body(self, due_ms: int, message_id: str) -> str:
        """The SQS body of the sweep of one due second in the shard of a message (no flow control)."""
        shard = self.svc.message_store.shards.home(message_id).shard
        return json.dumps({"kind": "sweep", "due": due_ms, **({"shard": shard} if shard else {})})

    def read_message(self, message_id: str) -> dict[str, Any]:
        """GET /messages/{id}, which must answer 200: the message as the API shows it."""
        status, body = self.api("GET", f"/messages/{message_id}")
        assert status == 200, body
        return dict(body)

    def api(self, method: str, path: str, body: Any = None, token: str = TOKEN) -> tuple[int, Any]:
        """Call the agent API; returns (status, parsed JSON body)."""
        raw = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        response = self.client.http.request(method, path, headers=headers, body=raw or b"")
        return response.status_code, json.loads(response.body) if response.body else None

    def tick(self) -> dict[str, Any]:
        event = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        return self.client.lambda_.invoke("tick", event).payload

    def receive(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Every SQS message visible now in the dispatch queue, or the one given (removed from it)."""
        url = queue_url or self.queue_url
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            msgs = got.get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            out.extend(msgs)

    def dispatch(self, bodies: list[str], handler: str = "dispatch") -> None:
        """Invoke an SQS handler (`dispatch`, or `fanout`) with these message bodies."""
        queue = {"dispatch": DEFAULT_DISPATCH_QUEUE, "fanout": DEFAULT_FANOUT_QUEUE}[handler]
        event = self.client.events.generate_sqs_event(message_bodies=bodies, queue_name=queue)
        # Chalice's test client gives every Lambda 3 s; the dispatcher hands on what it could not
        # finish in the time left, so give it the deployed timeout (.chalice/config.json).
        context = LambdaContext(handler, memory_size=512, max_runtime_ms=LAMBDA_TIMEOUT_MS)
        app_module.app.handler_map[handler](event, context)

    def run_and_report(self, agent_id: str, agent: Receiver, progress: dict[str, Any]) -> None:
        """Run an agent by hand and, as its endpoint (`agent`, answering 202), report `progress`
        on the run, then its completion."""
        self.api("POST", f"/api/agents/{agent_id}/run")
        self.drain(hold_timeouts=True)
        request = agent.wait_for(1)[0].json()
        assert isinstance(request, dict)
        base = f"/api/agents/{agent_id}/runs/{request['runId']}"
        self.api("POST", f"{base}/progress", progress, token=request["callbackToken"])
        self.api("POST", f"{base}/complete", {}, token=request["callbackToken"])

    def drain(self, rounds: int = 20, hold_timeouts: bool = False) -> int:
        """Feed SQS to the dispatch handler until the queue is empty; returns messages fed.

        With hold_timeouts, runs' timeout checks stay in the queue: feeding one
        would move the fake clock to the run's deadline.
        """
        fed = 0
        held: list[str] = []
        for _ in range(rounds):
            msgs = self.receive()
            if not msgs:
                break
            for m in msgs:
                if hold_timeouts and json.loads(m["Body"]).get("kind") == "timeout":
                    held.append(m["Body"])
                else:
                    self.dispatch([m["Body"]])
                    fed += 1
        for body in held:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return fed


@pytest.fixture
def harness(env: dict[str, str], aws: Any, clock: FakeClock, redis_client: redis.Redis) -> Iterator[Harness]:
    settings = Settings.from_env(env)
    published = RecordingPublisher()
    svc = Services.build(
        settings, clock=clock, redis_client=redis_client, sqs_client=aws, publisher=published
    )
    services.install(svc)
    with Client(app_module.app) as client:
        yield Harness(client, svc, aws, clock, redis_client, published)
    services.install(None)


def message(id: str, schedule_to: str, url: str, payload: Any = None) -> dict[str, Any]:
    return {
        "id": id,
        "scheduleTo": schedule_to,
        "payload": {"hello": id} if payload is None else payload,
        "webhookUrl": url,
    }
