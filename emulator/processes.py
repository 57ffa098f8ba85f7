"""Child processes of the local stack: started together, stopped together, never orphaned."""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import log_lines

log = logging.getLogger("punctual.stack")

_PR_SET_PDEATHSIG = 1


def configure_logging() -> None:
    """The emulator's own loggers in LOG_FORMAT (emulator/log_lines.py), at the app's level.
    botocore's INFO lines ("Found credentials in environment variables.", one per new client)
    stay off at any level."""
    # Read as Powertools reads them.
    name = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    level = logging.getLevelNamesMapping().get(name.strip().upper(), logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(log_lines.formatter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the supervisor is killed outright
    # (SIGKILL, OOM), the kernel sends the child SIGTERM, so nothing is left behind.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own cleanup still runs
        pass


@dataclass(frozen=True)
class Backoff:
    """When a process that died is started again, as Lambda starts a new container.

    At once after a process that had run `healthy_seconds`; after one that died sooner, `first`
    seconds, doubled for each such death in a row up to `cap`: a process that dies as it starts
    is retried, not spun.
    """

    first: float = 1.0
    cap: float = 30.0
    healthy_seconds: float = 5.0

    def delay(self, quick_deaths: int) -> float:
        """The wait before the next start, after `quick_deaths` deaths in a row that came soon
        after their start (0: the last run was healthy)."""
        if quick_deaths == 0:
            return 0.0
        return min(self.cap, self.first * 2 ** (quick_deaths - 1))


@dataclass
class Spec:
    """How to start a child again."""

    argv: tuple[str, ...]
    env: dict[str, str]
    output: Path | None
    pass_fds: tuple[int, ...]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    spec: Spec | None = None  # None: its death stops the stack
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None  # dead, to be started again then


class Supervisor:
    """Starts children in their own sessions (a terminal's Ctrl-C reaches only us) and
    stops them in reverse order of start, so the workers go before Redis does. A child started
    with `restart=True` that dies is started again (see Backoff); any other that dies stops the
    stack. `clock`: monotonic seconds (tests pass their own)."""

    def __init__(self, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic) -> None:
        self._children: list[Child] = []
        self._kept: list[socket.socket] = []
        self._backoff = backoff
        self._clock = clock

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], output: Path | None = None,
        pass_fds: Sequence[int] = (), restart: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start a child; its output goes to ours, or to the file `output` (noisy servers).
        `pass_fds`: descriptors it inherits (the listening sockets the supervisor bound; for a
        child that is restarted, kept open here with `keep`)."""
        spec = Spec(tuple(argv), dict(env), output, tuple(pass_fds))
        child = Child(name, _start(spec), spec if restart else None, self._clock())
        self._children.append(child)
        log.debug("started %s (pid %d)", name, child.process.pid)
        return child.process

    def keep(self, *sockets: socket.socket) -> None:
        """Hold listening sockets until the stack stops, for the children started again on them."""
        self._kept += sockets

    @property
    def children(self) -> tuple[Child, ...]:
        return tuple(self._children)

    def exited(self) -> Child | None:
        """A child that has stopped on its own, if any."""
        return next((c for c in self._children if c.process.poll() is not None), None)

    def why_exited(self) -> str | None:
        """While starting: the line to stop with when a child has already exited."""
        gone = self.exited()
        if gone is None:
            return None
        return f"{gone.name} exited with status {gone.process.returncode} while the stack was starting"

    def heal(self) -> Child | None:
        """Start again each restartable child that has died, once its backoff has passed; returns
        a child that died and is not restarted (the stack stops), if any."""
        now = self._clock()
        for child in self._children:
            if child.process.poll() is None:
                continue
            if child.spec is None:
                return child
            if child.restart_at is None:
                ran = now - child.started_at
                child.quick_deaths = child.quick_deaths + 1 if ran < self._backoff.healthy_seconds else 0
                delay = self._backoff.delay(child.quick_deaths)
                child.restart_at = now + delay
                log.warning("%s (pid %d) %s after %.1f s; starting a new one%s", child.name,
                            child.process.pid, _exit_status(child.process.returncode), ran,
                            f" in {delay:.0f} s" if delay else "")
            if now >= child.restart_at:  # set just above, or on an earlier call
                child.process = _start(child.spec)
                child.started_at, child.restart_at = now, None
                log.warning("started a new %s (pid %d)", child.name, child.process.pid)
        return None

    def stop_all(self, grace_seconds: float = 15.0) -> None:
        """Stop the children in reverse order of start; processes of one kind stop together.

        Several worker processes told one at a time would leave the others delivering while the
        first drains, and Redis must outlive them all.
        """
        for _, group in itertools.groupby(reversed(self._children), key=lambda child: child.name):
            _stop(list(group), grace_seconds)
        self._children.clear()
        for sock in self._kept:
            sock.close()
        self._kept.clear()


def _start(spec: Spec) -> subprocess.Popen[bytes]:
    sink = None
    if spec.output is not None:
        spec.output.parent.mkdir(parents=True, exist_ok=True)
        sink = spec.output.open("ab")
    process = subprocess.Popen(
        list(spec.argv),
        env=spec.env,
        stdout=sink,
        stderr=sink,
        start_new_session=True,
        pass_fds=spec.pass_fds,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    if sink is not None:
        sink.close()  # the child holds its own descriptor
    return process


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _stop(children: list[Child], grace_seconds: float) -> None:
    running = [child for child in children if child.process.poll() is None]
    for child in running:
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in running:
        _wait_or_kill(child, deadline, grace_seconds)


def _wait_or_kill(child: Child, deadline: float, grace_seconds: float) -> None:
    process = child.process
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        log.warning("%s did not stop within %.0f s; killing it", child.name, grace_seconds)
        process.kill()
        process.wait()
