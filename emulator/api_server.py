"""The REST API, served by Chalice's own local gateway: `python -m emulator.api_server`.

Several of these processes can share API_PORT (SO_REUSEPORT; the kernel spreads connections),
which is how the local stack serves more than one core's worth of requests.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

from chalice.config import Config
from chalice.local import ChaliceRequestHandler, ThreadedHTTPServer, create_local_server

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


def main() -> None:
    configure_logging()
    from app import app

    host = os.environ.get("API_HOST", "127.0.0.1")
    port = int(os.environ.get("API_PORT", "8000"))
    config = Config.create(chalice_stage="local", app_name="punctual", lambda_timeout=60,
                           lambda_memory_size=512)
    ThreadedHTTPServer.allow_reuse_port = True
    server = create_local_server(app, config, host, port)
    server.server.RequestHandlerClass = functools.partial(QuietHandler, app_object=app, config=config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server.server_close()


if __name__ == "__main__":
    main()
