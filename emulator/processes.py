"""Child processes of the local stack: started together, stopped together, never orphaned."""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("punctual.stack")

_PR_SET_PDEATHSIG = 1


def configure_logging() -> None:
    """Plain lines for the emulator's own loggers, at the app's level. botocore's INFO lines ("Found
    credentials in environment variables.", one per new client) stay off at any level."""
    # Read as Powertools reads them.
    name = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    level = logging.getLevelNamesMapping().get(name.strip().upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the supervisor is killed outright
    # (SIGKILL, OOM), the kernel sends the child SIGTERM, so nothing is left behind.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own cleanup still runs
        pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


class Supervisor:
    """Starts children in their own sessions (a terminal's Ctrl-C reaches only us) and
    stops them in reverse order of start, so the workers go before Redis does."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], output: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[bytes]:
        """Start a child; its output goes to ours, or to the file `output` (noisy servers).
        `pass_fds`: descriptors it inherits (the listening sockets the supervisor bound)."""
        sink = None
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            sink = output.open("ab")
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        if sink is not None:
            sink.close()  # the child holds its own descriptor
        self._children.append(Child(name, process))
        log.debug("started %s (pid %d)", name, process.pid)
        return process

    def exited(self) -> Child | None:
        """A child that has stopped on its own, if any."""
        return next((c for c in self._children if c.process.poll() is not None), None)

    def why_exited(self) -> str | None:
        """While starting: the line to stop with when a child has already exited."""
        gone = self.exited()
        if gone is None:
            return None
        return f"{gone.name} exited with status {gone.process.returncode} while the stack was starting"

    def stop_all(self, grace_seconds: float = 15.0) -> None:
        """Stop the children in reverse order of start; processes of one kind stop together.

        Several worker processes told one at a time would leave the others delivering while the
        first drains, and Redis must outlive them all.
        """
        for _, group in itertools.groupby(reversed(self._children), key=lambda child: child.name):
            _stop(list(group), grace_seconds)
        self._children.clear()


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
