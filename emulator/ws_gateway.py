"""A local stand-in for an API Gateway WebSocket API and its management API.

`chalice local` serves no WebSocket routes and LocalStack serves WebSocket APIs
only in its paid tier, so this gateway invokes the app's very own
`ws_connect` / `ws_message` / `ws_disconnect` handlers with API Gateway's event
shape, and answers the management API (`POST|GET|DELETE /@connections/{id}`)
that the app's production code calls through boto3. One port serves both;
clients connect at `/{stage}` (`ws://127.0.0.1:8001/api?token=…`), as on AWS.
Like API Gateway, it closes a connection (1001 "going away") after 10 minutes
without a frame from the client or 2 hours in all (WS_IDLE_TIMEOUT_SECONDS,
WS_MAX_CONNECTION_SECONDS), and runs $disconnect for it; it closes one that sends a
binary frame (1003) or a message over API Gateway's 128 KB (1009). As on API Gateway, a connection
exists for the management API only once its $connect handler has returned: a post before that is
refused as gone (410), so a handler cannot send from inside $connect here either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .lambda_runtime import LambdaContext
from .log_lines import use_local_format
from .processes import configure_logging

log = logging.getLogger("punctual.ws")

Handler = Callable[[dict[str, Any], Any], Any]

# API Gateway's WebSocket limits: a connection with no message from the client
# for 10 minutes, or open for 2 hours, is closed. The app's Redis records of a
# connection expire on the same terms (chalicelib/live_store.py), so a gateway
# that kept sockets open longer would leave subscribers that silently get nothing.
IDLE_TIMEOUT_SECONDS = 600.0
MAX_CONNECTION_SECONDS = 7200.0
GOING_AWAY = 1001
# API Gateway takes text frames only: a client that sends a binary frame is disconnected with
# 1003 (unsupported data).
UNSUPPORTED_DATA = 1003
# post_to_connection does not wait for the client to read. Here a send waits once the socket's
# buffer is full, so a client that stops reading would hold every publisher that sends to it
# (the dispatcher, an agent's /progress call); it is cut off instead, and answered as gone.
SEND_TIMEOUT_SECONDS = 2.0
# API Gateway's largest WebSocket message (a larger one closes the connection).
MAX_MESSAGE_BYTES = 128 * 1024


def _limit(value: float | None, env_name: str, default: float) -> float:
    if value is not None:
        return value
    raw = os.environ.get(env_name)
    return float(raw) if raw else default


@dataclass
class Connection:
    id: str
    socket: web.WebSocketResponse
    connected_at: int
    source_ip: str
    user_agent: str
    last_active: float = field(default_factory=time.time)
    expiring: bool = False  # the watchdog is closing it
    transport: asyncio.BaseTransport | None = None  # to cut off a client that stopped reading
    # Set once the handshake's answer is out: a post between $connect's return and then waits.
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class WsGateway:
    def __init__(
        self,
        connect: Handler,
        message: Handler,
        disconnect: Handler,
        *,
        stage: str = "api",
        api_id: str = "local",
        domain: str = "127.0.0.1",
        workers: int = 16,
        idle_timeout_seconds: float | None = None,
        max_connection_seconds: float | None = None,
        send_timeout_seconds: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self._handlers = {"$connect": connect, "$default": message, "$disconnect": disconnect}
        self._idle_timeout = _limit(idle_timeout_seconds, "WS_IDLE_TIMEOUT_SECONDS", IDLE_TIMEOUT_SECONDS)
        self._max_duration = _limit(
            max_connection_seconds, "WS_MAX_CONNECTION_SECONDS", MAX_CONNECTION_SECONDS
        )
        self._send_timeout = send_timeout_seconds
        self._stage = stage
        self._api_id = api_id
        self._domain = domain
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ws-lambda")
        self._connections: dict[str, Connection] = {}

    def app(self) -> web.Application:
        app = web.Application()
        # Clients connect at /{stage}, as to API Gateway's wss://{id}.execute-api.{region}.amazonaws.com/{stage};
        # a URL that works here only would fail there.
        app.router.add_get(f"/{self._stage}", self._socket)
        for prefix in ("", f"/{self._stage}"):
            app.router.add_post(prefix + "/@connections/{id}", self._post)
            app.router.add_get(prefix + "/@connections/{id}", self._info)
            app.router.add_delete(prefix + "/@connections/{id}", self._delete)
        app.on_shutdown.append(self._close_all)
        return app

    # -- the API Gateway event shape -------------------------------------------------

    def _event(self, route: str, conn_id: str, connected_at: int, **extra: Any) -> dict[str, Any]:
        event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
        return {
            "requestContext": {
                "routeKey": route,
                "eventType": event_type,
                "connectionId": conn_id,
                "connectedAt": connected_at,
                "domainName": self._domain,
                "stage": self._stage,
                "apiId": self._api_id,
                "requestId": uuid.uuid4().hex,
                "messageDirection": "IN",
                "requestTimeEpoch": int(time.time() * 1000),
            },
            "isBase64Encoded": False,
            **extra,
        }

    async def _invoke(self, route: str, event: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        handler = self._handlers[route]
        try:
            context = LambdaContext("punctual-ws", 30_000)
            return await loop.run_in_executor(self._pool, handler, event, context)
        except Exception:
            log.exception("%s handler failed", route)
            return {"statusCode": 500}

    # -- client side ---------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        conn_id = secrets.token_urlsafe(12)
        connected_at = int(time.time() * 1000)
        query = dict(request.query) or None
        answer = await self._invoke(
            "$connect",
            self._event(
                "$connect", conn_id, connected_at, headers=dict(request.headers), queryStringParameters=query
            ),
        )
        status = int((answer or {}).get("statusCode", 200))
        if status >= 300:
            # API Gateway refuses the handshake itself with the handler's status.
            return web.Response(status=status, text=(answer or {}).get("body") or "Forbidden")
        socket = web.WebSocketResponse(heartbeat=30, autoping=True, max_msg_size=MAX_MESSAGE_BYTES)
        conn = Connection(
            conn_id,
            socket,
            connected_at,
            request.remote or "127.0.0.1",
            request.headers.get("User-Agent", ""),
            transport=request.transport,
        )
        # $connect has returned: from now on the connection takes posts, as on API Gateway.
        self._connections[conn_id] = conn
        try:
            await socket.prepare(request)
        except Exception:  # the client went before its handshake's answer: $disconnect, as on AWS
            self._connections.pop(conn_id, None)
            conn.ready.set()
            await self._invoke("$disconnect", self._event("$disconnect", conn_id, connected_at))
            raise
        conn.ready.set()
        watchdog = asyncio.create_task(self._watchdog(conn))
        # The reader only reads; a worker invokes $default for each frame in order.
        # A frame therefore counts as activity when it arrives, not when the
        # handler of the one before has returned: a slow handler (a cold boto3
        # client, a busy Redis) must not get a client that keeps sending closed as idle.
        inbox: asyncio.Queue[str | None] = asyncio.Queue()
        worker = asyncio.create_task(self._deliver(conn_id, connected_at, inbox))
        try:
            async for frame in socket:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    # Only the client's own frames keep it alive, as on API Gateway;
                    # the protocol-level pings and pongs do not.
                    conn.last_active = time.time()
                if frame.type == WSMsgType.TEXT:
                    inbox.put_nowait(frame.data)
                elif frame.type == WSMsgType.BINARY:
                    await socket.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported")
                    break
                elif frame.type == WSMsgType.ERROR:
                    break
        finally:
            # Reached on a close frame, on a client that vanished (reset, heartbeat
            # timeout) and when the watchdog closed the socket.
            if not conn.expiring:
                watchdog.cancel()
            # A watchdog that is closing the socket is let finish its close handshake.
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            self._connections.pop(conn_id, None)
            # Frames already received are handled before $disconnect, as they came.
            inbox.put_nowait(None)
            await worker
            await self._invoke("$disconnect", self._event("$disconnect", conn_id, connected_at))
        return socket

    async def _deliver(self, conn_id: str, connected_at: int, inbox: asyncio.Queue[str | None]) -> None:
        while (body := await inbox.get()) is not None:
            await self._invoke("$default", self._event("$default", conn_id, connected_at, body=body))

    async def _watchdog(self, conn: Connection) -> None:
        """Close the socket once it has been idle or open for too long, as API Gateway does."""
        ends_at = conn.connected_at / 1000 + self._max_duration
        while not conn.socket.closed:
            # last_active moves while we sleep: wake at the earlier limit and look again.
            deadline = min(conn.last_active + self._idle_timeout, ends_at)
            remaining = deadline - time.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            reason = "idle timeout" if deadline < ends_at else "maximum connection duration"
            log.info("closing %s: %s", conn.id, reason)
            conn.expiring = True
            try:
                await conn.socket.close(code=GOING_AWAY, message=b"going away")
            except Exception:  # the socket's own handler still runs $disconnect when it ends
                log.exception("closing %s failed", conn.id)
            return

    # -- the management API ------------------------------------------------------------

    def _find(self, request: web.Request) -> Connection | None:
        return self._connections.get(request.match_info["id"])

    @staticmethod
    def _gone() -> web.Response:
        return web.json_response(
            {"message": "GoneException"}, status=410, headers={"x-amzn-ErrorType": "GoneException"}
        )

    async def _post(self, request: web.Request) -> web.Response:
        conn = self._find(request)
        if conn is None:
            return self._gone()
        data = await request.read()
        try:
            async with asyncio.timeout(self._send_timeout):  # no task per send, as wait_for makes
                await conn.ready.wait()
                if conn.socket.closed:
                    return self._gone()
                await conn.socket.send_str(data.decode())
        except TimeoutError:
            log.info("cutting off %s: it has not read its frames for %.1f s", conn.id, self._send_timeout)
            if conn.transport is not None:
                conn.transport.abort()  # its reader ends, and $disconnect runs
            return self._gone()
        except (ConnectionError, RuntimeError):
            return self._gone()
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        conn = self._find(request)
        if conn is None:
            return self._gone()
        return web.json_response(
            {
                "connectedAt": _iso(conn.connected_at / 1000),
                "lastActiveAt": _iso(conn.last_active),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        conn = self._find(request)
        if conn is None:
            return self._gone()
        await conn.ready.wait()
        await conn.socket.close(code=1000, message=b"closed by the server")
        return web.Response(status=204)

    async def _close_all(self, app: web.Application) -> None:
        for conn in list(self._connections.values()):
            await conn.socket.close(code=GOING_AWAY, message=b"gateway shutting down")


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000Z"


def serve(listener: socket.socket, stage: str = "api") -> None:
    """Run the gateway in the foreground on `listener` with the app's own handlers.

    WS_IDLE_TIMEOUT_SECONDS and WS_MAX_CONNECTION_SECONDS change the connection limits.
    """
    from app import app as chalice_app  # the very same handlers Lambda runs

    host, port = listener.getsockname()[:2]
    handlers = {name: chalice_app.handler_map[name] for name in ("ws_connect", "ws_message", "ws_disconnect")}
    gateway = WsGateway(
        handlers["ws_connect"],
        handlers["ws_message"],
        handlers["ws_disconnect"],
        stage=stage,
        domain=f"{host}:{port}",
    )
    web.run_app(gateway.app(), sock=listener, print=None, handle_signals=True, access_log=None,
                loop=_event_loop())


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop where it installs (not on Windows): it cuts the gateway's CPU per management API
    call, which a large fan-out makes one of per subscriber, on the same cores as the stack it
    serves (README, Benchmarks). On AWS, API Gateway does this work."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description="The local API Gateway WebSocket API.")
    parser.add_argument("--listen-fd", type=int, help="a listening socket to serve (the stack binds WS_PORT)")
    args = parser.parse_args()
    configure_logging()
    use_local_format()
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        port = int(os.environ.get("WS_PORT", "8001"))
        listener = socket.create_server((os.environ.get("WS_HOST", "127.0.0.1"), port))
    serve(listener, os.environ.get("WS_STAGE", "api"))


if __name__ == "__main__":
    main()
