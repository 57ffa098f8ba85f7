"""Live events over API Gateway WebSocket routes: the protocol, and the fan-out to subscribers."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import boto3.session
import botocore
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from . import threads
from .agent_store import AgentStore
from .clock import Clock
from .config import Settings
from .dispatch_queue import DispatchQueue
from .errors import BadRequest
from .events import Audience, best_effort
from .ids import check_id
from .live_store import SCHEDULER_TOPIC, LiveStore, agent_topic
from .timeutil import format_instant

log = logging.getLogger(__name__)

# scheduler:status goes out at most once per window, plus one trailing send.
STATUS_WINDOW_MS = 250
FANOUT_THREADS = 32
_FANOUT = ThreadPoolExecutor(max_workers=FANOUT_THREADS, thread_name_prefix="ws-fanout")
# A fan-out to more connections than this is shared out: the publisher sends the first chunk and
# hands the others through the fan-out queue to other invocations (other Lambda containers), then
# waits for them, so a run's events still reach each subscriber in order. One invocation's sends
# are bound by its one interpreter (every post_to_connection costs botocore CPU), so that queue's
# event source takes one chunk per invocation: in batches, the chunks of one event arrived
# together in one container and went out one after another.
FANOUT_CHUNK = 100
# How long a publisher waits for its shared-out chunks before it goes on regardless (events are
# best-effort; a chunk that no dispatcher took in time is still sent when one does).
FANOUT_WAIT_SECONDS = 5.0
# A shared-out chunk's SQS body stays well under SQS's 256 KB; a larger event is sent here.
MAX_SHARED_BODY = 200_000
# A fan-out is one post_to_connection per subscriber, so botocore's per-call CPU is what a
# large one costs. Two settings cut it without changing the request: a fixed User-Agent (else
# botocore rebuilds its default one from some twenty components on every call) and no
# client-side parameter validation (the parameters are always a connection id from our own
# records and bytes we just encoded).
_USER_AGENT = f"punctual Boto3/{boto3.__version__} Botocore/{botocore.__version__}"


def management_endpoint(
    settings: Settings, domain: str | None = None, stage: str | None = None
) -> str | None:
    """Where post_to_connection goes: configured, else as AWS derives it."""
    if settings.ws_management_endpoint:
        return settings.ws_management_endpoint
    if settings.ws_api_id:
        return f"https://{settings.ws_api_id}.execute-api.{settings.aws_region}.amazonaws.com/{settings.ws_stage}"
    if domain and stage:
        return f"https://{domain}/{stage}"
    return None


class ManagementApi:
    """post_to_connection through boto3; one client per endpoint."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is not None:
            return client
        # The first fan-out asks from up to 32 threads at once. boto3's default
        # session is not thread-safe, so each client comes from a session of its
        # own, made under the lock, and only one is made per endpoint.
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = boto3.session.Session().client(
                    "apigatewaymanagementapi",
                    endpoint_url=endpoint,
                    region_name=self._settings.aws_region,
                    config=BotoConfig(
                        # One kept-alive connection per fan-out thread: none waits for another's.
                        max_pool_connections=FANOUT_THREADS,
                        retries={"max_attempts": 2},
                        user_agent=_USER_AGENT,
                        parameter_validation=False,
                    ),
                )
                self._clients[endpoint] = client
        return client

    def send(self, endpoint: str, connection_id: str, data: bytes) -> bool:
        """Send one encoded frame; False when the connection is gone."""
        try:
            self.client(endpoint).post_to_connection(ConnectionId=connection_id, Data=data)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                return False
            log.warning("post_to_connection %s failed: %s", connection_id, exc)
            return True
        except BotoCoreError as exc:
            log.warning("post_to_connection %s failed: %s", connection_id, exc)
            return True


class WsPublisher:
    """Publishes run-state events to the subscribed WebSocket connections."""

    def __init__(
        self,
        live: LiveStore,
        agents: AgentStore,
        api: ManagementApi,
        queue: DispatchQueue,
        fanout_queue: DispatchQueue,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._live = live
        self._agents = agents
        self._api = api
        self._queue = queue
        self._fanout_queue = fanout_queue
        self._clock = clock
        self._settings = settings
        # Threads started now, at the container's start, are not started one by one by the
        # first large fan-out (see threads.prestart).
        threads.prestart(_FANOUT, FANOUT_THREADS)

    def send_to(
        self, connection_ids: list[str], message: Mapping[str, Any], endpoint: str | None = None
    ) -> None:
        """Send to every connection in parallel and wait, so one run's events stay in order."""
        endpoint = endpoint or management_endpoint(self._settings)
        if endpoint is None or not connection_ids:
            return
        here, fanout_id, shared = self._share_out(connection_ids, message, endpoint)
        self._send_here(endpoint, here, message)
        if shared:
            sent = self._live.wait_fanout(fanout_id, shared, FANOUT_WAIT_SECONDS)
            if sent < shared:
                log.warning("fan-out %s: %d of %d shared-out chunks not sent within %.0f s",
                            fanout_id, shared - sent, shared, FANOUT_WAIT_SECONDS)

    def send_shared(self, body: Mapping[str, Any]) -> None:
        """A chunk another invocation shared out: send it, and tell that publisher."""
        try:
            self._send_here(str(body["endpoint"]), [str(c) for c in body["connections"]], body["message"])
        finally:
            self._live.fanout_sent(str(body["id"]))

    def _share_out(
        self, connection_ids: list[str], message: Mapping[str, Any], endpoint: str
    ) -> tuple[list[str], str, int]:
        """Hand all chunks but the first to the fan-out queue; returns the connections left to
        send here (the first chunk, and any SQS did not take), the fan-out's id and how many
        chunks went out."""
        chunks = [connection_ids[i:i + FANOUT_CHUNK] for i in range(0, len(connection_ids), FANOUT_CHUNK)]
        if len(chunks) == 1:
            return connection_ids, "", 0
        fanout_id = secrets.token_hex(8)
        bodies = [
            json.dumps({"kind": "fanout", "id": fanout_id, "endpoint": endpoint, "connections": chunk,
                        "message": message})
            for chunk in chunks[1:]
        ]
        if max(len(body) for body in bodies) > MAX_SHARED_BODY:
            return connection_ids, "", 0
        failed = set(self._fanout_queue.send_now(bodies))
        here = chunks[0] + [c for i, chunk in enumerate(chunks[1:]) if i in failed for c in chunk]
        return here, fanout_id, len(bodies) - len(failed)

    def _send_here(self, endpoint: str, connection_ids: list[str], message: Mapping[str, Any]) -> None:
        data = json.dumps(message).encode()  # once, not once per connection
        gone = [
            cid
            for cid, ok in zip(
                connection_ids,
                _FANOUT.map(lambda c: self._api.send(endpoint, c, data), connection_ids),
                strict=True,
            )
            if not ok
        ]
        for cid in gone:
            self._live.disconnect(cid)

    def publish(
        self, event: str, agent_id: str | None, data: dict[str, Any], audience: Audience | None = None
    ) -> None:
        topic = agent_topic(agent_id) if agent_id else SCHEDULER_TOPIC
        if audience is not None and agent_id:
            connection_ids = self._live.alive(topic, audience.agent)
        else:
            connection_ids = self._live.subscribers(topic)
        self.send_to(connection_ids, {"event": event, "data": data})

    def status_changed(self, audience: Audience | None = None) -> None:
        if audience is not None:
            listening = audience.scheduler
        else:
            listening = self._live.has_subscribers(SCHEDULER_TOPIC)
        if not listening:
            return
        if self._live.throttle_status(STATUS_WINDOW_MS):
            self.send_status()
        elif self._live.claim_trailing_status(STATUS_WINDOW_MS * 8):
            # Changes inside the window are not lost: one send follows it.
            self._queue.send_control("status", due_ms=self._clock.now_ms() + STATUS_WINDOW_MS)

    def send_trailing_status(self) -> None:
        def send() -> None:
            self._live.release_trailing_status(STATUS_WINDOW_MS)
            self.send_status()

        # Best-effort as every publish is: a failure here must not fail the dispatch batch it came in.
        best_effort("trailing scheduler:status", send)

    def status_message(self) -> dict[str, Any]:
        stats = self._agents.scheduler_stats(self._settings.max_concurrent_agents, self._clock.now_ms())
        return {
            "event": "scheduler:status",
            "data": {"stats": stats, "timestamp": format_instant(self._clock.now_ms())},
        }

    def send_status(self, connection_ids: list[str] | None = None) -> None:
        if connection_ids is None:
            connection_ids = self._live.subscribers(SCHEDULER_TOPIC)
        if connection_ids:
            self.send_to(connection_ids, self.status_message())


class LiveHandlers:
    """What the $connect, $default and $disconnect routes do."""

    def __init__(
        self, live: LiveStore, agents: AgentStore, publisher: WsPublisher, clock: Clock, settings: Settings
    ) -> None:
        self._live = live
        self._agents = agents
        self._publisher = publisher
        self._clock = clock
        self._settings = settings

    def connect(
        self, connection_id: str, query: Mapping[str, str] | None, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        token = (query or {}).get("token") or ""
        if not token:
            lowered = {k.lower(): v for k, v in (headers or {}).items()}
            scheme, _, value = (lowered.get("authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
        expected = self._settings.api_token
        if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return {"statusCode": 401, "body": json.dumps({"error": "missing or invalid token"})}
        self._live.connect(connection_id, self._clock.now_ms())
        return {"statusCode": 200}

    def disconnect(self, connection_id: str) -> None:
        self._live.disconnect(connection_id)

    def message(self, connection_id: str, body: str | None, endpoint: str | None) -> None:
        now = self._clock.now_ms()
        if not self._live.touch(connection_id, now):
            # Its record expired while API Gateway kept it open: it authenticated on $connect.
            self._live.connect(connection_id, now)
        reply = self._answer(connection_id, body, now)
        self._publisher.send_to([connection_id], reply, endpoint)
        if reply["event"] == "subscribed" and reply["data"].get("topic") == "scheduler-updates":
            self._publisher.send_status([connection_id])

    def _answer(self, connection_id: str, body: str | None, now: int) -> dict[str, Any]:
        try:
            frame = json.loads(body or "")
        except (ValueError, RecursionError):
            return _error('frame is not JSON; send e.g. {"action": "ping"}')
        if not isinstance(frame, dict):
            return _error("frame must be a JSON object with an 'action'")
        action = frame.get("action")
        handler = self._actions().get(action) if isinstance(action, str) else None
        if handler is None:
            return _error(f"unknown action {_shown(action)}; use one of {', '.join(sorted(self._actions()))}")
        return handler(connection_id, frame, now)

    def _actions(self) -> dict[str, Callable[[str, dict[str, Any], int], dict[str, Any]]]:
        return {
            "subscribe-agent-updates": self._subscribe_agent,
            "unsubscribe-agent-updates": self._unsubscribe_agent,
            "subscribe-scheduler-updates": self._subscribe_scheduler,
            "unsubscribe-scheduler-updates": self._unsubscribe_scheduler,
            "ping": lambda cid, frame, now: {"event": "pong", "data": {"timestamp": format_instant(now)}},
        }

    def _subscribe_agent(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        agent_id = frame.get("agentId")
        if not isinstance(agent_id, str) or not agent_id:
            return _error("agentId is required: the agent whose updates to receive")
        if not _could_be_id(agent_id) or self._agents.find(agent_id) is None:
            return _error(f"agent {_shown(agent_id)} not found")
        self._live.subscribe(connection_id, agent_topic(agent_id), now)
        return {"event": "subscribed", "data": {"topic": "agent-updates", "agentId": agent_id}}

    def _unsubscribe_agent(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        agent_id = frame.get("agentId")
        if not isinstance(agent_id, str) or not agent_id:
            return _error("agentId is required: the agent whose updates to stop")
        if _could_be_id(agent_id):  # else it was never subscribed to
            self._live.unsubscribe(connection_id, agent_topic(agent_id))
        return {"event": "unsubscribed", "data": {"topic": "agent-updates", "agentId": agent_id}}

    def _subscribe_scheduler(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        self._live.subscribe(connection_id, SCHEDULER_TOPIC, now)
        return {"event": "subscribed", "data": {"topic": "scheduler-updates"}}

    def _unsubscribe_scheduler(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        self._live.unsubscribe(connection_id, SCHEDULER_TOPIC)
        return {"event": "unsubscribed", "data": {"topic": "scheduler-updates"}}


def _error(message: str) -> dict[str, Any]:
    return {"event": "error", "data": {"error": message}}


def _could_be_id(value: str) -> bool:
    """Whether an agent could have this id (ids.py); a lone surrogate, which JSON's escapes
    allow, could not even be looked up."""
    try:
        check_id(value)
    except BadRequest:
        return False
    return True


def _shown(value: object) -> str:
    """A client's value in an error message, cut short: repeated back whole, a frame near
    API Gateway's 128 KB limit would make a reply over it, which post_to_connection refuses."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
