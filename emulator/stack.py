"""`make run`: the whole stack, offline, in the foreground. Ctrl-C stops every part.

Redis (the one at REDIS_URL / REDIS_HOST:REDIS_PORT, else a private redis-server that keeps its
data under .local/), an AWS endpoint (AWS_ENDPOINT_URL, else an embedded moto server), the SQS
queues, the REST API (Chalice's local gateway), the SQS pollers and the ticker that feed the
dispatch and tick handlers, and the WebSocket gateway.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from dotenv import load_dotenv

from chalicelib.config import DEFAULT_DISPATCH_QUEUE, DEFAULT_FANOUT_QUEUE

from .aws_local import ensure_endpoint, ensure_queues, sqs_client
from .ports import wait_for_port
from .processes import Supervisor, configure_logging
from .redis_local import ensure_redis

ROOT = Path(__file__).resolve().parent.parent


class Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def _environment() -> dict[str, str]:
    load_dotenv(ROOT / ".env", override=False)  # the environment wins over the file
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", "test")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    env.setdefault("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1"))
    env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    env.setdefault("API_HOST", "127.0.0.1")
    env.setdefault("API_PORT", "8000")
    env.setdefault("WS_HOST", "127.0.0.1")
    env.setdefault("WS_PORT", "8001")
    env.setdefault("WS_STAGE", "api")
    env["PUNCTUAL_LOCAL"] = "1"  # loopback webhook targets are allowed locally
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _wait_for_api(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            time.sleep(0.1)
    return False


def start(env: dict[str, str], supervisor: Supervisor) -> dict[str, str]:
    """Start every part; returns the environment the app's processes run with."""
    data_dir = Path(env.get("PUNCTUAL_DATA_DIR") or ROOT / ".local")
    env["REDIS_URL"] = ensure_redis(env, data_dir, supervisor)
    env["AWS_ENDPOINT_URL"] = ensure_endpoint(env, supervisor, data_dir)
    queues = ensure_queues(sqs_client(env), env.get("DISPATCH_QUEUE_NAME", DEFAULT_DISPATCH_QUEUE),
                           env.get("FANOUT_QUEUE_NAME", DEFAULT_FANOUT_QUEUE))
    env["DISPATCH_QUEUE_URL"] = queues.dispatch_url
    env["FANOUT_QUEUE_URL"] = queues.fanout_url
    if not env.get("API_TOKEN"):
        env["API_TOKEN"] = secrets.token_urlsafe(24)
        print(f"API_TOKEN was not set; this run's token is: {env['API_TOKEN']}", file=sys.stderr)
    env.setdefault("WS_MANAGEMENT_ENDPOINT", f"http://{env['WS_HOST']}:{env['WS_PORT']}/{env['WS_STAGE']}")

    py = sys.executable
    for _ in range(int(env.get("API_PROCESSES", "2"))):
        supervisor.spawn("api", [py, "-m", "emulator.api_server"], env)
    supervisor.spawn("ws-gateway", [py, "-m", "emulator.ws_gateway"], env)
    # Two worker processes per core: each is a container's worth of dispatch "Lambdas", and the
    # threads of one process share one interpreter lock, so one process per core left the cores
    # idle while its threads waited for the lock (README, Benchmarks).
    for i in range(int(env.get("WORKER_PROCESSES") or 2 * (os.cpu_count() or 1))):
        argv = [py, "-m", "emulator.workers"] + (["--ticker"] if i == 0 else [])
        supervisor.spawn("workers", argv, env)

    api = f"http://{env['API_HOST']}:{env['API_PORT']}"
    if not _wait_for_api(api, 30):
        raise SystemExit(f"the REST API did not answer on {api}")
    if not wait_for_port(env["WS_HOST"], int(env["WS_PORT"]), 30):
        raise SystemExit(f"the WebSocket gateway did not listen on {env['WS_HOST']}:{env['WS_PORT']}")
    print(
        f"punctual is up\n  REST API   {api}\n"
        f"  WebSocket  ws://{env['WS_HOST']}:{env['WS_PORT']}/{env['WS_STAGE']}\n"
        f"  Redis      {env['REDIS_URL']}\n  AWS        {env['AWS_ENDPOINT_URL']}\n"
        f"  queue      {queues.dispatch_url}\nCtrl-C stops everything.",
        file=sys.stderr,
        flush=True,
    )
    return env


def main() -> int:
    configure_logging()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    supervisor = Supervisor()
    try:
        start(_environment(), supervisor)
        while (gone := supervisor.exited()) is None:
            time.sleep(0.2)
        print(f"{gone.name} exited with status {gone.process.returncode}; stopping the stack",
              file=sys.stderr)
        return 1
    except Stop:
        print("stopping…", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        supervisor.stop_all(grace_seconds=25)


if __name__ == "__main__":
    sys.exit(main())
