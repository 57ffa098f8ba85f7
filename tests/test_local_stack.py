"""How `make run` sets itself up, piece by piece: its ports, its Redis, its token, its logging, how
it starts a dead process again.
(tests/e2e/test_first_run_e2e.py starts the whole stack.)"""

from __future__ import annotations

import errno
import io
import json
import logging
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chalicelib import observability
from emulator import redis_local
from emulator.env_file import LocalEnvironment, TokenSource, ensure_token
from emulator.listeners import Port, PortsInUse, bind, bind_all
from emulator.log_lines import LogFormatError, log_format, use_local_format
from emulator.processes import Backoff, Supervisor, configure_logging
from emulator.redis_server import RedisServer


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A port another program listens on, as Python's servers bind (SO_REUSEADDR)."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_a_listened_port_is_refused_not_shared(listening: socket.socket) -> None:
    # Both sides set SO_REUSEADDR, as servers do: on Linux that never lets two sockets listen.
    with pytest.raises(OSError) as refused:
        bind(Port("API_PORT", "127.0.0.1", port_of(listening)))
    assert refused.value.errno == errno.EADDRINUSE


def test_a_busy_port_binds_none_and_names_the_setting_to_change(listening: socket.socket) -> None:
    free = bind(Port("WS_PORT", "127.0.0.1", 0))
    ws_port = port_of(free)
    free.close()
    busy = port_of(listening)
    with pytest.raises(PortsInUse) as refused:
        bind_all([Port("WS_PORT", "127.0.0.1", ws_port), Port("API_PORT", "127.0.0.1", busy)])
    message = str(refused.value)
    assert message.startswith(f"port {busy} is in use; set API_PORT=")
    suggested = int(message.rsplit("=", 1)[1])
    assert suggested not in {busy, ws_port}
    bind(Port("API_PORT", "127.0.0.1", suggested)).close()  # free, as suggested
    bind(Port("WS_PORT", "127.0.0.1", ws_port)).close()  # let go of when the other was refused


def test_several_busy_ports_are_named_in_one_line(listening: socket.socket) -> None:
    other = socket.create_server(("127.0.0.1", 0))
    api, ws = port_of(listening), port_of(other)
    with other, pytest.raises(PortsInUse) as refused:
        bind_all([Port("API_PORT", "127.0.0.1", api), Port("WS_PORT", "127.0.0.1", ws)])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"ports {api}, {ws} are in use; set API_PORT=")
    assert " WS_PORT=" in message


def read_env(tmp_path: Path, text: str | None, **environ: str) -> LocalEnvironment:
    env_file = tmp_path / ".env"
    if text is not None:
        env_file.write_text(text)
    return LocalEnvironment.read({"PUNCTUAL_ENV_FILE": str(env_file), **environ}, tmp_path / "unused")


def test_without_redis_settings_the_redis_is_private_on_a_socket_in_the_data_folder(tmp_path: Path) -> None:
    local = read_env(tmp_path, "GREETING=hello\n")
    plan = redis_local.plan(local.values, tmp_path / "data")
    assert plan.private and plan.chosen_by is None and plan.port is None
    assert plan.socket_path == (tmp_path / "data" / "redis" / "redis.sock").resolve()
    assert plan.url == f"unix://{plan.socket_path}?db=0"
    assert plan.cli() == f"redis-cli -s {plan.socket_path}"


@pytest.mark.parametrize("variable", ["REDIS_PORT", "REDIS_URL"])
def test_a_redis_named_in_the_env_file_is_shared_and_its_keys_are_counted(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis, variable: str
) -> None:
    for i in range(2_500):
        redis_client.set(f"punctual:msg:stranger-{i}", "x")
    redis_client.set("punctual-other:msg:1", "x")  # another prefix
    redis_client.set("unrelated", "x")
    value = str(redis_server.port) if variable == "REDIS_PORT" else redis_server.url
    plan = redis_local.plan(read_env(tmp_path, f"{variable}={value}\n").values, tmp_path / "data")
    assert not plan.private and plan.chosen_by == variable
    assert plan.url == redis_server.url
    assert plan.cli() is None
    assert redis_local.count_keys(plan.url, "punctual") == redis_local.KeyCount(2_500, complete=True)
    assert redis_local.KeyCount(2_500, True).text("punctual") == "2,500 keys under punctual:"


def test_a_socket_path_too_long_for_the_os_falls_back_to_a_free_tcp_port(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    plan = redis_local.plan({}, deep)
    assert plan.private and plan.socket_path is None
    assert plan.port == Port("REDIS_PORT", "127.0.0.1", 0, listen=False)
    bound = plan.on_port(6390)
    assert bound.url == "redis://127.0.0.1:6390/0"
    assert bound.cli() == "redis-cli -h 127.0.0.1 -p 6390"


def test_a_password_is_not_printed() -> None:
    assert redis_local.redacted("rediss://:s3cret@cache.example:6379/0") == "rediss://:***@cache.example:6379/0"
    assert redis_local.redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_generated_token_is_appended_to_the_env_file_and_read_back(tmp_path: Path) -> None:
    first = ensure_token(read_env(tmp_path, "# mine\nGREETING=hello"))  # no newline at the end
    assert first.source is TokenSource.GENERATED
    text = (tmp_path / ".env").read_text()
    assert text.startswith("# mine\nGREETING=hello\n# ")
    assert text.endswith(f"\nAPI_TOKEN={first.value}\n")
    again = ensure_token(read_env(tmp_path, None))
    assert (again.value, again.source) == (first.value, TokenSource.FILE)
    assert (tmp_path / ".env").read_text() == text  # nothing more written
    assert ensure_token(read_env(tmp_path, None, API_TOKEN="mine")).source is TokenSource.ENVIRONMENT


def test_a_new_env_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    token = ensure_token(read_env(tmp_path, None))
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".env").read_text().splitlines()[-1] == f"API_TOKEN={token.value}"


def test_botocore_notes_obey_the_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    botocore = logging.getLogger("botocore")
    before = botocore.level
    try:
        for level in ("INFO", "WARNING"):
            monkeypatch.setenv("LOG_LEVEL", level)
            configure_logging()
            # "Found credentials in environment variables." is INFO, once per new client.
            assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO)
        monkeypatch.setenv("LOG_LEVEL", "ERROR")
        configure_logging()
        assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.WARNING)
    finally:
        botocore.setLevel(before)


# -- a stack that heals itself ---------------------------------------------------------------


@pytest.mark.parametrize(("quick_deaths", "delay"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0),
                                                     (6, 30.0), (40, 30.0)])
def test_a_dead_process_is_started_again_at_once_then_backs_off(quick_deaths: int, delay: float) -> None:
    assert Backoff(first=1.0, cap=30.0).delay(quick_deaths) == delay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_child_that_dies_is_started_again_and_one_that_dies_at_once_is_not_spun() -> None:
    clock = Clock()
    supervisor = Supervisor(Backoff(first=1.0, cap=30.0, healthy_seconds=5.0), clock)
    dies = [sys.executable, "-c", "import sys; sys.exit(3)"]
    try:
        first = supervisor.spawn("workers", dies, {}, restart=True)
        first.wait()
        clock.now += 60  # it had run long enough: a new one at once
        assert supervisor.heal() is None
        [second] = [c.process for c in supervisor.children if c.name == "workers"]
        assert second.pid != first.pid
        second.wait()
        clock.now += 0.5  # died soon after its start: the next waits 1 s, then 2 s
        assert supervisor.heal() is None
        assert supervisor.children[0].process is second
        clock.now += 0.9
        supervisor.heal()
        assert supervisor.children[0].process is second
        clock.now += 0.2
        supervisor.heal()
        third = supervisor.children[0].process
        assert third is not second
        third.wait()
        clock.now += 0.1
        supervisor.heal()
        clock.now += 1.95
        supervisor.heal()
        assert supervisor.children[0].process is third
        clock.now += 0.1
        supervisor.heal()
        assert supervisor.children[0].process is not third
    finally:
        supervisor.stop_all(grace_seconds=5)


def test_a_child_that_is_not_restarted_stops_the_stack() -> None:
    supervisor = Supervisor()
    try:
        supervisor.spawn("moto", [sys.executable, "-c", "pass"], {}).wait()
        gone = supervisor.heal()
        assert gone is not None and gone.name == "moto"
    finally:
        supervisor.stop_all(grace_seconds=5)


# -- readable local logs -------------------------------------------------------------------------


def logged(environ: dict[str, str], write: Any) -> list[str]:
    """The lines the app writes in a process of the local stack with `environ`."""
    [handler] = observability.logger.handlers  # the `chalicelib` loggers share it
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    formatter, before = handler.formatter, handler.setStream(stream)
    try:
        use_local_format(environ)
        write()
    finally:
        handler.setStream(before)
        handler.setFormatter(formatter)
    return stream.getvalue().splitlines()


def test_make_run_writes_one_short_line_per_request_delivery_run_and_tick() -> None:
    def write() -> None:
        observability.request("POST", "/messages", "/messages", 200, 3.2, "req-1")
        observability.delivery("order-42", "delivered", 1, 1, None)
        observability.delivery("order-43", "failed", 4, 2, "HTTP 500")
        observability.run("agent-1", "run-9", "started", 1, 4)
        observability.tick({"claimed": 12, "reclaimed": 0, "expiredRuns": 0, "sendFailures": 0,
                            "handedOn": False}, 4.2)
        logging.getLogger("chalicelib.dispatcher").warning("handing %s on", "m:order-44")

    lines = logged({}, write)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "POST /messages 200 3ms",
        "delivered order-42 attempt 1 (late 1ms)",
        "failed order-43 attempt 4 (late 2ms): HTTP 500",
        "run agent-1/run-9 started attempt 1 (late 4ms)",
        "tick claimed 12 in 4ms",
        "WARNING chalicelib.dispatcher: handing m:order-44 on",
    ]
    for line in lines:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", line.split(" ", 1)[0]), line


def test_log_format_json_keeps_lambdas_json_lines_locally() -> None:
    [line] = logged({"LOG_FORMAT": "json"},
                    lambda: observability.delivery("order-42", "delivered", 1, 1, None))
    record = json.loads(line)
    assert (record["kind"], record["messageId"], record["latenessMs"]) == ("delivery", "order-42", 1)


def test_an_unknown_log_format_is_refused_with_the_choices() -> None:
    with pytest.raises(LogFormatError, match="LOG_FORMAT must be human or json, got 'yaml'"):
        log_format({"LOG_FORMAT": "yaml"})
