"""The REST API, served by Chalice's own local gateway: `python -m emulator.api_server --listen-fd N`.

The supervisor binds API_PORT once and every API process serves `accept` on the socket it
inherits (emulator/listeners.py), which is how the local stack serves more than one core's
worth of requests without letting another program share the port.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    ThreadedHTTPServer,
)

from .log_lines import use_local_format
from .processes import configure_logging


class QuietHandler(ChaliceRequestHandler):
    """Chalice's handler without a stderr line per request (the app logs requests itself)."""

    # Chalice writes the headers and the body separately; with Nagle's algorithm on, a
    # keep-alive client's delayed ACK then holds every response back by 40 ms.
    disable_nagle_algorithm = True

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method Chalice's handler has no do_<METHOD> for (TRACE, QUERY, …)
        # with a 501 page; API Gateway answers a method a route does not serve with a 4xx, and so
        # does Chalice's gateway (405) when it gets the request.
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class InheritedSocketServer(ThreadedHTTPServer):
    """Chalice's threaded server on a listening socket bound by the supervisor."""

    def __init__(self, listener: socket.socket, handler: Any) -> None:
        super().__init__(listener.getsockname(), handler, bind_and_activate=False)
        self.socket.close()  # the one socketserver made; the inherited one is served instead
        self.socket = listener
        self.server_name, self.server_port = listener.getsockname()[:2]
        # Every API process waits on this socket and all wake for a connection: the ones that
        # lose the race get EAGAIN and go back to waiting, instead of blocking in accept.
        listener.setblocking(False)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        connection.setblocking(True)  # on BSD and macOS it inherits the listener's O_NONBLOCK
        return connection, address


def local_server(app: Chalice, config: Config, listener: socket.socket) -> LocalDevServer:
    """What chalice.local.create_local_server builds, on the inherited socket."""
    # As create_local_server does: the app reads current_request from a thread-local.
    CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
    app.__class__ = CustomLocalChalice
    host, port = listener.getsockname()[:2]
    return LocalDevServer(app, config, host, port, handler_cls=QuietHandler,
                          server_cls=lambda _address, handler: InheritedSocketServer(listener, handler))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True, help="the listening socket to serve")
    args = parser.parse_args()
    configure_logging()
    use_local_format()
    from app import app

    config = Config.create(chalice_stage="local", app_name="punctual", lambda_timeout=60,
                           lambda_memory_size=512)
    server = local_server(app, config, socket.socket(fileno=args.listen_fd))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server.server_close()


if __name__ == "__main__":
    main()
