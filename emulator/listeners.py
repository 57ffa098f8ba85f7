"""The stack's ports, bound by the supervisor before anything starts, or refused.

A port that another program listens on is refused, never shared. The API processes used to bind
API_PORT themselves with SO_REUSEPORT, so a second stack bound beside the first and the kernel
split requests between the two. Now the supervisor binds each port once, without SO_REUSEPORT,
and hands the socket to the children that serve it (`pass_fds`): the check and the bind are one
step, and the API processes share the one socket. SO_REUSEADDR is set, as servers do, so a
restart binds at once while the last run's connections linger in TIME_WAIT; on Linux it never
lets a second socket listen on a port that has a listener.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How far above a busy port to look for a free one to suggest.
SUGGESTION_RANGE = 100


@dataclass(frozen=True)
class Port:
    """A port the stack needs, and the setting that moves it."""

    variable: str  # API_PORT, WS_PORT, MOTO_PORT, REDIS_PORT
    host: str
    number: int  # 0: any free port
    listen: bool = True  # False: only held, for a server that binds it itself (redis-server)


class PortsInUse(Exception):
    """Some of the ports are taken; the message is the one line the user reads."""

    def __init__(self, busy: Sequence[Port], suggestions: Sequence[int]) -> None:
        numbers = ", ".join(str(port.number) for port in busy)
        settings = " ".join(f"{port.variable}={n}" for port, n in zip(busy, suggestions, strict=True))
        verb = "is" if len(busy) == 1 else "are"
        super().__init__(f"port{'s' if len(busy) > 1 else ''} {numbers} {verb} in use; set {settings}")
        self.busy = tuple(busy)


def bind(port: Port) -> socket.socket:
    """The port bound (and listening, unless `port.listen` is False), or OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((port.host, port.number))
        if port.listen:
            sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def bind_all(ports: Sequence[Port]) -> dict[str, socket.socket]:
    """Every port bound, by its variable; or none, and PortsInUse naming each busy one."""
    bound: dict[str, socket.socket] = {}
    busy: list[Port] = []
    for port in ports:
        try:
            bound[port.variable] = bind(port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                close(bound.values())
                raise
            busy.append(port)
    if busy:
        taken = {port.number for port in ports} | {s.getsockname()[1] for s in bound.values()}
        close(bound.values())
        raise PortsInUse(busy, _suggest(busy, taken))
    return bound


def close(sockets: Iterable[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _suggest(busy: Sequence[Port], taken: set[int]) -> list[int]:
    """A free port above each busy one, none of them wanted by another setting."""
    suggestions: list[int] = []
    for port in busy:
        above = range(port.number + 1, min(port.number + SUGGESTION_RANGE, 65536))
        found = next((n for n in above if n not in taken and _free(port.host, n)), None)
        if found is None:
            with bind(Port(port.variable, port.host, 0)) as sock:
                found = int(sock.getsockname()[1])
        taken.add(found)
        suggestions.append(found)
    return suggestions


def _free(host: str, number: int) -> bool:
    try:
        bind(Port("", host, number)).close()
    except OSError:
        return False
    return True
