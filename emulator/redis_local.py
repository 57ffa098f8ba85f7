"""Find the Redis the stack should use, or start a private one that keeps its data."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from .processes import Supervisor

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def wait_until_answers(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return True
        time.sleep(0.05)
    return False


def ensure_redis(env: Mapping[str, str], data_dir: Path, supervisor: Supervisor) -> str:
    """The Redis URL to use: REDIS_URL as given (it must answer), else REDIS_HOST:REDIS_PORT,
    where a private redis-server is started when nothing answers there."""
    explicit = env.get("REDIS_URL", "").strip()
    if explicit:
        if not wait_until_answers(explicit, 10):
            raise SystemExit(f"REDIS_URL={explicit} does not answer")
        return explicit
    host = env.get("REDIS_HOST", "127.0.0.1").strip() or "127.0.0.1"
    port = int(env.get("REDIS_PORT", "6379") or 6379)
    url = f"redis://{host}:{port}/{int(env.get('REDIS_DB', '0') or 0)}"
    if answers(url):
        return url
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"Redis at {host}:{port} does not answer")
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (`make setup` installs it), and no Redis answers")
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    # Append-only file, flushed every second: what was accepted survives a restart.
    supervisor.spawn(
        "redis",
        [binary, "--port", str(port), "--bind", host, "--dir", str(folder.resolve()),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str((folder / "redis.log").resolve())],
        env={},
    )
    if not wait_until_answers(url, 15):
        raise SystemExit(f"the private redis-server on port {port} did not start; see {folder}/redis.log")
    print(f"redis: private redis-server on {host}:{port}, data in {folder}", file=sys.stderr)
    return url
