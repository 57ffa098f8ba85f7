"""Schemathesis against the real local stack: every answer keeps to chalicelib/openapi.json.

The schema is the one the stack serves at /openapi.json. Schemathesis' own CLI runs every
phase: the document's examples, coverage cases (boundaries, wrong types, missing fields,
unexpected methods), generated cases, and stateful sequences that follow the responses (create
an agent, then schedule, pause, resume it). Generation is deterministic, so every run sends the
same requests. No answer may be a 5xx, and every answer must be documented: its status code,
its content type and its body. The hooks in schemathesis_hooks.py keep every call the stack
makes on this machine and give the run report routes a live run and its token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.launcher import ROOT, TOKEN, Stack
from tests.receiver import Receiver

# Generated cases per operation (the examples and coverage cases come on top): bounded so that
# the whole test, stack start and stop included, takes about a minute on 2 cores.
MAX_EXAMPLES = 30
# A request that takes longer fails the run rather than stall it.
REQUEST_TIMEOUT_SECONDS = 10
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# The receiver keeps this path's run going (202), so the run reports have a live run to report on.
LONG_RUN = "/long-run"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    # Every webhook and agent call the generated requests cause lands here.
    rcv = Receiver(responder=lambda path, n: (202 if path == LONG_RUN else 200, {}))
    yield rcv
    rcv.stop()


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A stack of its own: the generated messages and agents must not meet the other e2e tests.
    running = Stack(Path(tmp_path_factory.mktemp("openapi-stack"))).start()
    yield running
    running.stop()


def start_long_run(stack: Stack, receiver: Receiver) -> dict[str, str]:
    """A run that stays running; returns what the stack sent the agent (ids, callback token)."""
    created = stack.call("POST", "/api/agents", {"id": "long-runner", "name": "long runner",
                                                 "endpointUrl": receiver.url + LONG_RUN,
                                                 "timeoutSeconds": 86_400})
    assert created.status_code == 201, created.text
    assert stack.call("POST", "/api/agents/long-runner/run").status_code == 202
    [started] = receiver.wait_for(1, timeout=15)
    run = started.json()
    assert isinstance(run, dict) and run["callbackToken"], run
    return {key: run[key] for key in ("agentId", "runId", "callbackToken")}


def test_every_answer_keeps_to_the_document(own_stack: Stack, receiver: Receiver, tmp_path: Path) -> None:
    run = start_long_run(own_stack, receiver)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "FUZZ_RECEIVER_URL": receiver.url,
        "FUZZ_API_TOKEN": TOKEN,
        "FUZZ_RUN": json.dumps(run),
    }
    command = [
        # The CLI, not the pytest plugin: its lazy fixture loader does not work with pytest 9.
        sys.executable, "-m", "schemathesis.cli", "run", own_stack.url + "/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        # The same cases on every run (schemathesis then has no use for a seed), and no example
        # database written anywhere.
        "--generation-deterministic",
        "--workers", "1",  # one request at a time: the same order on every run
        "--request-timeout", str(REQUEST_TIMEOUT_SECONDS),
        "--no-color",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    print(result.stdout)  # schemathesis' report: shown with -s, and on failure
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    # The hooks did their work: the reports reached the live run (it has progress, an error from
    # a fail report, or has finished), and the generated webhooks and agents called the receiver.
    reported = own_stack.call("GET", f"/api/agents/long-runner/runs/{run['runId']}").json()["data"]
    assert reported["progress"] or reported["error"] or reported["status"] != "running", reported
    assert receiver.for_path("/generated")
