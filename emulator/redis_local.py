"""The Redis the local stack uses: a private redis-server unless a shared one is named.

The stack used to take whatever answered on 127.0.0.1:6379, strangers' keys and all: `GET
/messages` listed their messages and the tick delivered them. Now, unless REDIS_URL, REDIS_HOST
or REDIS_PORT is set (in the environment or .env), it starts a redis-server of its own that
listens only on a unix socket under the data folder (.local/redis/redis.sock, readable by this
user alone), so nothing else reaches it and it collides with nothing. Its append-only file lies
beside it: what was accepted survives a restart. A socket path longer than the OS allows (a
deep checkout) falls back to a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from chalicelib.keys import slot_head
from chalicelib.redis_client import connect, in_cluster_mode

from .banner import shown
from .listeners import Port
from .processes import Supervisor

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The settings that name a shared Redis, in the order they are read.
EXPLICIT = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")
# sun_path's size less its closing NUL: 108 bytes on Linux, 104 on macOS and the BSDs.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
# Counting keys stops after this long (a shared Redis may hold millions); the banner says so.
COUNT_SECONDS = 3.0


@dataclass(frozen=True)
class RedisPlan:
    """Where the stack's Redis is, or will be once started."""

    url: str
    private: bool  # this stack starts it
    folder: Path  # a private one's data and log
    chosen_by: str | None = None  # the setting that named it
    socket_path: Path | None = None  # a private one on a unix socket
    port: Port | None = None  # a private one on TCP: checked and held with the stack's other ports

    def on_port(self, number: int) -> RedisPlan:
        """A private TCP one whose port (0: any free one) is now known."""
        assert self.port is not None
        return replace(self, url=f"redis://{self.port.host}:{number}/0",
                       port=replace(self.port, number=number))

    def cli(self) -> str | None:
        """How to reach a private one with redis-cli."""
        if self.socket_path is not None:
            return f"redis-cli -s {shown(self.socket_path)}"
        if self.private and self.port is not None:
            return f"redis-cli -h {self.port.host} -p {self.port.number}"
        return None


@dataclass(frozen=True)
class KeyCount:
    count: int
    complete: bool  # False: counting stopped after COUNT_SECONDS

    def text(self, prefix: str) -> str:
        figure = f"{self.count:,}" if self.complete else f"over {self.count:,}"
        return f"{figure} key{'' if self.count == 1 else 's'} under {prefix}:"


def answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def plan(env: Mapping[str, str], data_dir: Path) -> RedisPlan:
    """The Redis to use; SystemExit (one line) when the one named cannot be used."""
    folder = data_dir / "redis"
    chosen_by = next((name for name in EXPLICIT if env.get(name, "").strip()), None)
    if chosen_by == "REDIS_URL":
        url = env["REDIS_URL"].strip()
        if not _wait_until_answers(url, 10):
            raise SystemExit(f"REDIS_URL={redacted(url)} does not answer")
        return RedisPlan(url, private=False, folder=folder, chosen_by=chosen_by)
    if chosen_by is not None:
        return _named(env, folder, chosen_by)
    return _private(folder)


def _named(env: Mapping[str, str], folder: Path, chosen_by: str) -> RedisPlan:
    """REDIS_HOST/REDIS_PORT: the Redis there; when nothing answers on this machine, a private
    redis-server on that port."""
    host = env.get("REDIS_HOST", "").strip() or "127.0.0.1"
    raw_port = env.get("REDIS_PORT", "").strip() or "6379"
    if not raw_port.isdigit():
        raise SystemExit(f"REDIS_PORT must be a port number, got {raw_port!r}")
    db = int(env.get("REDIS_DB", "").strip() or 0)
    url = f"redis://{host}:{raw_port}/{db}"
    if answers(url):
        return RedisPlan(url, private=False, folder=folder, chosen_by=chosen_by)
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"Redis at {host}:{raw_port} ({chosen_by}) does not answer")
    return RedisPlan(url, private=True, folder=folder, chosen_by=chosen_by,
                     port=Port("REDIS_PORT", host, int(raw_port), listen=False))


def _private(folder: Path) -> RedisPlan:
    path = (folder / "redis.sock").resolve()
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return RedisPlan("", private=True, folder=folder,
                         port=Port("REDIS_PORT", "127.0.0.1", 0, listen=False))
    url = f"unix://{path}?db=0"
    if path.exists() and answers(url):
        # redis-server would take the socket path over, and two servers would share one
        # append-only file.
        raise SystemExit(f"the private Redis in {shown(folder)} is in use by another stack started "
                         "from this folder; stop that one, or set PUNCTUAL_DATA_DIR to another folder")
    return RedisPlan(url, private=True, folder=folder, socket_path=path)


def start(chosen: RedisPlan, supervisor: Supervisor, held: socket.socket | None = None) -> None:
    """Start a private redis-server (`held`: its TCP port, let go of just before); a shared
    one is only checked to answer."""
    if not chosen.private:
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (`make setup` installs it)")
    chosen.folder.mkdir(parents=True, exist_ok=True)
    folder = chosen.folder.resolve()
    if chosen.socket_path is not None:
        listen = ["--port", "0", "--unixsocket", str(chosen.socket_path), "--unixsocketperm", "700"]
    else:
        assert chosen.port is not None
        listen = ["--port", str(chosen.port.number), "--bind", chosen.port.host]
    if held is not None:
        held.close()
    # Append-only file, flushed every second: what was accepted survives a restart.
    supervisor.spawn(
        "redis",
        [binary, *listen, "--dir", str(folder), "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--logfile", str(folder / "redis.log")],
        env={},
    )
    if not _wait_until_answers(chosen.url, 15, supervisor):
        raise SystemExit(f"the private redis-server did not start; see {shown(folder / 'redis.log')}")


def key_head(url: str, prefix: str) -> str:
    """What the app's keys start with on this Redis: `{prefix}` on a cluster (keys.py)."""
    return slot_head(prefix, cluster=in_cluster_mode(url))


def count_keys(url: str, head: str, seconds: float = COUNT_SECONDS) -> KeyCount:
    """How many keys lie under `head:`, or under a message shard's head (keys.shard_head: on a
    cluster `{punctual:3.0~1417}:`, on a plain Redis already under `punctual:`). SCAN, on every
    primary of a cluster: a large Redis is not blocked as KEYS would."""
    patterns = [_glob_escape(head) + ":*"]
    if head.startswith("{") and head.endswith("}"):
        patterns.append(_glob_escape(head[:-1]) + ":*}:*")
    client = connect(url).client
    deadline = time.monotonic() + seconds
    count = 0
    try:
        for pattern in patterns:
            for _ in client.scan_iter(match=pattern, count=1000):
                count += 1
                if count % 1000 == 0 and time.monotonic() > deadline:
                    return KeyCount(count, complete=False)
    finally:
        client.close()
    return KeyCount(count, complete=True)


def redacted(url: str) -> str:
    """The URL without its password (it is printed)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _wait_until_answers(url: str, seconds: float, supervisor: Supervisor | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return True
        if supervisor is not None and supervisor.exited() is not None:
            return False
        time.sleep(0.05)
    return False
