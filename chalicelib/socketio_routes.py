"""Socket.IO v4 (Engine.IO protocol 4) over the same API Gateway WebSocket routes.

The agent spec's own client (`io(url, {auth: {token}})`, `emit('subscribe-agent-updates', id)`,
`on('agent:started', data => …)`) speaks this. A connection chooses it at $connect: socket.io-client
sends `EIO=4` in the query. Packets are encoded and decoded with python-engineio's and
python-socketio's own packet classes; no server of theirs runs (API Gateway holds the socket, and
each frame is one Lambda invocation), so this module is the server's half of the protocol:

- the Engine.IO open packet, sent from outside the $connect invocation (the connection exists only
  once $connect returns), through the fan-out queue;
- the Socket.IO CONNECT packet, which carries the token (`auth: {token}`): `40{"sid"}` or
  CONNECT_ERROR `44{"message"}` and a close. Until a valid one, anything else closes the connection;
- events (`42["subscribe-agent-updates","agent-123"]`), with acknowledgements when asked;
- the heartbeat: the per-minute tick pings every connection (`2`) and closes those that never sent
  a valid CONNECT; the client's pong (`3`) is one cheap invocation that also keeps API Gateway's
  idle timer and the connection's Redis records alive.

Bad input gets a defined answer, never a traceback: an undecodable Engine.IO or Socket.IO packet,
a binary one, an event before CONNECT, an ACK or CONNECT_ERROR from the client close the connection;
an unknown event is answered with an error (its ack, else an `error` event).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from engineio import packet as eio
from socketio import packet as sio

from .clock import Clock
from .errors import Unauthorized
from .live_store import HEARTBEAT_TOPIC, LiveStore, Protocol, Refused
from .ws_access import WsAccess, connections_cap

if TYPE_CHECKING:
    from .live import WsPublisher

log = logging.getLogger(__name__)

ENGINE_IO_VERSION = "4"
# The tick sends the pings, once a minute. socket.io-client gives up on a server whose ping is
# later than pingInterval + pingTimeout, so a tick that comes late, or not at all once, is
# tolerated; the client's pongs keep API Gateway's 10-minute idle timer from closing it.
PING_INTERVAL_MS = 60_000
PING_TIMEOUT_MS = 60_000
# API Gateway's largest WebSocket message.
MAX_PAYLOAD = 128 * 1024
# A connection that has not sent a valid CONNECT packet this long after $connect is closed by the
# next tick (Socket.IO servers' own connectTimeout).
CONNECT_TIMEOUT_MS = 45_000
PING_FRAME = str(eio.PING)
ROOT = "/"


def speaks_socketio(query: Mapping[str, str] | None) -> bool:
    return bool(query) and "EIO" in (query or {})


def open_frame(sid: str) -> str:
    handshake = {"sid": sid, "upgrades": [], "pingInterval": PING_INTERVAL_MS,
                 "pingTimeout": PING_TIMEOUT_MS, "maxPayload": MAX_PAYLOAD}
    return str(eio.Packet(eio.OPEN, handshake).encode())


def _frame(packet: sio.Packet) -> str:
    return str(eio.Packet(eio.MESSAGE, packet.encode()).encode())


def event_frame(event: str, data: Any) -> str:
    """`42["agent:started",{…}]`: the spec's payload is the listener's one argument."""
    return _frame(sio.Packet(sio.EVENT, [event, data], binary=False))


class Closed(Exception):
    """The connection is to be closed; the message says why (logged, not sent)."""


class SocketIoRoutes:
    """What the $connect and $default routes do for a Socket.IO connection."""

    def __init__(
        self,
        live: LiveStore,
        publisher: WsPublisher,
        answer: Callable[[str, dict[str, Any], int], dict[str, Any]],
        clock: Clock,
        access: WsAccess,
    ) -> None:
        self._live = live
        self._publisher = publisher
        self._answer = answer  # the JSON protocol's handling of one request (live.LiveHandlers)
        self._clock = clock
        self._access = access

    def connect(self, connection_id: str, query: Mapping[str, str], endpoint: str | None) -> dict[str, Any]:
        if query.get("EIO") != ENGINE_IO_VERSION:
            message = (f"Engine.IO protocol {query.get('EIO')!r} is not served: "
                       "use socket.io-client 3.x or 4.x")
            return {"statusCode": 400, "body": json.dumps({"error": message})}
        now = self._clock.now_ms()
        self._live.connect(connection_id, now, Protocol.SOCKETIO)
        self._live.subscribe(connection_id, HEARTBEAT_TOPIC, now)
        self._publisher.open_later(connection_id, endpoint)
        return {"statusCode": 200}

    def message(
        self, connection_id: str, authenticated: bool, body: str | None, endpoint: str | None
    ) -> None:
        try:
            self._handle(connection_id, authenticated, body or "", endpoint)
        except Closed as reason:
            log.info("closing Socket.IO connection %s: %s", connection_id, reason)
            self._publisher.close(connection_id, endpoint)

    def _handle(self, connection_id: str, authenticated: bool, body: str, endpoint: str | None) -> None:
        try:
            packet = eio.Packet(encoded_packet=body)
        except (ValueError, IndexError, RecursionError) as exc:
            raise Closed(f"not an Engine.IO packet ({exc.__class__.__name__})") from None
        if packet.packet_type == eio.PONG:
            return  # the caller has counted it as activity already
        if packet.packet_type == eio.CLOSE:
            raise Closed("the client closed it")
        if packet.packet_type != eio.MESSAGE or not isinstance(packet.data, str) or not packet.data:
            raise Closed(f"Engine.IO packet type {packet.packet_type!r} is not taken from a client")
        try:
            message = sio.Packet(encoded_packet=packet.data)
        except (ValueError, IndexError, TypeError, RecursionError) as exc:
            raise Closed(f"not a Socket.IO packet ({exc.__class__.__name__})") from None
        if message.packet_type == sio.CONNECT:
            self._connect_packet(connection_id, message, endpoint)
        elif not authenticated:
            raise Closed("a packet before a valid CONNECT")
        elif message.packet_type == sio.EVENT and message.namespace in (None, ROOT):
            self._event(connection_id, message, endpoint)
        else:  # DISCONNECT, or what only a server sends, binary events, other namespaces
            raise Closed(f"Socket.IO packet type {message.packet_type!r} ends the connection")

    def _connect_packet(self, connection_id: str, packet: sio.Packet, endpoint: str | None) -> None:
        if packet.namespace not in (None, ROOT):
            # The URL's path is the namespace to socket.io-client: the stage goes in `path`.
            refusal = {"message": f"unknown namespace {packet.namespace!r}: connect to '/' and give the "
                                  "stage as the path, io(origin, {path: '/api', addTrailingSlash: false})"}
            self._send(connection_id, sio.Packet(sio.CONNECT_ERROR, refusal, namespace=packet.namespace),
                       endpoint)
            return
        auth = packet.data if isinstance(packet.data, dict) else {}
        try:
            token_id = self._token_of(auth)
        except Unauthorized as exc:
            self._send(connection_id, sio.Packet(sio.CONNECT_ERROR, {"message": exc.message}), endpoint)
            raise Closed("CONNECT without a valid token or ticket") from None
        # A repeated CONNECT is answered as the first: socket.io-client sends one per connection,
        # and one more changes nothing (nor is it counted twice).
        cap = self._access.caps.connections_per_token
        if self._live.authenticated(connection_id, token_id, self._clock.now_ms(), cap) is Refused.CAP:
            refusal = {"message": connections_cap(cap)}
            self._send(connection_id, sio.Packet(sio.CONNECT_ERROR, refusal), endpoint)
            raise Closed("its token holds its cap of connections")
        self._send(connection_id, sio.Packet(sio.CONNECT, {"sid": connection_id}), endpoint)

    def _token_of(self, auth: dict[str, Any]) -> str:
        """The token id a CONNECT packet's auth carries: a ticket's (`{ticket}`), or the API
        token's (`{token}`)."""
        ticket = auth.get("ticket")
        if isinstance(ticket, str) and ticket:
            return self._access.redeem(ticket)
        if not self._access.valid(auth.get("token")):
            raise Unauthorized("missing or invalid token: connect with io(url, {auth: {token}})")
        return self._access.current

    def _event(self, connection_id: str, packet: sio.Packet, endpoint: str | None) -> None:
        args = packet.data if isinstance(packet.data, list) else []
        if not args or not isinstance(args[0], str):
            reply = {"event": "error", "data": {"error": "an event needs a name"}}
        else:
            reply = self._answer(connection_id, _request(args[0], args[1:]), self._clock.now_ms())
        error = reply["data"].get("error") if reply["event"] == "error" else None
        if packet.id is not None:
            ack = {"success": False, "error": error} if error else {"success": True, "data": reply["data"]}
            self._send(connection_id, sio.Packet(sio.ACK, [ack], id=packet.id, binary=False), endpoint)
        elif error:
            self._send(connection_id, sio.Packet(sio.EVENT, ["error", {"error": error}], binary=False),
                       endpoint)
        if reply["event"] == "subscribed" and reply["data"].get("topic") == "scheduler-updates":
            self._publisher.send_status([(connection_id, Protocol.SOCKETIO)], endpoint)

    def _send(self, connection_id: str, packet: sio.Packet, endpoint: str | None) -> None:
        self._publisher.send_frame(connection_id, _frame(packet), endpoint)

    def heartbeat(self) -> None:
        """The tick's share: ping every authenticated connection, close those that have waited too
        long for their CONNECT packet."""
        now = self._clock.now_ms()
        pinged, stale = [], []
        for connection_id, record in self._live.heartbeat_members():
            if record.authenticated:
                pinged.append((connection_id, Protocol.SOCKETIO))
            elif now - record.connected_ms >= CONNECT_TIMEOUT_MS:
                stale.append(connection_id)
        # Pings need no order among themselves: the tick does not wait for shared-out chunks.
        self._publisher.send_frames(pinged, {Protocol.SOCKETIO: PING_FRAME}, wait=False)
        for connection_id in stale:
            log.info("closing Socket.IO connection %s: no valid CONNECT within %d s", connection_id,
                     CONNECT_TIMEOUT_MS // 1000)
            self._publisher.close(connection_id, None)


def _request(event: str, args: list[Any]) -> dict[str, Any]:
    """An emitted event as the JSON protocol's request: `emit('subscribe-agent-updates', id)`, or
    an object with `agentId` as the one argument."""
    request: dict[str, Any] = {"action": event}
    if args and isinstance(args[0], dict):
        request = {**args[0], "action": event}
    elif args:
        request["agentId"] = args[0]
    return request
