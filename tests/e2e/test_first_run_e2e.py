"""A newcomer's first run: `make run`'s stack with nothing set (no token, no Redis settings) on a
machine where a Redis full of strangers' keys already runs, a restart, and a second stack on the
same ports."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from emulator.launcher import ROOT, Stack
from emulator.redis_server import RedisServer

USER_LINES = "# my own settings\nGREETING=hello"  # no newline at the end: the token goes below it


@dataclass(frozen=True)
class Stranger:
    """A Redis that was here first, holding a stranger's message."""

    server: RedisServer
    client: redis.Redis

    def snapshot(self) -> dict[str, Any]:
        return {"keys": sorted(self.client.scan_iter("*")),
                "connections": self.client.info("stats")["total_connections_received"]}


@pytest.fixture(scope="module")
def stranger() -> Iterator[Stranger]:
    server = RedisServer()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.hset("punctual:msg:stranger", mapping={"status": "scheduled", "webhookUrl": "http://127.0.0.1:9/x"})
    client.zadd("punctual:msgs:pending", {"stranger": 0})
    client.zadd("punctual:due", {"m:stranger": 0})
    yield Stranger(server, client)
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory, stranger: Stranger) -> Iterator[Stack]:
    data_dir = Path(tmp_path_factory.mktemp("newcomer"))
    (data_dir / ".env").write_text(USER_LINES)
    # make run's defaults: no API_TOKEN, no REDIS_*, two API processes.
    stack = Stack(data_dir, API_TOKEN=None, API_PROCESSES="2").start()
    yield stack
    if stack.process is not None and stack.process.poll() is None:
        stack.stop()


def get(stack: Stack, path: str, token: str) -> requests.Response:
    return stack.call("GET", path, token=token)


def test_without_redis_settings_the_stack_uses_its_own_and_leaves_the_running_one_alone(
    newcomer: Stack, stranger: Stranger
) -> None:
    before = stranger.snapshot()
    socket_path = (newcomer.data_dir / "redis" / "redis.sock").resolve()
    assert newcomer.redis_url == f"unix://{socket_path}?db=0"
    assert "(private redis-server, 0 keys under punctual:)" in newcomer.banner
    assert f"redis-cli -s {socket_path}" in newcomer.banner
    token = newcomer.exported["TOKEN"]
    assert get(newcomer, "/messages", token).json()["count"] == 0
    assert get(newcomer, "/messages/stranger", token).status_code == 404
    assert redis.Redis.from_url(newcomer.redis_url).ping()
    # Nothing of ours connected to the stranger's Redis, let alone changed it.
    assert stranger.snapshot() == before


def test_the_generated_token_is_saved_to_env_and_survives_a_restart(newcomer: Stack) -> None:
    env_file = newcomer.data_dir / ".env"
    token = newcomer.exported["TOKEN"]
    assert f"API_TOKEN  generated and saved to {env_file}" in newcomer.banner
    saved = env_file.read_text()
    assert saved.startswith(USER_LINES + "\n# ") and saved.endswith(f"\nAPI_TOKEN={token}\n")
    assert newcomer.stop() == 0
    newcomer.start()
    assert newcomer.exported["TOKEN"] == token
    assert f"API_TOKEN  from {env_file}" in newcomer.banner
    assert env_file.read_text() == saved
    assert get(newcomer, "/messages", token).status_code == 200


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            except OSError:
                continue
            if text.encode() in seen:
                found.append(int(entry.name))
    return found


def start_refused(env: dict[str, str], fresh: bool = True) -> str:
    """`make run` with `env`: it must exit with one line on stderr and start nothing (`fresh`:
    not even its data folder or .env file)."""
    mark = uuid.uuid4().hex
    done = subprocess.run([sys.executable, "-m", "emulator.stack"], env={**env, "REFUSED_RUN": mark},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    # Its children would carry its environment; redis-server, which gets none, names its data folder.
    assert processes_mentioning(f"REFUSED_RUN={mark}") == []
    if fresh:
        data_dir = env["PUNCTUAL_DATA_DIR"]
        assert not Path(data_dir).exists() and not Path(env["PUNCTUAL_ENV_FILE"]).exists()
        assert processes_mentioning(data_dir) == []
    return done.stderr.strip()


def test_a_second_stack_on_the_ports_of_a_running_one_is_refused(newcomer: Stack, tmp_path: Path) -> None:
    token = newcomer.exported["TOKEN"]
    second = Stack(tmp_path / "second", API_TOKEN="someone-else").env
    second.update(API_PORT=str(newcomer.api_port), WS_PORT=str(newcomer.ws_port))
    message = start_refused(second)
    assert re.fullmatch(rf"ports {newcomer.api_port}, {newcomer.ws_port} are in use; "
                        r"set API_PORT=\d+ WS_PORT=\d+", message), message
    # The first stack alone answers on its port, to its token only.
    assert [get(newcomer, "/messages", token).status_code for _ in range(20)] == [200] * 20
    assert [get(newcomer, "/messages", "someone-else").status_code for _ in range(20)] == [401] * 20


def test_a_second_stack_from_the_same_folder_is_refused(newcomer: Stack) -> None:
    second = Stack(newcomer.data_dir).env  # other free ports, the same data folder
    message = start_refused(second, fresh=False)
    assert message.startswith("the private Redis in ") and "PUNCTUAL_DATA_DIR" in message
    assert redis.Redis.from_url(newcomer.redis_url).ping()  # its socket is still the first stack's


@pytest.mark.parametrize("variable", ["API_PORT", "WS_PORT", "MOTO_PORT", "REDIS_PORT"])
def test_a_busy_port_stops_the_run_with_one_line_naming_its_setting(variable: str, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other_program:  # listens, answers nothing
        busy = other_program.getsockname()[1]
        env = Stack(tmp_path / "refused", **{variable: str(busy), "AWS_ENDPOINT_URL": None}).env
        message = start_refused(env)
    assert re.fullmatch(rf"port {busy} is in use; set {variable}=\d+", message), message
    assert int(message.rsplit("=", 1)[1]) != busy
