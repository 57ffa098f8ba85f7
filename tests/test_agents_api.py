"""The agent API's routes, shapes and refusals, through Chalice's test client with real Redis."""

from __future__ import annotations

import pytest

from tests.conftest import T0, Harness

ENDPOINT = "http://127.0.0.1:9/agent"


def make_agent(h: Harness, agent_id: str = "agent-123", **extra: object) -> dict:
    status, body = h.api(
        "POST",
        "/api/agents",
        {"id": agent_id, "name": "Content Creator Agent", "endpointUrl": ENDPOINT, **extra},
    )
    assert status == 201, body
    return body["data"]


def test_register_read_update_list_delete(harness: Harness) -> None:
    created = make_agent(harness, description="writes posts", timeoutSeconds=60)
    assert created["id"] == "agent-123" and created["status"] == "IDLE"
    assert created["timeoutSeconds"] == 60 and created["scheduleEnabled"] is False
    status, body = harness.api("POST", "/api/agents", {"name": "anon", "endpointUrl": ENDPOINT})
    assert status == 201 and body["data"]["id"].startswith("agent_")
    assert (
        harness.api("POST", "/api/agents", {"id": "agent-123", "name": "x", "endpointUrl": ENDPOINT})[0]
        == 409
    )
    status, body = harness.api(
        "PATCH", "/api/agents/agent-123", {"name": "Renamed", "timezone": "Europe/Lisbon"}
    )
    assert status == 200 and body["data"]["name"] == "Renamed" and body["data"]["timezone"] == "Europe/Lisbon"
    assert harness.api("GET", "/api/agents/agent-123")[1]["data"]["name"] == "Renamed"
    status, body = harness.api("GET", "/api/agents?limit=1")
    assert status == 200 and body["count"] == 2 and len(body["data"]) == 1 and body["nextCursor"]
    status, body = harness.api("GET", f"/api/agents?limit=1&cursor={body['nextCursor']}")
    assert len(body["data"]) == 1 and body["nextCursor"] is not None
    status, body = harness.api("DELETE", "/api/agents/agent-123")
    assert status == 200 and body == {"success": True, "message": "Agent deleted successfully"}
    assert harness.api("GET", "/api/agents/agent-123")[0] == 404


@pytest.mark.parametrize(
    "method, path",
    [
        ("PATCH", "/api/agents/agent-123/schedule/agent-123/pause"),
        ("DELETE", "/api/agents/agent-123/schedule"),
        ("DELETE", "/api/agents/agent-123"),
    ],
)
def test_a_cancelled_slot_leaves_nothing_behind(harness: Harness, method: str, path: str) -> None:
    make_agent(harness)
    harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "0 0 1 1 *"})  # a year away
    assert harness.redis.zcard(harness.svc.message_store.keys.due) == 1
    assert harness.api(method, path)[0] == 200
    assert harness.redis.zcard(harness.svc.message_store.keys.due) == 0
    assert harness.redis.keys(harness.svc.message_store.keys.run("*")) == []


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"endpointUrl": ENDPOINT}, "name must be a non-empty string"),
        ({"name": "a"}, "endpointUrl must be a non-empty http(s) URL"),
        ({"name": "a", "endpointUrl": "ftp://x"}, "http or https"),
        ({"name": "a", "endpointUrl": ENDPOINT, "id": "a/b"}, "must not contain '/'"),
        # '?' would end the path of the run's callbackUrl: its reports could never arrive.
        ({"name": "a", "endpointUrl": ENDPOINT, "id": "a?b"}, "must not contain '?'"),
        ({"name": "a", "endpointUrl": ENDPOINT, "id": "a#b"}, "must not contain '#'"),
        ({"name": "a", "endpointUrl": ENDPOINT, "id": "schedule"}, "reserved"),
        ({"name": "a", "endpointUrl": ENDPOINT, "timezone": "Nowhere/City"}, "not a known IANA time zone"),
        ({"name": "a", "endpointUrl": ENDPOINT, "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"name": "a", "endpointUrl": ENDPOINT, "timeoutSeconds": "60"}, "timeoutSeconds"),
        ({"name": "a", "endpointUrl": ENDPOINT, "colour": "red"}, "unknown field(s): colour"),
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_registration_refused(harness: Harness, body: object, fragment: str) -> None:
    status, answer = harness.api("POST", "/api/agents", body)
    assert status == 400
    assert answer["success"] is False and fragment in answer["error"]
    assert harness.redis.dbsize() == 0


def test_update_refusals_change_nothing(harness: Harness) -> None:
    make_agent(harness)
    before = harness.api("GET", "/api/agents/agent-123")[1]
    for body, fragment in [
        ({}, "nothing to change"),
        ({"id": "b"}, "cannot be changed"),
        ({"endpointUrl": "nope"}, "http or https"),
        ({"name": ""}, "name"),
    ]:
        status, answer = harness.api("PATCH", "/api/agents/agent-123", body)
        assert status == 400 and fragment in answer["error"]
    assert harness.api("GET", "/api/agents/agent-123")[1] == before
    assert harness.api("PATCH", "/api/agents/ghost", {"name": "x"})[0] == 404


def test_schedule_answers_as_the_spec_says(harness: Harness) -> None:
    make_agent(harness)
    harness.clock.set(T0 + 7_500)  # 2030-01-01T00:00:07.5Z
    status, body = harness.api(
        "POST",
        "/api/agents/agent-123/schedule",
        {"cronExpression": "*/5 * * * *", "priority": "HIGH", "enabled": True},
    )
    assert status == 200
    assert body == {
        "success": True,
        "data": {
            "id": "agent-123",
            "name": "Content Creator Agent",
            "scheduleExpression": "*/5 * * * *",
            "scheduleEnabled": True,
            "nextRunAt": "2030-01-01T00:05:00.000Z",
        },
    }
    status, body = harness.api("GET", "/api/agents/agent-123/schedule")
    assert status == 200
    data = body["data"]
    assert data["status"] == "IDLE" and data["lastRunAt"] is None
    assert data["taskDetails"] == {
        "agentId": "agent-123",
        "agentName": "Content Creator Agent",
        "priority": 3,
        "nextRunTime": "2030-01-01T00:05:00.000Z",
        "retryCount": 0,
        "lastError": None,
        "backoffUntil": None,
        "isRunning": False,
        "isPaused": False,
        "jobId": "agent-123",
    }


def test_schedule_in_a_time_zone_and_replace(harness: Harness) -> None:
    make_agent(harness, timezone="America/Sao_Paulo")
    body = harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "0 9 * * MON-FRI"})[1]
    assert body["data"]["nextRunAt"] == "2030-01-01T12:00:00.000Z"  # 09:00 in São Paulo (-03:00)
    body = harness.api(
        "POST",
        "/api/agents/agent-123/schedule",
        {"cronExpression": "@daily", "timezone": "Asia/Tokyo", "jobId": "job-456"},
    )[1]
    assert body["data"]["nextRunAt"] == "2030-01-01T15:00:00.000Z"
    info = harness.api("GET", "/api/agents/agent-123/schedule")[1]["data"]
    assert info["taskDetails"]["jobId"] == "job-456" and info["taskDetails"]["priority"] == 2
    # The replaced slot is gone with its run: one pending slot in the due index, one run hash.
    assert harness.redis.zcard(harness.svc.message_store.keys.due) == 1
    assert len(harness.redis.keys(harness.svc.message_store.keys.run("*"))) == 1
    assert harness.tick()["claimed"] == 0


def test_a_new_agent_time_zone_moves_the_pending_slot(harness: Harness) -> None:
    make_agent(harness)  # UTC
    body = harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "0 9 * * *"})[1]
    assert body["data"]["nextRunAt"] == "2030-01-01T09:00:00.000Z"
    status, body = harness.api("PATCH", "/api/agents/agent-123", {"timezone": "America/New_York"})
    assert status == 200 and body["data"]["nextRunAt"] == "2030-01-01T14:00:00.000Z"  # 09:00 at -05:00
    due = harness.redis.zrange(harness.svc.message_store.keys.due, 0, -1, withscores=True)
    assert [score for _, score in due] == [1_893_506_400_000]  # the old slot is gone, not doubled
    assert len(harness.redis.keys(harness.svc.message_store.keys.run("*"))) == 1
    # A schedule with its own zone keeps its slot.
    harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "0 9 * * *", "timezone": "UTC"})
    body = harness.api("PATCH", "/api/agents/agent-123", {"timezone": "Asia/Tokyo"})[1]
    assert body["data"]["nextRunAt"] == "2030-01-01T09:00:00.000Z"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "cronExpression is required"),
        ({"cronExpression": "every minute"}, "5 fields"),
        ({"cronExpression": "99 * * * *"}, "not valid"),
        ({"cronExpression": "0 0 31 2 *"}, "never fires"),
        ({"cronExpression": "R * * * *"}, "random ('R') fields are not supported; give the minute"),
        ({"cronExpression": "H * * * *"}, "hashed ('H') fields are not supported; give the minute"),
        ({"cronExpression": "* * * * *", "priority": "URGENT"}, "priority must be one of"),
        ({"cronExpression": "* * * * *", "priority": 3}, "priority must be one of"),
        ({"cronExpression": "* * * * *", "enabled": "yes"}, "enabled must be true or false"),
        ({"cronExpression": "* * * * *", "timezone": "Mars/Base"}, "time zone"),
        ({"cronExpression": "* * * * *", "jobId": ""}, "jobId"),
        ({"cronExpression": "* * * * *", "every": 5}, "unknown field(s): every"),
    ],
)
def test_schedule_refused(harness: Harness, body: dict, fragment: str) -> None:
    make_agent(harness)
    status, answer = harness.api("POST", "/api/agents/agent-123/schedule", body)
    assert status == 400 and fragment in answer["error"], answer
    assert harness.api("GET", "/api/agents/agent-123/schedule")[1]["data"]["scheduleExpression"] is None
    assert harness.redis.zcard(harness.svc.message_store.keys.due) == 0


def test_unknown_agents_and_missing_schedules_are_404(harness: Harness) -> None:
    cron = {"cronExpression": "* * * * *"}
    status, body = harness.api("POST", "/api/agents/ghost/schedule", cron)
    assert status == 404 and "register it first" in body["error"]
    assert "AGENT_ENDPOINT_TEMPLATE" in body["error"]
    assert harness.api("GET", "/api/agents/ghost/schedule")[0] == 404
    assert harness.api("DELETE", "/api/agents/ghost/schedule")[0] == 404
    assert harness.api("PATCH", "/api/agents/ghost/schedule/ghost/pause")[0] == 404
    assert harness.api("PATCH", "/api/agents/ghost/schedule/ghost/resume")[0] == 404
    assert harness.api("POST", "/api/agents/ghost/run")[0] == 404
    assert harness.api("GET", "/api/agents/ghost/runs")[0] == 404
    assert "register it first" in harness.api("POST", "/api/agents/ghost/run")[1]["error"]
    make_agent(harness)
    # The spec's monitoring loop reads every agent's schedule: one without answers, not enabled.
    status, body = harness.api("GET", "/api/agents/agent-123/schedule")
    assert status == 200 and body["data"]["scheduleEnabled"] is False and body["data"]["nextRunAt"] is None
    assert body["data"]["scheduleExpression"] is None and body["data"]["taskDetails"]["isPaused"] is False
    assert harness.api("DELETE", "/api/agents/agent-123/schedule")[0] == 404
    assert harness.api("PATCH", "/api/agents/agent-123/schedule/agent-123/pause")[0] == 404


def test_unschedule(harness: Harness) -> None:
    make_agent(harness)
    harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "* * * * *"})
    status, body = harness.api("DELETE", "/api/agents/agent-123/schedule")
    assert status == 200 and body == {"success": True, "message": "Agent unscheduled successfully"}
    assert harness.api("GET", "/api/agents/agent-123/schedule")[1]["data"]["scheduleEnabled"] is False
    assert harness.api("GET", "/api/agents/schedule/status")[1]["data"]["scheduledTasksCount"] == 0


def test_pause_and_resume(harness: Harness) -> None:
    make_agent(harness)
    harness.api(
        "POST", "/api/agents/agent-123/schedule", {"cronExpression": "*/5 * * * *", "jobId": "job-456"}
    )
    assert harness.api("PATCH", "/api/agents/agent-123/schedule/other-job/pause")[0] == 404
    status, body = harness.api("PATCH", "/api/agents/agent-123/schedule/job-456/resume")
    assert status == 400 and "not paused" in body["error"]
    status, body = harness.api("PATCH", "/api/agents/agent-123/schedule/job-456/pause")
    assert status == 200
    assert body == {
        "success": True,
        "message": "Job job-456 paused successfully",
        "data": {"agentId": "agent-123", "jobId": "job-456", "status": "paused"},
    }
    assert harness.api("PATCH", "/api/agents/agent-123/schedule/job-456/pause")[0] == 409
    info = harness.api("GET", "/api/agents/agent-123/schedule")[1]["data"]
    assert info["status"] == "PAUSED" and info["taskDetails"]["isPaused"] and info["nextRunAt"] is None
    assert harness.api("GET", "/api/agents/schedule/paused")[1] == {
        "success": True,
        "data": [{"agentId": "agent-123", "jobId": "job-456"}],
    }
    # While paused, its slots never fire.
    harness.clock.set(T0 + 3_600_000)
    harness.tick()
    harness.drain()
    assert harness.api("GET", "/api/agents/agent-123/runs")[1]["data"] == []
    harness.clock.set(T0 + 3_600_000 + 61_000)  # resume computes the next slot from now
    status, body = harness.api("PATCH", "/api/agents/agent-123/schedule/job-456/resume")
    assert status == 200
    assert body == {
        "success": True,
        "message": "Job job-456 resumed successfully",
        "data": {
            "agentId": "agent-123",
            "jobId": "job-456",
            "status": "resumed",
            "nextRunAt": "2030-01-01T01:05:00.000Z",
        },
    }
    assert harness.api("GET", "/api/agents/schedule/paused")[1]["data"] == []


def test_status(harness: Harness) -> None:
    status, body = harness.api("GET", "/api/agents/schedule/status")
    assert status == 200
    assert body == {
        "success": True,
        "data": {
            "isRunning": False,
            "scheduledTasksCount": 0,
            "runningAgentsCount": 0,
            "queuedTasksCount": 0,
            "maxConcurrentAgents": 5,
            "pausedJobsCount": 0,
        },
    }
    for i in range(3):
        make_agent(harness, f"a{i}")
        harness.api("POST", f"/api/agents/a{i}/schedule", {"cronExpression": "* * * * *"})
    harness.api("PATCH", "/api/agents/a0/schedule/a0/pause")
    harness.tick()
    data = harness.api("GET", "/api/agents/schedule/status")[1]["data"]
    assert data["isRunning"] is True and data["scheduledTasksCount"] == 3 and data["pausedJobsCount"] == 1
    harness.clock.advance(10 * 60_000)  # no tick for ten minutes: the scheduler is not running
    assert harness.api("GET", "/api/agents/schedule/status")[1]["data"]["isRunning"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/api/agents",
        "/api/agents/x",
        "/api/agents/schedule/status",
        "/api/agents/schedule/paused",
        "/api/agents/x/schedule",
        "/api/agents/x/runs",
    ],
)
def test_admin_token_required(harness: Harness, path: str) -> None:
    status, body = harness.api("GET", path, token="wrong")
    assert status == 401 and body == {"success": False, "error": "invalid token"}


@pytest.mark.parametrize("zone", ["America", "Etc"])
def test_a_folder_of_the_zone_database_is_no_time_zone(harness: Harness, zone: str) -> None:
    # ZoneInfo opens it as a file and raises IsADirectoryError: it was a 500.
    body = {"name": "a", "endpointUrl": ENDPOINT, "timezone": zone}
    status, answer = harness.api("POST", "/api/agents", body)
    assert status == 400 and "not a known IANA time zone" in answer["error"], answer
    make_agent(harness)
    status, answer = harness.api("POST", "/api/agents/agent-123/schedule",
                                 {"cronExpression": "* * * * *", "timezone": zone})
    assert status == 400 and "not a known IANA time zone" in answer["error"], answer


def test_an_agent_never_registered_is_registered_from_the_template(harness: Harness) -> None:
    harness.configure(agent_endpoint_template="http://127.0.0.1:9/run/{agentId}")
    status, body = harness.api("POST", "/api/agents/agent-123/schedule",
                               {"cronExpression": "0 */6 * * *", "priority": "HIGH"})
    assert status == 200 and body["data"]["id"] == "agent-123" and body["data"]["scheduleEnabled"] is True
    agent = harness.api("GET", "/api/agents/agent-123")[1]["data"]
    assert agent["endpointUrl"] == "http://127.0.0.1:9/run/agent-123" and agent["name"] == "agent-123"
    # Running one registers it too; the id goes into the URL percent-encoded.
    assert harness.api("POST", "/api/agents/a:b@c/run")[0] == 202
    assert harness.api("GET", "/api/agents/a:b@c")[1]["data"]["endpointUrl"] == "http://127.0.0.1:9/run/a%3Ab%40c"
    # An id no agent can have is not registered: it is not found, as without the template.
    assert harness.api("POST", "/api/agents/%C3%99/run")[0] == 404
    # A registered agent keeps its own endpoint.
    make_agent(harness, "own")
    harness.api("POST", "/api/agents/own/schedule", {"cronExpression": "* * * * *"})
    assert harness.api("GET", "/api/agents/own")[1]["data"]["endpointUrl"] == ENDPOINT


def test_a_template_that_expands_to_a_refused_url_is_a_400(harness: Harness) -> None:
    harness.configure(agent_endpoint_template="http://127.0.0.1:9/run/{agentId}", local_mode=False)
    status, body = harness.api("POST", "/api/agents/agent-123/schedule", {"cronExpression": "* * * * *"})
    assert status == 400 and "AGENT_ENDPOINT_TEMPLATE" in body["error"], body
    assert harness.api("GET", "/api/agents/agent-123")[0] == 404
