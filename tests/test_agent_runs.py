"""Agent runs end to end through the handlers: real Redis, moto SQS, a real agent endpoint, a fake clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis
from botocore.exceptions import EndpointConnectionError

from chalicelib import services
from chalicelib.agent_runner import FIRE_CHUNK
from chalicelib.services import Services
from tests.conftest import T0, Harness
from tests.receiver import Receiver


class Agent:
    """A real HTTP agent endpoint whose answers a test scripts; records the fake time of each call."""

    def __init__(self, harness: Harness, answers: list[int] | None = None, default: int = 200) -> None:
        self.answers = list(answers or [])
        self.default = default
        self.called_at: list[int] = []
        self.receiver = Receiver(responder=self._answer)
        self._harness = harness

    def _answer(self, path: str, n: int) -> tuple[int, dict[str, str]]:
        self.called_at.append(self._harness.clock.now_ms())
        return (self.answers.pop(0) if self.answers else self.default), {}

    @property
    def url(self) -> str:
        return self.receiver.url + "/agent"

    def requests(self) -> list[dict]:
        return [r.json() for r in self.receiver.received]  # type: ignore[misc]


@pytest.fixture
def agents(harness: Harness) -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.receiver.stop()


def register(
    h: Harness,
    made: list[Agent],
    agent_id: str,
    answers: list[int] | None = None,
    default: int = 200,
    **extra: object,
) -> Agent:
    endpoint = Agent(h, answers, default)
    made.append(endpoint)
    status, body = h.api(
        "POST", "/api/agents", {"id": agent_id, "name": agent_id, "endpointUrl": endpoint.url, **extra}
    )
    assert status == 201, body
    return endpoint


def schedule(h: Harness, agent_id: str, cron: str = "* * * * *", **extra: object) -> dict:
    status, body = h.api("POST", f"/api/agents/{agent_id}/schedule", {"cronExpression": cron, **extra})
    assert status == 200, body
    return body["data"]


def runs(h: Harness, agent_id: str) -> list[dict]:
    return h.api("GET", f"/api/agents/{agent_id}/runs")[1]["data"]


def info(h: Harness, agent_id: str) -> dict:
    return h.api("GET", f"/api/agents/{agent_id}/schedule")[1]["data"]


def stats(h: Harness) -> dict:
    return h.api("GET", "/api/agents/schedule/status")[1]["data"]


def report(h: Harness, agent_id: str, run_id: str, action: str, token: str, body: object = None) -> tuple:
    return h.api("POST", f"/api/agents/{agent_id}/runs/{run_id}/{action}", body, token=token)


def fire_next_slot(h: Harness) -> None:
    """Move the clock to just before the next minute, tick, and let the dispatchers work."""
    now = h.clock.now_ms()
    h.clock.set(now - now % 60_000 + 60_000 - 500)
    h.tick()
    h.drain(hold_timeouts=True)


def test_a_cron_slot_runs_on_its_second_and_completes(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "sync")
    schedule(harness, "sync")
    harness.tick()  # claims the 00:01:00 slot (inside the window)
    harness.drain()
    assert agent.called_at == [T0 + 60_000]  # called on the slot's instant
    [request] = agent.requests()
    assert request["agentId"] == "sync" and request["jobId"] == "sync" and request["attempt"] == 1
    assert request["scheduledFor"] == "2030-01-01T00:01:00.000Z"
    assert request["callbackUrl"] == f"http://127.0.0.1:8000/api/agents/sync/runs/{request['runId']}"
    assert request["callbackToken"]
    headers = agent.receiver.received[0].headers
    assert headers["webhook-id"] == request["runId"]
    [run] = runs(harness, "sync")
    assert run["status"] == "completed" and run["duration"] == 0 and run["trigger"] == "cron"
    data = info(harness, "sync")
    assert data["status"] == "COMPLETED" and data["lastRunAt"] == "2030-01-01T00:01:00.000Z"
    assert data["nextRunAt"] == "2030-01-01T00:02:00.000Z"
    assert harness.published.names("sync") == ["agent:started", "agent:completed"]
    started = next(d for e, d in harness.published.events if e == "agent:started")
    assert started == {
        "agentId": "sync",
        "jobId": "sync",
        "status": "started",
        "timestamp": "2030-01-01T00:01:00.000Z",
    }


def test_async_run_reports_progress_and_completes(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "async", default=202)
    status, body = harness.api("POST", "/api/agents/async/run")
    assert status == 202 and body["data"]["status"] in {"waiting", "starting"}
    harness.drain(rounds=1)
    [request] = agent.requests()
    run_id, token = request["runId"], request["callbackToken"]
    assert stats(harness)["runningAgentsCount"] == 1
    assert info_or_none(harness, "async") is None  # no schedule, but the run is visible:
    assert runs(harness, "async")[0]["status"] == "running"

    assert report(harness, "async", run_id, "progress", "wrong", {"progress": 5})[0] == 401
    assert report(harness, "async", run_id, "progress", harness_token())[0] == 401  # admin token is not it
    assert report(harness, "async", "run_nope", "progress", token, {"progress": 5})[0] == 404
    assert report(harness, "other", run_id, "progress", token, {"progress": 5})[0] == 404
    for bad, fragment in [
        ({"progress": 101}, "0 to 100"),
        ({}, "progress"),
        ({"progress": "x"}, "progress"),
        ({"progress": 5, "totalSteps": -1}, "totalSteps"),
    ]:
        status, body = report(harness, "async", run_id, "progress", token, bad)
        assert status == 400 and fragment in body["error"]
    assert report(harness, "async", run_id, "finish", token)[0] == 404
    # Long texts are cut, not refused: each report is kept and pushed in one WebSocket frame.
    long = {"progress": 10, "message": "m" * 5000, "currentStep": "s" * 500}
    assert report(harness, "async", run_id, "progress", token, long)[0] == 200
    kept = runs(harness, "async")[0]["progress"]
    assert (len(kept["message"]), len(kept["currentStep"])) == (2000, 200)

    harness.clock.advance(15_234)
    status, body = report(
        harness,
        "async",
        run_id,
        "progress",
        token,
        {"progress": 50, "message": "Processing content generation...", "currentStep": "2", "totalSteps": 4},
    )
    assert (status, body) == (200, {"success": True})
    assert runs(harness, "async")[0]["progress"]["progress"] == 50
    assert report(harness, "async", run_id, "complete", token, {"result": {"ok": True}}) == (
        200,
        {"success": True},
    )
    assert report(harness, "async", run_id, "complete", token)[0] == 409  # finished
    assert report(harness, "async", run_id, "progress", token, {"progress": 60})[0] == 409
    # Without the token, nothing is told of the run's state.
    assert report(harness, "async", run_id, "complete", "wrong")[0] == 401
    [run] = runs(harness, "async")
    assert run["status"] == "completed" and run["duration"] == 15_234
    assert stats(harness)["runningAgentsCount"] == 0
    names = harness.published.names("async")
    assert names == ["agent:started", "agent:progress", "agent:progress", "agent:completed"]
    progress = harness.published.agent_events()[2][1]
    assert progress == {
        "agentId": "async",
        "jobId": "async",
        "progress": 50,
        "message": "Processing content generation...",
        "currentStep": "2",
        "totalSteps": 4,
        "timestamp": "2030-01-01T00:00:15.234Z",
    }
    assert harness.published.agent_events()[3][1]["duration"] == 15_234
    # The timeout check that was queued at start finds the run finished and does nothing.
    harness.drain()
    assert runs(harness, "async")[0]["status"] == "completed"


def harness_token() -> str:
    from tests.conftest import TOKEN

    return TOKEN


def info_or_none(h: Harness, agent_id: str) -> dict | None:
    """An agent's schedule, None when it has none."""
    status, body = h.api("GET", f"/api/agents/{agent_id}/schedule")
    assert status == 200, body
    return body["data"] if body["data"]["scheduleExpression"] else None


def test_failing_three_times_goes_to_error_and_leaves_the_schedule(
    harness: Harness, agents: list[Agent]
) -> None:
    agent = register(harness, agents, "broken", default=500)
    schedule(harness, "broken", priority="HIGH")
    harness.tick()
    harness.drain()
    slot = T0 + 60_000
    # First try on the slot, then retries 1 s, 2 s and 4 s after each failure.
    assert agent.called_at == [slot, slot + 1_000, slot + 3_000, slot + 7_000]
    assert [r["attempt"] for r in agent.requests()] == [1, 2, 3, 4]
    data = info(harness, "broken")
    assert data["status"] == "ERROR" and data["scheduleEnabled"] is False and data["nextRunAt"] is None
    assert data["taskDetails"]["retryCount"] == 3 and data["taskDetails"]["lastError"] == "HTTP 500"
    [run] = runs(harness, "broken")
    assert run["status"] == "failed" and run["attempt"] == 4
    assert harness.published.names("broken").count("agent:failed") == 4
    assert stats(harness)["scheduledTasksCount"] == 0
    assert harness.redis.zcard(harness.svc.message_store.keys.due) == 0  # its next slot went with it
    # Durably off the schedule: later ticks (or a restart, which reads the same Redis) run nothing.
    for _ in range(3):
        fire_next_slot(harness)
    assert len(agent.called_at) == 4
    # Pausing and resuming does not hide the error, nor bring the agent back.
    assert harness.api("PATCH", "/api/agents/broken/schedule/broken/pause")[0] == 200
    assert info(harness, "broken")["status"] == "ERROR"
    assert harness.api("PATCH", "/api/agents/broken/schedule/broken/resume")[0] == 200
    data = info(harness, "broken")
    assert data["status"] == "ERROR" and data["scheduleEnabled"] is False and data["nextRunAt"] is None


def test_retry_state_shows_then_a_success_resets_it(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "flaky", answers=[503])
    harness.api("POST", "/api/agents/flaky/run")
    [start] = harness.receive()
    harness.dispatch([start["Body"]])  # the first attempt fails; the retry waits in SQS
    details = info_or_none(harness, "flaky")
    assert details is None
    data = harness.api("GET", "/api/agents/flaky")[1]["data"]
    assert data["status"] == "IDLE"
    stored = harness.svc.agent_store.get("flaky").fields
    assert stored["retryCount"] == "1" and stored["lastError"] == "HTTP 503"
    assert int(stored["backoffUntil"]) == T0 + 1_000
    harness.drain()
    assert agent.called_at == [T0, T0 + 1_000]
    stored = harness.svc.agent_store.get("flaky").fields
    assert stored["retryCount"] == "0" and "lastError" not in stored and stored["status"] == "COMPLETED"


def test_concurrency_limit_and_priority_order(harness: Harness, agents: list[Agent]) -> None:
    harness.configure(max_concurrent_agents=2)
    for name, priority in [
        ("first", "NORMAL"),
        ("second", "NORMAL"),
        ("low", "LOW"),
        ("critical", "CRITICAL"),
        ("normal", "NORMAL"),
        ("high", "HIGH"),
    ]:
        register(harness, agents, name, default=202)
        schedule(harness, name, priority=priority, enabled=False)
    for name in ["first", "second", "low", "normal", "critical", "high"]:
        assert harness.api("POST", f"/api/agents/{name}/run")[0] == 202
        harness.clock.advance(1)
    harness.drain(hold_timeouts=True)
    assert stats(harness)["runningAgentsCount"] == 2 and stats(harness)["queuedTasksCount"] == 4
    finished: set[str] = set()
    for _ in range(6):
        # Finish the run that started first among those still going.
        going = [a for a in agents if a.requests() and a.requests()[0]["agentId"] not in finished]
        request = min(going, key=lambda a: a.receiver.received[0].at).requests()[0]
        finished.add(request["agentId"])
        report(harness, request["agentId"], request["runId"], "complete", request["callbackToken"])
        harness.drain(hold_timeouts=True)  # the freed slot starts the next waiting run at once
        assert stats(harness)["runningAgentsCount"] <= 2
    start_order = [
        a.requests()[0]["agentId"] for a in sorted(agents, key=lambda a: a.receiver.received[0].at)
    ]
    assert start_order == ["first", "second", "critical", "high", "normal", "low"]


def test_concurrent_starters_never_exceed_the_limit(harness: Harness, agents: list[Agent]) -> None:
    for i in range(20):
        register(harness, agents, f"a{i}", default=202)
        harness.svc.run_store.run_now(f"a{i}", harness.clock.now_ms())  # queued, none started yet
    harness.configure(max_concurrent_agents=3)
    threads = [threading.Thread(target=harness.svc.runner.start_waiting) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats(harness)["runningAgentsCount"] == 3 and stats(harness)["queuedTasksCount"] == 17
    harness.drain(hold_timeouts=True)
    assert sum(1 for a in agents if a.requests()) == 3


def test_many_slots_due_together_fill_exactly_the_free_slots_on_their_second(
    harness: Harness, agents: list[Agent]
) -> None:
    """More slots than one Redis round trip fires (FIRE_CHUNK): the first chunk takes the
    free slots, the rest wait, and every agent's next slot is scheduled."""
    harness.configure(max_concurrent_agents=3)
    endpoint = register(harness, agents, "a0", default=202)
    count = 2 * FIRE_CHUNK + 5
    for i in range(1, count):
        agent = {"id": f"a{i}", "name": f"a{i}", "endpointUrl": endpoint.url}
        assert harness.api("POST", "/api/agents", agent)[0] == 201
    for i in range(count):
        schedule(harness, f"a{i}")
    fire_next_slot(harness)
    assert endpoint.called_at == [T0 + 60_000] * 3
    assert stats(harness)["runningAgentsCount"] == 3 and stats(harness)["queuedTasksCount"] == count - 3
    assert {info(harness, f"a{i}")["nextRunAt"] for i in range(count)} == {"2030-01-01T00:02:00.000Z"}


def test_slots_fire_once_each_after_redis_forgot_its_scripts(harness: Harness, agents: list[Agent]) -> None:
    """A Redis restart empties its script cache: the firing round trip is answered NOSCRIPT,
    and each slot still fires exactly once."""
    endpoints = [register(harness, agents, name) for name in ("x", "y")]
    for name in ("x", "y"):
        schedule(harness, name)
    fire_next_slot(harness)  # the firing script is loaded now
    harness.redis.script_flush()
    fire_next_slot(harness)
    assert [e.called_at for e in endpoints] == [[T0 + 60_000, T0 + 120_000]] * 2
    assert [len(runs(harness, name)) for name in ("x", "y")] == [2, 2]


def test_a_slot_that_comes_while_the_previous_run_goes_on_is_skipped(
    harness: Harness, agents: list[Agent]
) -> None:
    agent = register(harness, agents, "slow", default=202, timeoutSeconds=600)
    schedule(harness, "slow")
    harness.tick()
    harness.drain(hold_timeouts=True)
    assert len(agent.called_at) == 1
    fire_next_slot(harness)  # 00:02:00, while the 00:01:00 run is still going
    assert len(agent.called_at) == 1
    history = runs(harness, "slow")
    assert [r["status"] for r in history] == ["skipped", "running"]
    assert "still in progress" in history[0]["error"]
    assert info(harness, "slow")["nextRunAt"] == "2030-01-01T00:03:00.000Z"


def test_missed_slots_collapse_into_one_run(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "late")
    schedule(harness, "late")
    harness.clock.set(T0 + 10 * 60_000 + 30_000)  # ten minutes of downtime
    harness.tick()
    harness.drain()
    assert agent.called_at == [T0 + 10 * 60_000 + 30_000]  # once, at once
    assert len(runs(harness, "late")) == 1
    assert info(harness, "late")["nextRunAt"] == "2030-01-01T00:11:00.000Z"  # continues from now


def test_the_tick_does_not_time_out_a_retry_begun_after_it_listed_the_old_lease(
    harness: Harness, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick lists runs whose lease has passed, then reads each. In between, the attempt's
    own timeout check may fail it and its retry begin, with the same token the tick then reads
    and a lease of its own: that attempt must run on, not be failed as if it had timed out."""
    agent = register(harness, agents, "slow", default=202, timeoutSeconds=30)
    harness.api("POST", "/api/agents/slow/run")
    harness.drain(rounds=1)  # attempt 1 called (202); its timeout check waits in SQS
    timeout_check = [m["Body"] for m in harness.receive()]
    harness.clock.set(T0 + 30_001)
    listed = harness.svc.run_store.expired_runs

    def listed_then_overtaken(now: int, batch: int) -> list[str]:
        runs_listed = listed(now, batch)
        harness.dispatch(timeout_check)  # attempt 1 times out on time; its retry is queued
        harness.clock.advance(1_500)
        harness.drain(hold_timeouts=True)  # the retry begins: attempt 2, leased for 30 s
        return runs_listed

    monkeypatch.setattr(harness.svc.run_store, "expired_runs", listed_then_overtaken)
    harness.tick()
    [run] = runs(harness, "slow")
    assert (run["attempt"], run["status"]) == (2, "running")
    assert [t - T0 for t in agent.called_at] == [0, 31_501]
    assert stats(harness)["runningAgentsCount"] == 1


def test_a_retry_that_sqs_refused_is_taken_up_by_the_next_tick(harness: Harness, agents: list[Agent]) -> None:
    """Not after the queue grace (2 minutes) and the tick after that."""
    agent = register(harness, agents, "flaky", answers=[500])
    harness.api("POST", "/api/agents/flaky/run")
    start = [m["Body"] for m in harness.receive()]
    good_url = harness.svc.dispatch_queue.url
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url + "-missing"
    harness.dispatch(start)  # the call fails, and so does sending its retry
    harness.svc.dispatch_queue.__dict__["_queue_url"] = good_url
    assert len(agent.called_at) == 1 and harness.receive() == []
    harness.clock.advance(2_000)  # past the 1 s backoff
    assert harness.tick()["reclaimed"] == 1
    harness.drain(hold_timeouts=True)
    assert len(agent.called_at) == 2 and runs(harness, "flaky")[0]["status"] == "completed"


def test_a_run_that_reports_nothing_times_out(harness: Harness, agents: list[Agent]) -> None:
    harness.configure(agent_max_retries=0)
    agent = register(harness, agents, "silent", default=202, timeoutSeconds=30)
    harness.api("POST", "/api/agents/silent/run")
    harness.drain()
    assert agent.called_at == [T0]
    [run] = runs(harness, "silent")
    assert run["status"] == "failed" and run["error"] == "timed out after 30 s without an answer"
    assert harness.clock.now_ms() == T0 + 30_000
    assert harness.api("GET", "/api/agents/silent")[1]["data"]["status"] == "ERROR"


def test_the_tick_times_out_runs_whose_check_was_lost(harness: Harness, agents: list[Agent]) -> None:
    harness.configure(agent_max_retries=0)
    register(harness, agents, "lost", default=202, timeoutSeconds=30)
    harness.api("POST", "/api/agents/lost/run")
    harness.drain(rounds=1)
    harness.receive()  # SQS loses the timeout check
    harness.clock.set(T0 + 30_001)
    assert harness.tick()["expiredRuns"] == 1
    assert runs(harness, "lost")[0]["status"] == "failed"


def test_a_lost_start_message_gives_its_slot_back(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "dropped")
    harness.api("POST", "/api/agents/dropped/run")
    harness.receive()  # the start message is lost
    assert stats(harness)["runningAgentsCount"] == 1
    harness.clock.set(T0 + 60_001)
    harness.tick()
    harness.drain()
    assert agent.called_at == [T0 + 60_001]
    assert runs(harness, "dropped")[0]["status"] == "completed"


def test_duplicate_messages_start_a_run_once(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "once")
    harness.api("POST", "/api/agents/once/run")
    [start] = harness.receive()
    harness.dispatch([start["Body"]] * 3)
    harness.dispatch([start["Body"]])
    assert len(agent.called_at) == 1


def test_no_pause_or_delete_while_running_and_no_second_manual_run(
    harness: Harness, agents: list[Agent]
) -> None:
    register(harness, agents, "busy", default=202)
    schedule(harness, "busy")
    harness.api("POST", "/api/agents/busy/run")
    harness.drain(hold_timeouts=True)
    status, body = harness.api("PATCH", "/api/agents/busy/schedule/busy/pause")
    assert status == 409 and "while it is running" in body["error"]
    assert harness.api("DELETE", "/api/agents/busy")[0] == 409
    assert harness.api("POST", "/api/agents/busy/run")[0] == 409
    assert info(harness, "busy")["taskDetails"]["isRunning"] is True


@pytest.mark.parametrize("set_at", [-5_000, -1_000])  # by the sweep of its second; claimed at once
def test_a_slot_set_after_the_tick_that_covered_it_runs_on_its_second(
    harness: Harness, agents: list[Agent], set_at: int
) -> None:
    """The next tick would come up to a minute after the slot (here at T0 + 50 s)."""
    agent = register(harness, agents, "soon")
    harness.clock.set(T0 - 10_000)
    harness.tick()  # covers T0 - 10 s to T0 + 110 s, while "soon" has no schedule
    harness.clock.set(T0 + set_at)
    assert schedule(harness, "soon")["nextRunAt"] == "2030-01-01T00:00:00.000Z"  # T0
    harness.drain(hold_timeouts=True)  # no tick
    assert agent.called_at == [T0]


def test_slots_set_after_the_tick_share_the_sweep_of_their_second(
    harness: Harness, agents: list[Agent]
) -> None:
    """With SQS's 2 s lead, as deployed: slots due more than 3 s ahead wait for one sweep of their
    second (one SQS message however many schedules are set); once it has run, a slot of that
    second is claimed as it is set."""
    harness.configure(lead_seconds=2)
    for name in ("s1", "s2", "s3"):
        register(harness, agents, name)
    harness.clock.set(T0 - 10_000)
    schedule(harness, "s1")
    schedule(harness, "s2")
    due_index = harness.svc.message_store.keys.due

    def delayed() -> int:
        attributes = harness.sqs.get_queue_attributes(
            QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesDelayed"])

    assert len(harness.redis.zrangebyscore(due_index, T0, T0)) == 2
    assert delayed() == 1  # the sweep, asked for by the first schedule
    assert harness.svc.scheduler.sweep(T0) == 2  # what the dispatcher does when it arrives
    schedule(harness, "s3")
    assert harness.redis.zrangebyscore(due_index, T0, T0) == []
    assert delayed() == 3  # the sweep, the message of the two slots it claimed, and s3's slot


def test_a_job_resumed_after_the_tick_that_covered_its_slot_runs_on_its_second(
    harness: Harness, agents: list[Agent]
) -> None:
    agent = register(harness, agents, "back")
    schedule(harness, "back")
    assert harness.api("PATCH", "/api/agents/back/schedule/back/pause")[0] == 200
    harness.clock.set(T0 + 10_000)
    harness.tick()  # covers the 00:01:00 slot, while the job is paused
    harness.clock.set(T0 + 20_000)
    assert harness.api("PATCH", "/api/agents/back/schedule/back/resume")[0] == 200
    harness.drain(hold_timeouts=True)  # no tick
    assert agent.called_at == [T0 + 60_000]


def test_a_slot_moved_by_a_time_zone_change_after_the_tick_runs_on_its_second(
    harness: Harness, agents: list[Agent]
) -> None:
    agent = register(harness, agents, "tz", timezone="UTC")
    schedule(harness, "tz", "0 2 * * *")  # 02:00 UTC, beyond the window
    harness.clock.set(T0 + 3_570_000)
    harness.tick()  # covers up to 01:01:30 UTC
    status, _ = harness.api("PATCH", "/api/agents/tz", {"timezone": "Africa/Lagos"})
    assert status == 200  # 02:00 in Lagos (UTC+1) is 01:00 UTC, 30 s from now
    harness.drain(hold_timeouts=True)  # no tick
    assert agent.called_at == [T0 + 3_600_000]


def test_a_paused_agent_whose_manual_run_fails_for_good_leaves_the_paused_jobs(
    harness: Harness, agents: list[Agent]
) -> None:
    harness.configure(agent_max_retries=0)
    register(harness, agents, "broken", default=500)
    schedule(harness, "broken")
    assert harness.api("PATCH", "/api/agents/broken/schedule/broken/pause")[0] == 200
    harness.api("POST", "/api/agents/broken/run")
    harness.drain(hold_timeouts=True)
    assert info(harness, "broken")["status"] == "ERROR"
    assert stats(harness)["pausedJobsCount"] == 0
    assert harness.api("GET", "/api/agents/schedule/paused")[1]["data"] == []
    status, body = harness.api("PATCH", "/api/agents/broken/schedule/broken/resume")
    assert status == 400 and "not paused" in body["error"]


def test_a_new_schedule_for_a_paused_job_resumes_it_and_says_so(
    harness: Harness, agents: list[Agent]
) -> None:
    register(harness, agents, "again")
    schedule(harness, "again", jobId="job-a")
    assert harness.api("PATCH", "/api/agents/again/schedule/job-a/pause")[0] == 200
    assert stats(harness)["pausedJobsCount"] == 1
    schedule(harness, "again", "*/5 * * * *", jobId="job-b")
    assert harness.published.names("again") == ["agent:paused", "agent:resumed"]
    assert harness.published.agent_events()[1][1]["jobId"] == "job-a"  # the job that was paused
    assert stats(harness)["pausedJobsCount"] == 0 and info(harness, "again")["status"] == "IDLE"


def test_a_paused_agent_run_by_hand_stays_paused(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "held")
    schedule(harness, "held")
    assert harness.api("PATCH", "/api/agents/held/schedule/held/pause")[0] == 200
    assert harness.api("POST", "/api/agents/held/run")[0] == 202
    harness.drain(hold_timeouts=True)
    assert len(agent.called_at) == 1
    state = info(harness, "held")
    assert state["status"] == "PAUSED" and state["taskDetails"]["isPaused"] is True
    assert harness.api("PATCH", "/api/agents/held/schedule/held/resume")[0] == 200
    assert info(harness, "held")["status"] == "IDLE"


def test_pause_and_resume_emit_events(harness: Harness, agents: list[Agent]) -> None:
    register(harness, agents, "pr")
    schedule(harness, "pr", jobId="job-456")
    harness.api("PATCH", "/api/agents/pr/schedule/job-456/pause")
    harness.api("PATCH", "/api/agents/pr/schedule/job-456/resume")
    assert harness.published.names("pr") == ["agent:paused", "agent:resumed"]
    assert harness.published.agent_events()[0][1] == {
        "agentId": "pr",
        "jobId": "job-456",
        "status": "paused",
        "timestamp": "2030-01-01T00:00:00.000Z",
    }


def test_unscheduling_stops_a_slot_already_on_its_way(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "gone")
    schedule(harness, "gone")
    harness.tick()  # the slot is in SQS
    harness.api("DELETE", "/api/agents/gone/schedule")
    harness.drain()
    assert agent.called_at == []
    assert runs(harness, "gone") == []


def test_run_listing_and_one_run(harness: Harness, agents: list[Agent]) -> None:
    register(harness, agents, "hist")
    for _ in range(3):
        harness.api("POST", "/api/agents/hist/run")
        harness.drain()
        harness.clock.advance(1_000)
    history = runs(harness, "hist")
    assert len(history) == 3
    assert [r["scheduledFor"] for r in history] == sorted((r["scheduledFor"] for r in history), reverse=True)
    status, body = harness.api("GET", f"/api/agents/hist/runs/{history[0]['runId']}")
    assert status == 200 and body["data"]["status"] == "completed"
    assert harness.api("GET", "/api/agents/hist/runs/run_missing")[0] == 404
    assert harness.api("GET", "/api/agents/hist/runs?limit=2")[1]["data"] == history[:2]
    assert json.dumps(history)  # plain JSON
    assert harness.api("DELETE", "/api/agents/hist")[0] == 200
    status, body = harness.api("GET", f"/api/agents/hist/runs/{history[0]['runId']}")
    assert status == 404 and body["error"] == "agent 'hist' not found"


def test_a_run_left_waiting_by_a_dead_dispatcher_starts_on_the_next_tick(
    harness: Harness, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = register(harness, agents, "wedged")
    schedule(harness, "wedged")
    harness.tick()  # claims the 00:01:00 slot
    with monkeypatch.context() as crash:
        # Every slot is busy when the run fires, so it waits in the ready queue; then the
        # dispatcher dies before it starts anything.
        fire = harness.svc.run_store.fire
        crash.setattr(harness.svc.run_store, "fire",
                      lambda fires, now, retention, max_running, lease, begin:
                      fire(fires, now, retention, 0, lease, begin))
        crash.setattr(harness.svc.runner, "start_waiting", lambda inline=None: [])
        harness.drain()
    assert agent.called_at == []
    assert stats(harness)["queuedTasksCount"] == 1 and stats(harness)["runningAgentsCount"] == 0
    harness.clock.set(T0 + 90_000)
    harness.tick()  # nothing expired, yet the ready queue is drained
    harness.drain()
    assert agent.called_at[0] == T0 + 90_000
    assert agent.requests()[0]["scheduledFor"] == "2030-01-01T00:01:00.000Z"
    assert runs(harness, "wedged")[-1]["status"] == "completed"
    assert "skipped" not in [r["status"] for r in runs(harness, "wedged")]


def test_an_agent_endpoint_is_checked_again_at_call_time(harness: Harness, agents: list[Agent]) -> None:
    agent = register(harness, agents, "rebound")  # accepted: local mode allows 127.0.0.1
    # Outside local mode the same endpoint is refused when the call is due, as a
    # registered host whose DNS now points inside the network would be.
    harness.configure(local_mode=False)
    assert harness.api("POST", "/api/agents/rebound/run")[0] == 202
    harness.drain()
    assert agent.called_at == []
    [run] = runs(harness, "rebound")
    assert run["status"] == "failed" and run["attempt"] == 1  # refused for good, not retried
    assert "internal address" in run["error"]
    assert harness.published.names("rebound") == ["agent:started", "agent:failed"]
    assert harness.api("GET", "/api/agents/rebound")[1]["data"]["status"] == "ERROR"


class BrokenPublisher:
    """Every publish fails, as with Redis or the management API down."""

    def publish(self, event: str, agent_id: str | None, data: dict, audience: object = None) -> None:
        raise redis.ConnectionError("Redis went away")

    def status_changed(self, audience: object = None) -> None:
        raise EndpointConnectionError(endpoint_url="https://abc123.execute-api.us-east-1.amazonaws.com/api")

    def progress(self, agent_id: str, run_id: str, data: dict) -> None:
        raise redis.ConnectionError("Redis went away")

    def run_ended(self, agent_id: str, run_id: str) -> None:
        raise redis.ConnectionError("Redis went away")


def test_a_failing_publisher_never_stops_a_run(
    harness: Harness, agents: list[Agent], caplog: pytest.LogCaptureFixture
) -> None:
    harness.svc = Services.build(
        harness.svc.settings, clock=harness.clock, redis_client=harness.redis, sqs_client=harness.sqs,
        publisher=BrokenPublisher(),
    )
    services.install(harness.svc)
    sync = register(harness, agents, "sync")
    assert harness.api("POST", "/api/agents/sync/run")[0] == 202
    harness.drain()
    assert sync.called_at == [T0]
    assert runs(harness, "sync")[0]["status"] == "completed"

    # On the callback path the completion is recorded and answered, not turned into a 5xx.
    slow = register(harness, agents, "async", default=202)
    harness.api("POST", "/api/agents/async/run")
    harness.drain(hold_timeouts=True)
    [request] = slow.requests()
    answer = report(harness, "async", request["runId"], "complete", request["callbackToken"])
    assert answer == (200, {"success": True})
    assert runs(harness, "async")[0]["status"] == "completed"
    failures = [r for r in caplog.records if r.name == "chalicelib.events" and r.exc_info]
    assert {r.exc_info[0] for r in failures if r.exc_info} == {redis.ConnectionError, EndpointConnectionError}


def test_cron_slots_start_in_their_own_dispatcher_while_slots_are_free(
    harness: Harness, agents: list[Agent]
) -> None:
    # A minute's slots must not queue behind each other in SQS as start messages: a slot
    # that fires while a concurrency slot is free calls its agent right there, on its second.
    harness.configure(max_concurrent_agents=2)
    endpoints = [register(harness, agents, f"c{i}", default=202) for i in range(3)]
    for i in range(3):
        schedule(harness, f"c{i}", "0 * * * *")  # beyond the window: the tick claims them
    harness.clock.set(T0 + 3_590_000)
    harness.tick()
    # The hour's three slots travel as one SQS message, and one dispatcher fires them.
    [fires] = harness.receive()
    assert [row[0].split("/")[0] for row in json.loads(fires["Body"])["items"]] == ["r:c0", "r:c1", "r:c2"]
    harness.dispatch([fires["Body"]])
    called = [e for e in endpoints if e.called_at]
    assert len(called) == 2 and all(e.called_at == [T0 + 3_600_000] for e in called)
    # The third waits for a slot in the ready queue; no start went through SQS.
    assert stats(harness)["runningAgentsCount"] == 2 and stats(harness)["queuedTasksCount"] == 1
    assert [json.loads(m["Body"]).get("kind") for m in harness.receive()] == ["timeout", "timeout"]


def test_a_slot_fired_without_time_to_call_is_handed_on_and_called_once(
    harness: Harness, agents: list[Agent]
) -> None:
    # An invocation that must stop in 5 s cannot wait out a 30 s agent call: the slot takes its
    # concurrency slot and its start goes through SQS to another invocation, once.
    agent = register(harness, agents, "late")
    schedule(harness, "late")
    harness.tick()
    [fire] = harness.receive()
    harness.clock.set(T0 + 60_000)
    harness.svc.dispatcher.handle_bodies([fire["Body"]], lambda: harness.clock.now_ms() + 5_000)
    assert agent.called_at == []
    assert stats(harness)["runningAgentsCount"] == 1
    [start] = harness.receive()
    assert json.loads(start["Body"])["kind"] == "start"
    harness.dispatch([start["Body"]] * 2)
    assert agent.called_at == [T0 + 60_000]
    assert [r["status"] for r in runs(harness, "late")] == ["completed"]
    assert harness.published.names("late") == ["agent:started", "agent:completed"]


def test_a_dispatcher_whose_run_ends_calls_the_next_waiting_run_itself(
    harness: Harness, agents: list[Agent]
) -> None:
    # The run that ends frees its slot in a dispatcher that is free too: it calls the waiting
    # run itself instead of handing it through SQS. A report from the agent (the API) hands on.
    harness.configure(max_concurrent_agents=1)
    first, second, third = (register(harness, agents, name, default=answer)
                            for name, answer in [("first", 200), ("second", 202), ("third", 200)])
    for name in ("first", "second", "third"):
        assert harness.api("POST", f"/api/agents/{name}/run")[0] == 202
        harness.clock.advance(1)
    [start] = harness.receive()  # only the first start: the others wait for the slot
    harness.dispatch([start["Body"]])
    assert first.called_at == [T0 + 3] and second.called_at == [T0 + 3] and third.called_at == []
    assert [json.loads(m["Body"]).get("kind") for m in harness.receive()] == ["timeout"]
    assert stats(harness)["runningAgentsCount"] == 1 and stats(harness)["queuedTasksCount"] == 1
    [request] = second.requests()
    report(harness, "second", request["runId"], "complete", request["callbackToken"])
    [handed] = harness.receive()
    assert json.loads(handed["Body"])["kind"] == "start"
    harness.dispatch([handed["Body"]])
    assert third.called_at == [T0 + 3]
    assert [runs(harness, name)[0]["status"] for name in ("first", "second", "third")] == ["completed"] * 3


def test_a_ready_entry_whose_run_is_gone_is_dropped_not_started(harness: Harness) -> None:
    keys = harness.svc.message_store.keys
    harness.redis.zadd(keys.ready, {"run_gone": 1})
    assert harness.svc.run_store.start_ready(5, T0 + 60_000) == []
    assert harness.redis.zcard(keys.ready) == 0 and harness.redis.zcard(keys.running) == 0
    assert not harness.redis.exists(keys.run("run_gone"))  # no stub run left behind
