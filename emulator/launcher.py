"""The real local stack (`make run`'s entry point) in a child process, on free ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from .banner import END, UP
from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-token"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc, so it also sees grandchildren)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Stack:
    """`make run`'s stack with the data folder and .env file in `data_dir`, on free ports.

    `settings` are set in its environment; a setting given as None is taken out of it.
    """

    def __init__(self, data_dir: Path, **settings: str | None) -> None:
        self.data_dir = data_dir
        self.api_port = free_port()
        self.ws_port = free_port()
        # AWS_ENDPOINT_URL is kept: `make test-localstack` points it at a LocalStack, where each
        # stack gets a queue of its own. Without it, each stack embeds a fresh moto server.
        # Without REDIS_* settings, each stack starts a private redis-server in data_dir.
        inherited = {"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "API_TOKEN", "PUNCTUAL_ENV_FILE"}
        env = {k: v for k, v in os.environ.items() if k not in inherited}
        if env.get("AWS_ENDPOINT_URL"):
            run = uuid.uuid4().hex[:8]
            env["DISPATCH_QUEUE_NAME"] = f"punctual-e2e-{run}"
            env["FANOUT_QUEUE_NAME"] = f"punctual-e2e-fanout-{run}"
        env.update(
            API_HOST="127.0.0.1",
            API_PORT=str(self.api_port),
            WS_HOST="127.0.0.1",
            WS_PORT=str(self.ws_port),
            PUNCTUAL_DATA_DIR=str(data_dir),
            PUNCTUAL_ENV_FILE=str(data_dir / ".env"),  # never the repository's own .env
            API_TOKEN=TOKEN,
            WEBHOOK_SECRET=SECRET,
            TICK_INTERVAL_SECONDS="1",
            QUEUE_GRACE_SECONDS="10",
            API_PROCESSES="1",
            LOG_LEVEL="WARNING",
        )
        for name, value in settings.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "stack.log"
        self.banner = ""  # what the last start printed once every part answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/api"

    @property
    def exported(self) -> dict[str, str]:
        """The variables of the banner's `export` line (API, WS, TOKEN)."""
        line = next(x for x in self.banner.splitlines() if x.strip().startswith("export "))
        return dict(pair.split("=", 1) for pair in line.split()[1:])

    @property
    def redis_url(self) -> str:
        """The Redis the stack uses, as its banner says."""
        match = re.search(r"^  Redis +(\S+)", self.banner, re.MULTILINE)
        assert match, self.banner
        return match.group(1)

    def start(self) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "emulator.stack"], cwd=ROOT, env=self.env, stdout=sink, stderr=sink
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited early:\n{self.log.read_text()}")
            output = self.log.read_bytes()[offset:].decode(errors="replace")
            if END in output:  # every part answers, and the banner is out
                self.banner = output[output.index(UP):output.index(END) + len(END)]
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the stack did not come up:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def call(self, method: str, path: str, body: Any = None, token: str = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.url + path, json=body, headers=headers, timeout=10)

    def wait_until(self, path: str, predicate: Any, timeout: float = 30.0) -> Any:
        """Poll GET `path` until predicate(json) holds; returns that JSON."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            response = self.call("GET", path)
            last = response.json() if response.content else None
            if response.status_code == 200 and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"GET {path} never matched; last answer: {last}")
