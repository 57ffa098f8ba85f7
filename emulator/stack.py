"""`make run`: the whole stack, offline, in the foreground. Ctrl-C stops every part.

Redis (a private redis-server keeping its data under .local/, unless REDIS_URL / REDIS_HOST /
REDIS_PORT names one), an AWS endpoint (AWS_ENDPOINT_URL, else an embedded moto server), the SQS
queues, the REST API (Chalice's local gateway), the SQS pollers and the ticker that feed the
dispatch and tick handlers, and the WebSocket gateway. Every port is bound before anything
starts: a busy one stops the run with one line naming the setting to change.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from chalicelib.config import DEFAULT_DISPATCH_QUEUE, DEFAULT_FANOUT_QUEUE

from . import redis_local
from .aws_local import ensure_endpoint, ensure_queues, sqs_client
from .banner import Banner
from .env_file import LocalEnvironment, Token, ensure_token
from .listeners import Port, PortsInUse, bind_all, close
from .log_lines import LogFormatError, log_format
from .ports import wait_for_http
from .processes import Supervisor, configure_logging
from .redis_cluster import LocalCluster
from .redis_local import RedisPlan

ROOT = Path(__file__).resolve().parent.parent
WILDCARD_HOSTS = {"", "0.0.0.0"}
# Invocations of each SQS function at once, across the worker processes: the deployed stack's
# DispatchReservedConcurrency, which is also its SQS event source's maximum concurrency (README,
# Local stack).
DEFAULT_CONCURRENCY = 50


class Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def _with_defaults(values: dict[str, str]) -> dict[str, str]:
    env = dict(values)
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


def _port(env: dict[str, str], variable: str, host: str, default: str = "0") -> Port:
    raw = env.get(variable, "").strip() or default
    if not raw.isdigit() or int(raw) > 65535:
        raise SystemExit(f"{variable} must be a port number, got {raw!r}")
    return Port(variable, host, int(raw))


def _bind_ports(env: dict[str, str], redis: RedisPlan) -> dict[str, socket.socket]:
    """Every port the stack needs, bound now; SystemExit naming each busy one."""
    ports = [_port(env, "API_PORT", env["API_HOST"]), _port(env, "WS_PORT", env["WS_HOST"])]
    if not env.get("AWS_ENDPOINT_URL", "").strip():
        ports.append(_port(env, "MOTO_PORT", "127.0.0.1"))
    if redis.port is not None:
        ports.append(redis.port)
    try:
        return bind_all(ports)
    except PortsInUse as exc:
        raise SystemExit(str(exc)) from None


def _url(scheme: str, host: str, listener: socket.socket, path: str = "") -> str:
    shown_host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"{scheme}://{shown_host}:{listener.getsockname()[1]}{path}"


def _count(env: dict[str, str], variable: str, default: int) -> int:
    raw = env.get(variable, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{variable} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def _start_servers(env: dict[str, str], sockets: dict[str, socket.socket], supervisor: Supervisor,
                   data_dir: Path) -> None:
    """The API processes and the WebSocket gateway on the sockets bound for them, then the workers.

    Each is started again if it dies (the supervisor keeps the sockets for that), as Lambda starts
    a new container and API Gateway keeps serving.
    """
    py = sys.executable
    api = sockets.pop("API_PORT")
    for _ in range(_count(env, "API_PROCESSES", 2)):
        supervisor.spawn("api", [py, "-m", "emulator.api_server", "--listen-fd", str(api.fileno())], env,
                         pass_fds=[api.fileno()], restart=True)
    ws = sockets.pop("WS_PORT")
    supervisor.spawn("ws-gateway", [py, "-m", "emulator.ws_gateway", "--listen-fd", str(ws.fileno())], env,
                     pass_fds=[ws.fileno()], restart=True)
    supervisor.keep(api, ws)
    # Two worker processes per core: the threads of one process share one interpreter lock, so
    # one process per core left the cores idle while its threads waited for the lock (README,
    # Benchmarks). Each SQS function's concurrency is shared out among them.
    processes = _count(env, "WORKER_PROCESSES", 2 * (os.cpu_count() or 1))
    share = -(-_count(env, "LAMBDA_CONCURRENCY", DEFAULT_CONCURRENCY) // processes)
    held = data_dir / "workers"
    for i in range(processes):
        argv = [py, "-m", "emulator.workers", "--concurrency", str(share), "--held-dir", str(held)]
        supervisor.spawn("workers", argv + (["--ticker"] if i == 0 else []), env, restart=True)


def _wait_until_serving(api_url: str, ws_url: str, supervisor: Supervisor) -> None:
    status = wait_for_http(api_url + "/health", 30, supervisor.why_exited)
    if status != 200:
        raise SystemExit(f"the REST API's /health answered {status} on {api_url}")
    # An unknown connection's management URL: 410 from the gateway, without invoking a handler.
    probe = ws_url.replace("ws://", "http://") + "/@connections/none"
    if wait_for_http(probe, 30, supervisor.why_exited) is None:
        raise SystemExit(f"the WebSocket gateway did not answer on {ws_url}")


def _redis_line(
    redis: RedisPlan, keys: redis_local.KeyCount, prefix: str, cluster: LocalCluster | None
) -> str:
    url = redis_local.redacted(redis.url)
    if cluster is not None:
        nodes = len(cluster.ports)
        return f"{url} (private cluster of {nodes} primaries, in memory only, {keys.text(prefix)})"
    if redis.private:
        return f"{url} (private redis-server, {keys.text(prefix)})"
    return f"{url} (shared, named by {redis.chosen_by}, {keys.text(prefix)})"


def start(local: LocalEnvironment, supervisor: Supervisor, cluster: LocalCluster | None = None) -> Banner:
    """Start every part (on `cluster` when given); returns the banner to print once all answer."""
    env = _with_defaults(local.values)
    try:
        chosen = log_format(env)  # LOG_FORMAT may come from .env
    except LogFormatError as exc:
        raise SystemExit(str(exc)) from None
    if chosen == "human":
        # CloudWatch's embedded metrics are JSON blobs, one per invocation: not for a person.
        env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    if cluster is not None:
        env["REDIS_URL"] = cluster.url
    data_dir = Path(env.get("PUNCTUAL_DATA_DIR") or ROOT / ".local")
    redis = redis_local.plan(env, data_dir)
    sockets = _bind_ports(env, redis)  # before anything starts: a busy port starts nothing
    try:
        held = sockets.pop("REDIS_PORT", None)
        if held is not None:
            redis = redis.on_port(held.getsockname()[1])
        token: Token = ensure_token(local)
        env["API_TOKEN"] = token.value
        redis_local.start(redis, supervisor, held)
        env["REDIS_URL"] = redis.url
        prefix = redis_local.key_head(redis.url, env.get("REDIS_KEY_PREFIX", "punctual"))
        keys = redis_local.count_keys(redis.url, prefix)
        env["AWS_ENDPOINT_URL"] = ensure_endpoint(env, supervisor, data_dir, sockets.pop("MOTO_PORT", None))
        queues = ensure_queues(sqs_client(env), env.get("DISPATCH_QUEUE_NAME", DEFAULT_DISPATCH_QUEUE),
                               env.get("FANOUT_QUEUE_NAME", DEFAULT_FANOUT_QUEUE))
        env["DISPATCH_QUEUE_URL"] = queues.dispatch_url
        env["FANOUT_QUEUE_URL"] = queues.fanout_url
        api_url = _url("http", env["API_HOST"], sockets["API_PORT"])
        ws_url = _url("ws", env["WS_HOST"], sockets["WS_PORT"], "/" + env["WS_STAGE"])
        env.setdefault("WS_MANAGEMENT_ENDPOINT", ws_url.replace("ws://", "http://"))
        _start_servers(env, sockets, supervisor, data_dir)
    finally:
        close(sockets.values())
    _wait_until_serving(api_url, ws_url, supervisor)
    aws = "embedded moto server" if not local.values.get("AWS_ENDPOINT_URL") else "AWS_ENDPOINT_URL"
    line = _redis_line(redis, keys, prefix, cluster)
    return Banner(api_url, ws_url, token.value, token.note(), line, redis.cli(),
                  f"{aws}: {env['AWS_ENDPOINT_URL']}, queue {queues.dispatch_url}")


def main() -> int:
    try:
        configure_logging()
    except LogFormatError as exc:
        raise SystemExit(str(exc)) from None
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    supervisor = Supervisor()
    # `make run-cluster`: a throwaway cluster of three primaries instead of a plain redis-server.
    cluster = LocalCluster(primaries=3) if "--cluster" in sys.argv[1:] else None
    try:
        banner = start(LocalEnvironment.read(os.environ, ROOT / ".env"), supervisor, cluster)
        print(banner.text(), file=sys.stderr, flush=True)
        while (gone := supervisor.heal()) is None:
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
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
