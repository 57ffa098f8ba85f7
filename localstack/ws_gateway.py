"""A local stand-in for an API Gateway WebSocket API and its management API.

`chalice local` serves no WebSocket routes and LocalStack serves WebSocket APIs
only in its paid tier, so this gateway invokes the app's very own
`ws_connect` / `ws_message` / `ws_disconnect` handlers with API Gateway's event
shape, and answers the management API (`POST|GET|DELETE /@connections/{id}`)
that the app's production code calls through boto3. One port serves both.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .lambda_runtime import LambdaContext

log = logging.getLogger("punctual.ws")

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class Connection:
    id: str
    socket: web.WebSocketResponse
    connected_at: int
    source_ip: str
    user_agent: str
    last_active: float = field(default_factory=time.time)


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
    ) -> None:
        self._handlers = {"$connect": connect, "$default": message, "$disconnect": disconnect}
        self._stage = stage
        self._api_id = api_id
        self._domain = domain
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ws-lambda")
        self._connections: dict[str, Connection] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._socket)
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
        socket = web.WebSocketResponse(heartbeat=30, autoping=True)
        await socket.prepare(request)
        conn = Connection(
            conn_id,
            socket,
            connected_at,
            request.remote or "127.0.0.1",
            request.headers.get("User-Agent", ""),
        )
        self._connections[conn_id] = conn
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    conn.last_active = time.time()
                    await self._invoke(
                        "$default", self._event("$default", conn_id, connected_at, body=frame.data)
                    )
                elif frame.type == WSMsgType.ERROR:
                    break
        finally:
            # Reached on a close frame and on a client that vanished (reset, heartbeat timeout).
            self._connections.pop(conn_id, None)
            await self._invoke("$disconnect", self._event("$disconnect", conn_id, connected_at))
        return socket

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
        if conn is None or conn.socket.closed:
            return self._gone()
        data = await request.read()
        try:
            await conn.socket.send_str(data.decode())
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
        await conn.socket.close(code=1000, message=b"closed by the server")
        return web.Response(status=204)

    async def _close_all(self, app: web.Application) -> None:
        for conn in list(self._connections.values()):
            await conn.socket.close(code=1001, message=b"gateway shutting down")


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000Z"


def serve(host: str, port: int, stage: str = "api") -> None:
    """Run the gateway in the foreground with the app's own handlers."""
    from app import app as chalice_app  # the very same handlers Lambda runs

    handlers = {name: chalice_app.handler_map[name] for name in ("ws_connect", "ws_message", "ws_disconnect")}
    gateway = WsGateway(
        handlers["ws_connect"],
        handlers["ws_message"],
        handlers["ws_disconnect"],
        stage=stage,
        domain=f"{host}:{port}",
    )
    web.run_app(gateway.app(), host=host, port=port, print=None, handle_signals=True, access_log=None)


if __name__ == "__main__":
    import os

    logging.basicConfig(level=logging.INFO)
    serve(
        os.environ.get("WS_HOST", "127.0.0.1"),
        int(os.environ.get("WS_PORT", "8001")),
        os.environ.get("WS_STAGE", "api"),
    )
