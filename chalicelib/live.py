"""Live events over API Gateway WebSocket routes: the protocol, and the fan-out to subscribers."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import threads
from .agent_store import AgentStore
from .clock import Clock
from .config import Settings
from .dispatch_queue import DispatchQueue
from .errors import BadRequest, Unauthorized
from .events import Audience, best_effort
from .ids import check_id
from .live_store import SCHEDULER_TOPIC, LiveStore, Protocol, Refused, Target, agent_topic
from .management_api import FANOUT_THREADS, ManagementApi, management_endpoint
from .socketio_routes import SocketIoRoutes, event_frame, open_frame, speaks_socketio
from .timeutil import format_instant
from .ws_access import WsAccess, connections_cap

__all__ = ["LiveHandlers", "ManagementApi", "WsPublisher", "management_endpoint"]

log = logging.getLogger(__name__)

# scheduler:status goes out at most once per window, plus one trailing send.
STATUS_WINDOW_MS = 250
# A run's agent:progress likewise, per run; the report held last is the one the trailing send sends.
PROGRESS_WINDOW_MS = 250
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
# The Engine.IO open packet is posted from the fan-out queue, once $connect has returned; a post
# that comes before API Gateway has the connection ready is refused as gone, and tried again
# after these pauses (ms).
OPEN_RETRY_MS = (50, 100, 200, 400, 800, 1600)

# One frame per protocol: each connection gets the one its protocol reads.
Frames = Mapping[str, str]


def frames_of(message: Mapping[str, Any]) -> dict[str, str]:
    """An event as each protocol sends it: {"event", "data"}, or Socket.IO's `42["event",data]`."""
    return {Protocol.JSON: json.dumps(message),
            Protocol.SOCKETIO: event_frame(message["event"], message["data"])}


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

    def send_to(self, targets: list[Target], message: Mapping[str, Any], endpoint: str | None = None) -> None:
        """Send an event to every connection in parallel and wait, so one run's events stay in order."""
        if targets:
            self.send_frames(targets, frames_of(message), endpoint)

    def send_frames(
        self, targets: list[Target], frames: Frames, endpoint: str | None = None, wait: bool = True
    ) -> None:
        """Send each target the frame of its protocol (none: skipped); `wait` for shared-out chunks."""
        endpoint = endpoint or management_endpoint(self._settings)
        targets = [t for t in targets if t[1] in frames]
        if endpoint is None or not targets:
            return
        here, fanout_id, shared = self._share_out(targets, frames, endpoint)
        self._send_here(endpoint, here, frames)
        if shared and wait:
            sent = self._live.wait_fanout(fanout_id, shared, FANOUT_WAIT_SECONDS)
            if sent < shared:
                log.warning("fan-out %s: %d of %d shared-out chunks not sent within %.0f s",
                            fanout_id, shared - sent, shared, FANOUT_WAIT_SECONDS)

    def send_frame(self, connection_id: str, frame: str, endpoint: str | None) -> None:
        """One frame to one connection, now (a reply)."""
        endpoint = endpoint or management_endpoint(self._settings)
        if endpoint is not None and not self._api.send(endpoint, connection_id, frame.encode()):
            self._live.disconnect(connection_id)

    def close(self, connection_id: str, endpoint: str | None) -> None:
        endpoint = endpoint or management_endpoint(self._settings)
        if endpoint is not None:
            self._api.close(endpoint, connection_id)

    def open_later(self, connection_id: str, endpoint: str | None) -> None:
        """Have the Engine.IO open packet sent once $connect has returned (see send_open)."""
        endpoint = endpoint or management_endpoint(self._settings)
        if endpoint is None:
            return
        body = json.dumps({"kind": "socketio-open", "connection": connection_id, "endpoint": endpoint})
        if self._fanout_queue.send_now([body]):
            log.warning("could not queue the open packet of %s; the tick closes it", connection_id)

    def send_open(self, body: Mapping[str, Any]) -> None:
        """Post a connection's open packet, trying again while its $connect may not have returned."""
        connection_id, endpoint = str(body["connection"]), str(body["endpoint"])
        data = open_frame(connection_id).encode()
        for pause_ms in (*OPEN_RETRY_MS, None):
            if self._api.send(endpoint, connection_id, data):
                return
            if pause_ms is None or self._live.connected_at(connection_id) is None:
                break  # gone for good ($disconnect ran, or it never became ready)
            self._clock.sleep_until(self._clock.now_ms() + pause_ms)
        log.info("Socket.IO connection %s was gone before its open packet", connection_id)
        self._live.disconnect(connection_id)

    def send_shared(self, body: Mapping[str, Any]) -> None:
        """A chunk another invocation shared out: send it, and tell that publisher."""
        try:
            targets = [(str(c), Protocol(p)) for c, p in body["connections"]]
            self._send_here(str(body["endpoint"]), targets, body["frames"])
        finally:
            self._live.fanout_sent(str(body["id"]))

    def _share_out(
        self, targets: list[Target], frames: Frames, endpoint: str
    ) -> tuple[list[Target], str, int]:
        """Hand all chunks but the first to the fan-out queue; returns the connections left to
        send here (the first chunk, and any SQS did not take), the fan-out's id and how many
        chunks went out."""
        chunks = [targets[i:i + FANOUT_CHUNK] for i in range(0, len(targets), FANOUT_CHUNK)]
        if len(chunks) == 1:
            return targets, "", 0
        fanout_id = secrets.token_hex(8)
        used = {p for _, p in targets}
        shared_frames = {p: f for p, f in frames.items() if p in used}
        bodies = [
            json.dumps({"kind": "fanout", "id": fanout_id, "endpoint": endpoint, "connections": chunk,
                        "frames": shared_frames})
            for chunk in chunks[1:]
        ]
        if max(len(body) for body in bodies) > MAX_SHARED_BODY:
            return targets, "", 0
        failed = set(self._fanout_queue.send_now(bodies))
        here = chunks[0] + [t for i, chunk in enumerate(chunks[1:]) if i in failed for t in chunk]
        return here, fanout_id, len(bodies) - len(failed)

    def _send_here(self, endpoint: str, targets: list[Target], frames: Frames) -> None:
        data = {p: f.encode() for p, f in frames.items()}  # once, not once per connection
        sent = _FANOUT.map(lambda t: self._api.send(endpoint, t[0], data[t[1]]), targets)
        gone = [cid for (cid, _), ok in zip(targets, sent, strict=True) if not ok]
        for cid in gone:
            self._live.disconnect(cid)

    def publish(
        self, event: str, agent_id: str | None, data: dict[str, Any], audience: Audience | None = None
    ) -> None:
        topic = agent_topic(agent_id) if agent_id else SCHEDULER_TOPIC
        if audience is not None and agent_id:
            targets = self._live.alive(topic, audience.agent)
        else:
            targets = self._live.subscribers(topic)
        self.send_to(targets, {"event": event, "data": data})

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

    def progress(self, agent_id: str, run_id: str, data: dict[str, Any]) -> None:
        """agent:progress, coalesced per run: at most one per window; within it the last report
        wins, and goes out when the window ends (a trailing send through the dispatch queue)."""
        if not self._live.has_subscribers(agent_topic(agent_id)):
            return
        now = self._clock.now_ms()
        verdict = self._live.offer_progress(run_id, json.dumps(data), now, PROGRESS_WINDOW_MS)
        if verdict == "send":
            self.publish("agent:progress", agent_id, data)
        elif verdict != "held":
            body = json.dumps({"kind": "progress", "agent": agent_id, "run": run_id, "due": verdict})
            if self._queue.send_now([body]):
                # No trailing send would come: what is held goes now rather than at the run's end.
                self._send_held(agent_id, run_id, ended=False)

    def send_trailing_progress(self, body: Mapping[str, Any]) -> None:
        agent_id, run_id = str(body["agent"]), str(body["run"])
        best_effort("trailing agent:progress", lambda: self._send_held(agent_id, run_id, ended=False))

    def run_ended(self, agent_id: str, run_id: str) -> None:
        self._send_held(agent_id, run_id, ended=True)

    def _send_held(self, agent_id: str, run_id: str, ended: bool) -> None:
        held = self._live.take_progress(run_id, self._clock.now_ms(), ended)
        if held is not None:
            self.publish("agent:progress", agent_id, json.loads(held))

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

    def send_status(self, targets: list[Target] | None = None, endpoint: str | None = None) -> None:
        if targets is None:
            targets = self._live.subscribers(SCHEDULER_TOPIC)
        if targets:
            self.send_to(targets, self.status_message(), endpoint)


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
        self.access = WsAccess(live, clock, settings)
        self.socketio = SocketIoRoutes(live, publisher, self.answer, clock, self.access)

    def connect(
        self, connection_id: str, query: Mapping[str, str] | None, headers: Mapping[str, str] | None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        if speaks_socketio(query):
            return self.socketio.connect(connection_id, query or {}, endpoint)
        try:
            token_id = self.access.admit(query or {}, headers or {})
        except Unauthorized as exc:
            return {"statusCode": 401, "body": json.dumps({"error": exc.message})}
        cap = self.access.caps.connections_per_token
        if not self._live.connect(connection_id, self._clock.now_ms(), Protocol.JSON, token_id, cap):
            # No frame can be sent from $connect: the refused handshake carries the error.
            return {"statusCode": 429, "body": json.dumps({"error": connections_cap(cap)})}
        return {"statusCode": 200}

    def disconnect(self, connection_id: str) -> None:
        self._live.disconnect(connection_id)

    def close_rotated(self) -> int:
        """The tick's share: close every connection opened with a token that is no longer the API
        token (rotated away); how many were."""
        closed = 0
        for stale in self._live.token_ids() - {self.access.current}:
            for connection_id in self._live.connections_of(stale):
                self._publisher.close(connection_id, None)
                self._live.disconnect(connection_id)  # $disconnect does it too, if it still comes
                closed += 1
            self._live.forget_token(stale)
        if closed:
            log.info("closed %d WebSocket connection(s) opened with a rotated-away API token", closed)
        return closed

    def message(self, connection_id: str, body: str | None, endpoint: str | None) -> None:
        now = self._clock.now_ms()
        record = self._live.record(connection_id)
        if record is not None and self.access.rotated(record.token_id):
            self._close_rotated(connection_id, record.protocol, endpoint)
            return
        if record is not None:
            self._live.touch(connection_id, now, record.connected_ms)
            if record.protocol is Protocol.SOCKETIO:
                self.socketio.message(connection_id, record.authenticated, body, endpoint)
                return
        elif (body or "")[:1].isdigit():
            # An Engine.IO packet on a connection whose record expired: it would have to
            # authenticate again, which only a new connection does.
            self._publisher.close(connection_id, endpoint)
            return
        else:
            # Its record expired while API Gateway kept it open: it authenticated on $connect, with
            # a token that is taken to be the current one. Already open, it is not refused a cap.
            self._live.connect(connection_id, now, Protocol.JSON, self.access.current)
        reply = self._parse_and_answer(connection_id, body, now)
        self._publisher.send_to([(connection_id, Protocol.JSON)], reply, endpoint)
        if reply["event"] == "subscribed" and reply["data"].get("topic") == "scheduler-updates":
            self._publisher.send_status([(connection_id, Protocol.JSON)], endpoint)

    def _close_rotated(self, connection_id: str, protocol: Protocol, endpoint: str | None) -> None:
        """Its token was rotated away: tell it why in its protocol, then close it."""
        error = _error("the API token this connection was opened with has been rotated; connect again")
        self._publisher.send_to([(connection_id, protocol)], error, endpoint)
        self._publisher.close(connection_id, endpoint)
        self._live.disconnect(connection_id)

    def _parse_and_answer(self, connection_id: str, body: str | None, now: int) -> dict[str, Any]:
        try:
            frame = json.loads(body or "")
        except (ValueError, RecursionError):
            return _error('frame is not JSON; send e.g. {"action": "ping"}')
        if not isinstance(frame, dict):
            return _error("frame must be a JSON object with an 'action'")
        return self.answer(connection_id, frame, now)

    def answer(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        """The reply to one request, whichever protocol brought it."""
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
        refused = self._subscribe(connection_id, agent_topic(agent_id), now)
        return refused or {"event": "subscribed", "data": {"topic": "agent-updates", "agentId": agent_id}}

    def _unsubscribe_agent(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        agent_id = frame.get("agentId")
        if not isinstance(agent_id, str) or not agent_id:
            return _error("agentId is required: the agent whose updates to stop")
        if _could_be_id(agent_id):  # else it was never subscribed to
            self._live.unsubscribe(connection_id, agent_topic(agent_id))
        return {"event": "unsubscribed", "data": {"topic": "agent-updates", "agentId": agent_id}}

    def _subscribe_scheduler(self, connection_id: str, frame: dict[str, Any], now: int) -> dict[str, Any]:
        refused = self._subscribe(connection_id, SCHEDULER_TOPIC, now)
        return refused or {"event": "subscribed", "data": {"topic": "scheduler-updates"}}

    def _subscribe(self, connection_id: str, topic: str, now: int) -> dict[str, Any] | None:
        """Subscribe; None, or the error frame that answers a refusal."""
        cap = self.access.caps.subscriptions_per_connection
        if self._live.subscribe(connection_id, topic, now, cap) is not Refused.CAP:
            return None
        return _error(f"subscription cap reached: a connection may hold {cap} subscriptions "
                      "(WS_MAX_SUBSCRIPTIONS_PER_CONNECTION); unsubscribe from one first")

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
