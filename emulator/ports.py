"""Ports on this machine: a free one to bind, and waiting until a server on one answers."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, seconds: float, failed: Callable[[], str | None]) -> int | None:
    """The HTTP status of the first answer from `url` (any status: the server is up), or None
    after `seconds`. `failed` says why waiting is pointless (the server's process exited)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            # The supervisor bound the port before the server started: the connection waits in
            # the backlog until the server accepts it, and this waits with it (a retry would
            # leave the first connection queued, to be answered after its client has gone).
            with urllib.request.urlopen(url, timeout=left) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            reason = failed()
            if reason is not None:
                raise SystemExit(reason) from None
            time.sleep(0.05)
    return None
