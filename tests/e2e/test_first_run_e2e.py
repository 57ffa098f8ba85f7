"""A newcomer's first run: `make run`'s stack with nothing set (no token, no Redis settings) on a
machine where a Redis full of strangers' keys already runs, then the README's own examples
against it, a restart, and a second stack on the same ports."""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from emulator.launcher import ROOT, Stack
from emulator.redis_server import RedisServer

USER_LINES = "# my own settings\nGREETING=hello"  # no newline at the end: the token goes below it
NOT_RUN = re.compile(r"<!-- not run: (.+) -->")


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


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    not_run: str | None  # the reason given just above it


def readme_blocks() -> list[Block]:
    lines = (ROOT / "README.md").read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        above = next((x for x in reversed(lines[:i]) if x.strip()), "")
        reason = NOT_RUN.fullmatch(above.strip())
        blocks.append(Block(fence.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1,
                            reason.group(1) if reason else None))
        i = end + 1
    return blocks


def first_lines(process: subprocess.Popen[str], count: int, seconds: float) -> list[str]:
    """The first `count` lines a process prints (it may go on forever), or fail after `seconds`."""
    assert process.stdout is not None
    got: list[str] = []
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(got) < count and (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                line = process.stdout.readline()
                if not line:
                    break
                got.append(line)
    return got


def run_bash(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_python(code: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """A client that prints frames until stopped: its first two lines."""
    script = tmp_path / "client.py"
    script.write_text(code)
    process = subprocess.Popen([sys.executable, "-u", str(script)], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = first_lines(process, 2, 20)
    finally:
        process.kill()
        _, errors = process.communicate(timeout=10)
    assert len(lines) == 2, errors
    return lines


def check_health(out: str) -> None:
    assert json.loads(out) == {"status": "healthy", "redis": "connected"}


def check_message(out: str) -> None:
    assert json.loads(out) == {"status": "scheduled", "messageId": "order-42-reminder"}


def check_flow_control(out: str) -> None:
    assert json.loads(out) == {"status": "scheduled", "messageId": "invoice-7"}


def check_destinations(out: str) -> None:
    assert json.loads(out) == {"destinations": [], "count": 0}  # nothing called yet


def check_failed(out: str) -> None:
    body = json.loads(out)
    assert (body["count"], body["nextCursor"]) == (1, None)
    [failed] = body["failedMessages"]
    assert failed["messageId"] == "will-fail" and failed["webhookUrl"].endswith("/no-such-hook")
    assert failed["attempts"] == 1 and failed["lastError"].startswith("HTTP 4")


def check_replay(out: str) -> None:
    body = json.loads(out)
    assert (body["status"], body["messageId"]) == ("scheduled", "will-fail")
    assert body["scheduleTo"].endswith("Z")


def check_stats(out: str) -> None:
    body = json.loads(out)
    assert set(body) == {"messages", "minutes", "agentRuns", "scheduler"}
    assert body["messages"]["pending"] >= 2  # the README's two messages for 2030
    assert len(body["minutes"]) == 60 and body["messages"]["failed"] >= 1
    assert body["scheduler"]["isRunning"] is True


def check_agent(out: str) -> None:
    body = json.loads(out)
    assert body["success"] is True
    assert {k: body["data"][k] for k in ("id", "name", "status")} == {
        "id": "agent-123", "name": "Content Creator Agent", "status": "IDLE"}


def check_schedule(out: str) -> None:
    body = json.loads(out)
    assert body["success"] is True
    assert body["data"]["scheduleExpression"] == "*/5 * * * *" and body["data"]["scheduleEnabled"] is True
    assert body["data"]["nextRunAt"].endswith("Z")


def check_live(lines: list[str]) -> None:
    assert json.loads(lines[0]) == {"event": "subscribed", "data": {"topic": "scheduler-updates"}}
    status = json.loads(lines[1])
    assert status["event"] == "scheduler:status" and status["data"]["stats"]["isRunning"] is True


# Each runnable block is known by a string in it; what it prints is checked as a user would.
CHECKS: list[tuple[str, Callable[[Any], None]]] = [
    ("curl -s $API/health", check_health),
    ('"id": "order-42-reminder"', check_message),
    ('"flowControl": {"key": "customer-42"', check_flow_control),
    ("$API/destinations", check_destinations),
    ("status=failed", check_failed),
    ("/replay", check_replay),
    ("$API/stats", check_stats),
    ('"endpointUrl": "https://agents.example.com/run"', check_agent),
    ("/api/agents/agent-123/schedule", check_schedule),
    ("websockets.connect", check_live),
]


def test_the_readme_examples_run_as_written(newcomer: Stack, tmp_path: Path) -> None:
    blocks = readme_blocks()
    # The README's export line is the banner's, with the banner's values.
    [export] = [b for b in blocks if b.code.startswith("export API=")]
    assert export.not_run
    banner_line = next(x for x in newcomer.banner.splitlines() if x.strip().startswith("export "))
    assert re.findall(r"(\w+)=", export.code) == re.findall(r"(\w+)=", banner_line) == ["API", "WS", "TOKEN"]
    env = {k: v for k, v in os.environ.items() if k not in {"API_TOKEN", "REDIS_URL"}}
    env.update(newcomer.exported)
    ran = []
    for block in blocks:
        if block.language in {"json", "text", ""}:
            continue  # answers, samples and diagrams
        if block.not_run:
            continue
        assert block.language in {"bash", "python"}, f"README line {block.line}: <!-- not run: why -->?"
        [check] = [c for key, c in CHECKS if key in block.code] or [None]
        assert check is not None, f"README line {block.line}: no check for this block in {__name__}"
        if block.language == "bash":
            check(run_bash(block.code, env))
        else:
            check(run_python(block.code, env, tmp_path))
        ran.append(check)
    assert ran == [check for _, check in CHECKS]
    # What is not run needs Docker, AWS, a browser or Node (the Socket.IO client's options, which
    # tests/js/spec_flow.mjs runs), or is `make` itself; the list stays short.
    assert len([b for b in blocks if b.not_run]) <= 9
    # At LOG_LEVEL=WARNING the gateway's boto3 client (it pushed scheduler:status) said nothing.
    assert "Found credentials" not in newcomer.log.read_text()


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
