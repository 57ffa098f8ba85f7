"""The agent spec's own examples, run by the real JavaScript socket.io-client 4.x (tests/js) against
the local stack: only the URLs and io()'s transport options differ from the spec's code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from emulator.launcher import TOKEN, Stack
from tests.receiver import Receiver

JS = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="module")
def node_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the spec's JavaScript client (tests/js)")
    if not (JS / "node_modules" / "socket.io-client").exists():  # `make test` installs it first
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
    return JS / "spec_flow.mjs"


@pytest.fixture
def agent() -> Iterator[Receiver]:
    # agent-123 works on after answering (202) and reports back; agent-456 completes at once.
    rcv = Receiver(responder=lambda path, n: (202 if path.endswith("/agent-123") else 200, {}))
    yield rcv
    rcv.stop()


@pytest.fixture
def stack(tmp_path: Path, agent: Receiver) -> Iterator[Stack]:
    running = Stack(tmp_path, AGENT_ENDPOINT_TEMPLATE=agent.url + "/run/{agentId}").start()
    yield running
    running.stop()


def _work_as_agent_123(agent: Receiver) -> None:
    """The agent's side of the run: three progress reports, then done."""
    call = agent.wait_for(1, timeout=30)[0].json()
    assert isinstance(call, dict)
    headers = {"Authorization": f"Bearer {call['callbackToken']}"}
    for step, progress in enumerate((25, 50, 75), start=1):
        body = {"progress": progress, "message": f"step {step}", "currentStep": str(step), "totalSteps": 3}
        requests.post(f"{call['callbackUrl']}/progress", json=body, headers=headers, timeout=5)
    requests.post(f"{call['callbackUrl']}/complete", json={}, headers=headers, timeout=5)


def test_the_spec_examples_work_unchanged(node_client: Path, stack: Stack, agent: Receiver) -> None:
    env = {**os.environ, "API": stack.url, "WS": f"http://127.0.0.1:{stack.ws_port}", "TOKEN": TOKEN}
    worker = threading.Thread(target=_work_as_agent_123, args=(agent,), daemon=True)
    worker.start()
    done = subprocess.run(["node", str(node_client)], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert "invalid token" in seen["connectError"]
    assert seen["connected"] is True
    assert seen["scheduled"]["status"] == 200
    scheduled = seen["scheduled"]["body"]["data"]
    assert scheduled["id"] == "agent-123" and scheduled["scheduleEnabled"] is True and scheduled["nextRunAt"]
    assert seen["run"] == 202 and seen["paused"] == 200 and seen["resumed"] == 200 and seen["otherRun"] == 202
    names = [e["name"] for e in seen["events"]]
    # agent:progress is coalesced per run (at most four a second, the last report wins and is
    # always sent, before the run's end): the three reports, sent back to back, arrive as the
    # first and the last, or all three when they happen to be a quarter second apart.
    progress_events = names.count("agent:progress")
    assert names == ["agent:started", *["agent:progress"] * progress_events,
                     "agent:completed", "agent:paused", "agent:resumed"]
    reports = ["Progress: 25% - step 1", "Progress: 50% - step 2", "Progress: 75% - step 3"]
    assert seen["progress"] in (reports, [reports[0], reports[2]])
    started = seen["events"][0]["data"]
    assert set(started) == {"agentId", "jobId", "status", "timestamp"} and started["agentId"] == "agent-123"
    assert seen["completedIn"].startswith("Completed in ") and seen["completedIn"].endswith("ms")
    assert seen["events"][-1]["data"]["status"] == "resumed"
    # The monitoring loop read every agent's schedule, the one without a schedule too.
    assert sorted(seen["monitoring"]) == ["agent-123 next runs at: " + seen_next_run(stack),
                                          "agent-456 has no enabled schedule"]
    assert set(seen["stats"]) >= {"isRunning", "scheduledTasksCount", "runningAgentsCount"}


def seen_next_run(stack: Stack) -> str:
    return str(stack.call("GET", "/api/agents/agent-123/schedule").json()["data"]["nextRunAt"])
