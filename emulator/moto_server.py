"""moto's server, as `python -m moto.server` runs it, with Nagle's algorithm off.

werkzeug writes a response's headers and body separately; on a keep-alive connection (boto3
keeps them) Nagle's algorithm and the client's delayed ACK then add 40 ms to every SQS call.
`python -m emulator.moto_server FD` serves the listening socket the supervisor bound.
"""

from __future__ import annotations

import signal
import socket
import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class NoDelayHandler(MotoRequestHandler):
    disable_nagle_algorithm = True


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    host, port = listener.getsockname()[:2]
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=NoDelayHandler,
                         fd=listener.fileno())
    listener.close()  # werkzeug serves a duplicate of it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
