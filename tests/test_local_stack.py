"""How `make run` sets itself up, piece by piece: its ports, its Redis, its token, its logging.
(tests/e2e/test_first_run_e2e.py starts the whole stack.)"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulator import redis_local
from emulator.env_file import LocalEnvironment, TokenSource, ensure_token
from emulator.listeners import Port, PortsInUse, bind, bind_all
from emulator.processes import configure_logging
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
