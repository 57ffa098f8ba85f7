"""Webhook signing secrets: checked at start, per message and per agent, write-only, rotated.

Every signature is verified with the `standardwebhooks` library, as a receiver would."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chalicelib.config import Settings
from chalicelib.timeutil import format_instant
from tests.conftest import Harness, message
from tests.receiver import Receiver

GLOBAL = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes
MINE = "whsec_bWluZS1vd24tc2VjcmV0LW9mLTMyLWJ5dGVzLW9rISE="  # 32 bytes
OLD = "whsec_b2xkLXNlY3JldC10aGF0LWlzLTI0LWJ5"  # 24 bytes


def at_the_present(harness: Harness) -> str:
    """Move the fake clock to real time (Standard Webhooks verifiers refuse timestamps more than
    5 minutes off), and return an instant just past it for scheduleTo."""
    harness.clock.set(int(time.time() * 1000))
    return format_instant(harness.clock.now_ms() + 1000)


def verifies(secret: str, got: object) -> bool:
    try:
        Webhook(secret).verify(got.body, got.headers)  # type: ignore[attr-defined]
    except WebhookVerificationError:
        return False
    return True


# -- WEBHOOK_SECRET at start ------------------------------------------------------------------


@pytest.mark.parametrize("secret, why", [
    ("whsec_abc", "not valid base64"),
    ("whsec_", "decodes to 0 bytes"),
    ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
    ("a-password-of-my-own", "whsec_ followed by base64"),
    (f"{GLOBAL} {OLD} {MINE}", "at most 2"),
])
def test_a_bad_webhook_secret_is_refused_at_start(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        Settings.from_env({"WEBHOOK_SECRET": secret})
    assert "WEBHOOK_SECRET" in str(refused.value)


def test_the_prod_stage_requires_a_webhook_secret() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET is required in the prod stage"):
        Settings.from_env({"PUNCTUAL_STAGE": "prod"})
    assert Settings.from_env({"PUNCTUAL_STAGE": "prod", "WEBHOOK_SECRET": GLOBAL}).webhook_secret == GLOBAL
    assert Settings.from_env({}).webhook_secret is None  # dev and local may send unsigned


def test_the_prod_stage_is_said_by_the_chalice_config() -> None:
    with open(".chalice/config.json") as f:
        stages = json.load(f)["stages"]
    assert stages["prod"]["environment_variables"]["PUNCTUAL_STAGE"] == "prod"


# -- per message ------------------------------------------------------------------------------


def test_a_messages_own_secret_signs_its_delivery_and_is_never_shown(
    harness: Harness, receiver: Receiver
) -> None:
    harness.configure(webhook_secret=GLOBAL)
    soon = at_the_present(harness)
    body = {**message("own", soon, receiver.url + "/a"), "webhookSecret": MINE}
    assert harness.post(body).status_code == 200
    harness.post(message("global", soon, receiver.url + "/b"))
    for shown in (harness.get("/messages/own"), harness.get("/messages")):
        assert "whsec_" not in shown.body.decode() and "Secret" not in shown.body.decode()
    harness.drain()
    [own] = receiver.for_path("/a")
    [other] = receiver.for_path("/b")
    assert verifies(MINE, own) and not verifies(GLOBAL, own)  # the other receivers' key signs nothing of it
    assert verifies(GLOBAL, other) and not verifies(MINE, other)
    shown = harness.get("/messages/own")
    assert json.loads(shown.body)["status"] == "delivered" and "whsec_" not in shown.body.decode()


@pytest.mark.parametrize("secret, why", [
    ("whsec_abc", "webhookSecret: what follows whsec_ is not valid base64"),
    ("whsec_", "webhookSecret decodes to 0 bytes"),
    (42, "webhookSecret must be a string"),
])
def test_a_bad_message_secret_is_a_400_that_stores_nothing(
    harness: Harness, receiver: Receiver, secret: object, why: str
) -> None:
    response = harness.post({**message("bad", "2030-01-01T00:01:00Z", receiver.url), "webhookSecret": secret})
    assert response.status_code == 400
    assert why in json.loads(response.body)["detail"]
    assert harness.get("/messages/bad").status_code == 404


# -- per agent ---------------------------------------------------------------------------------


def test_an_agents_own_secret_signs_its_calls_and_is_never_shown(
    harness: Harness, receiver: Receiver
) -> None:
    harness.configure(webhook_secret=GLOBAL)
    at_the_present(harness)
    status, _ = harness.api("POST", "/api/agents", {
        "id": "signed", "name": "S", "endpointUrl": receiver.url + "/agent", "webhookSecret": MINE,
    })
    assert status == 201
    harness.api("POST", "/api/agents/signed/schedule", {"cronExpression": "0 * * * *"})
    for path in ("/api/agents/signed", "/api/agents", "/api/agents/signed/schedule"):
        status, shown = harness.api("GET", path)
        text = json.dumps(shown)
        assert status == 200 and "whsec_" not in text and "webhookSecret" not in text
    harness.api("POST", "/api/agents/signed/run")
    harness.drain(hold_timeouts=True)
    [call] = receiver.wait_for(1)
    assert "callbackToken" in call.json()  # type: ignore[operator]
    assert verifies(MINE, call) and not verifies(GLOBAL, call)
    assert all("whsec_" not in json.dumps(data) for _, data in harness.published.events)
    # null gives it back to WEBHOOK_SECRET.
    status, changed = harness.api("PATCH", "/api/agents/signed", {"webhookSecret": None})
    assert status == 200 and "webhookSecret" not in changed["data"]
    assert harness.svc.agent_store.get("signed").webhook_secret is None


def test_a_bad_agent_secret_is_a_400_that_changes_nothing(harness: Harness, receiver: Receiver) -> None:
    status, body = harness.api("POST", "/api/agents", {
        "id": "a", "name": "A", "endpointUrl": receiver.url, "webhookSecret": "whsec_abc",
    })
    assert status == 400 and "webhookSecret" in body["error"] and "base64" in body["error"]
    assert harness.api("GET", "/api/agents/a")[0] == 404
    harness.api("POST", "/api/agents", {"id": "a", "name": "A", "endpointUrl": receiver.url,
                                        "webhookSecret": MINE})
    status, body = harness.api("PATCH", "/api/agents/a", {"webhookSecret": "whsec_"})
    assert status == 400 and "decodes to 0 bytes" in body["error"]
    assert harness.svc.agent_store.get("a").webhook_secret == MINE


# -- rotation ----------------------------------------------------------------------------------


def test_during_a_change_both_secrets_sign_and_each_verifies(harness: Harness, receiver: Receiver) -> None:
    harness.configure(webhook_secret=f"{GLOBAL}  {OLD}")
    soon = at_the_present(harness)
    harness.post(message("rotating", soon, receiver.url))
    harness.post({**message("rotating-own", soon, receiver.url + "/own"), "webhookSecret": f"{MINE} {OLD}"})
    harness.drain()
    got = receiver.wait_for(2)
    for request in got:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
    [shared] = receiver.for_path("/")
    [own] = receiver.for_path("/own")
    assert verifies(GLOBAL, shared) and verifies(OLD, shared)  # a receiver on either secret accepts it
    assert verifies(MINE, own) and verifies(OLD, own) and not verifies(GLOBAL, own)
