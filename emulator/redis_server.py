"""A throwaway redis-server on a free port that keeps nothing on disk (tests, benchmarks)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import redis

from .ports import free_port


class RedisServer:
    def __init__(self, *options: str, runner: tuple[str, ...] = (), start_seconds: float = 4.0) -> None:
        """`options`: more redis-server arguments (e.g. "--maxmemory-policy", "allkeys-lru").
        `runner`: a command redis-server runs under (valgrind, for a benchmark), which may name
        the server's directory as `{dir}`; it may take up to `start_seconds` to answer."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="punctual-test-redis-")
        self.process = subprocess.Popen(
            [*(part.replace("{dir}", self.dir) for part in runner), binary, "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except (redis.AuthenticationError, redis.ResponseError):
                return  # it answers; it wants a password (--requirepass)
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
