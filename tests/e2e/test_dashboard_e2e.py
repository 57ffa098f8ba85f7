"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against `make run`'s stack.

Playwright's own browser download is not used: `make test` installs Debian's chromium when it is
missing (emulator/ensure_chromium.sh) and the browser is launched on that binary. Every wait is
for something the page shows, with a timeout; nothing sleeps for the clock. Each test keeps a
screenshot of the page in its temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from emulator.launcher import TOKEN, Stack
from tests.receiver import Receiver

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The page reads webhook counts and lists every 5 s (deliveries publish no event): a wait for
# something it shows must cover a couple of those.
SHOWN = 20_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A stack of its own: the messages and agents left here must not meet the other e2e tests.
    running = Stack(Path(tmp_path_factory.mktemp("dashboard-stack"))).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (emulator/ensure_chromium.sh)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    opened.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    context.close()
    assert errors == [], f"the page's script threw: {errors}"


@pytest.fixture
def agent_endpoint() -> Iterator[Receiver]:
    # Runs answer 202: the test reports progress and completion to the run's callbackUrl.
    rcv = Receiver(responder=lambda path, n: (202, {}))
    yield rcv
    rcv.stop()


def sign_in(page: Page, stack: Stack, token: str = TOKEN) -> None:
    page.goto(stack.url + "/dashboard")
    page.fill("#token", token)
    page.click("#login button[type=submit]")


def agent_row(page: Page, agent_id: str) -> Any:
    return page.locator(f'#agents tr[data-agent-id="{agent_id}"]')


def register(stack: Stack, agent_id: str, url: str, cron: str | None = None) -> None:
    body = {"id": agent_id, "name": f"{agent_id} agent", "endpointUrl": url}
    created = stack.call("POST", "/api/agents", body)
    assert created.status_code == 201, created.text
    if cron:
        schedule = {"cronExpression": cron, "priority": "HIGH"}
        scheduled = stack.call("POST", f"/api/agents/{agent_id}/schedule", schedule)
        assert scheduled.status_code == 200, scheduled.text


def schedule_message(stack: Stack, message_id: str, url: str, due: datetime) -> None:
    body = {"id": message_id, "scheduleTo": due.isoformat().replace("+00:00", "Z"), "payload": {"n": 1},
            "webhookUrl": url}
    response = stack.call("POST", "/messages", body)
    assert response.status_code == 200, response.text


def report(run: dict[str, Any], kind: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {run['callbackToken']}"}
    response = requests.post(f"{run['callbackUrl']}/{kind}", json=body, headers=headers, timeout=5)
    assert response.status_code == 200, response.text


def test_a_wrong_token_is_refused_and_the_right_one_shows_the_counts(page: Page, stack: Stack) -> None:
    page.goto(stack.url + "/dashboard")
    expect(page.locator("#token")).to_be_visible()  # it asks for the token
    expect(page.locator("#board")).to_be_hidden()

    sign_in(page, stack, "not-the-token")
    expect(page.locator("#login-error")).to_contain_text("Token refused")
    expect(page.locator("#board")).to_be_hidden()

    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in(page, stack)
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#login-error")).to_be_hidden()
    expect(page.locator("#count-pending .value")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#count-overdue .value")).to_have_text(re.compile(r"^(\d+|—)$"))
    expect(page.locator("#scheduler-state")).to_have_text("scheduler: running", timeout=SHOWN)
    expect(page.locator("#live-state")).to_have_text("live")
    # Connected with a one-time ticket: the token never appears in a URL (nor in access logs).
    assert sockets and all("ticket=" in url and TOKEN not in url for url in sockets), sockets

    # The token stays for the tab (sessionStorage): a reload opens the board without asking.
    page.reload()
    expect(page.locator("#board")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('punctual.token')") == TOKEN


def test_a_run_started_from_the_page_shows_its_progress_live(
    page: Page, stack: Stack, agent_endpoint: Receiver
) -> None:
    register(stack, "dash-progress", agent_endpoint.url + "/work")
    sign_in(page, stack)
    row = agent_row(page, "dash-progress")
    expect(row).to_have_attribute("data-live", "", timeout=SHOWN)  # its events now reach the page

    row.locator("button[data-action=run]").click()
    [call] = agent_endpoint.wait_for(1, timeout=15)
    run = call.json()
    assert isinstance(run, dict)
    shown = page.locator('#runs li[data-agent-id="dash-progress"]')
    bar = shown.locator("progress")
    for percent in (30, 60, 100):
        report(run, "progress", {"progress": percent, "message": f"step at {percent}"})
        expect(bar).to_have_attribute("value", str(percent))
        expect(shown).to_contain_text(f"{percent} %")
    report(run, "complete", {"result": {"ok": True}})
    expect(shown).to_have_attribute("data-status", "completed")
    expect(row.locator(".status")).to_have_text("COMPLETED")


def test_a_delivered_message_appears(page: Page, stack: Stack, receiver: Receiver) -> None:
    sign_in(page, stack)
    expect(page.locator("#board")).to_be_visible()
    # Due a little later, so the page sees it pending before it is delivered.
    due = datetime.now(UTC) + timedelta(seconds=12)
    schedule_message(stack, "dash-delivered", receiver.url + "/hook", due)
    expect(page.locator('#pending tr[data-message-id="dash-delivered"]')).to_be_visible(timeout=SHOWN)
    delivered = page.locator('#recent tr[data-message-id="dash-delivered"]')
    expect(delivered).to_have_attribute("data-status", "delivered", timeout=SHOWN + 12_000)
    expect(page.locator('#pending tr[data-message-id="dash-delivered"]')).to_have_count(0)
    assert [r.path for r in receiver.received] == ["/hook"]


def test_pause_and_resume_an_agent_from_the_page(page: Page, stack: Stack, agent_endpoint: Receiver) -> None:
    register(stack, "dash-pause", agent_endpoint.url + "/work", cron="0 0 1 1 *")
    sign_in(page, stack)
    row = agent_row(page, "dash-pause")
    expect(row.locator("td[data-label=Priority]")).to_have_text("HIGH", timeout=SHOWN)

    row.locator("button[data-action=pause]").click()
    expect(row.locator(".status")).to_have_text("PAUSED")
    schedule = stack.call("GET", "/api/agents/dash-pause/schedule").json()["data"]
    assert schedule["status"] == "PAUSED" and schedule["taskDetails"]["isPaused"] is True

    row.locator("button[data-action=resume]").click()
    expect(row.locator("button[data-action=pause]")).to_be_visible()
    expect(row.locator(".status")).not_to_have_text("PAUSED")
    schedule = stack.call("GET", "/api/agents/dash-pause/schedule").json()["data"]
    assert schedule["taskDetails"]["isPaused"] is False


def test_cancel_a_message_from_the_page(page: Page, stack: Stack, receiver: Receiver) -> None:
    schedule_message(stack, "dash-cancel", receiver.url + "/never", datetime(2030, 12, 25, tzinfo=UTC))
    sign_in(page, stack)
    row = page.locator('#pending tr[data-message-id="dash-cancel"]')
    cancel = row.locator("button[data-action=cancel]")
    cancel.click()
    expect(cancel).to_have_text("Confirm cancel")  # one click alone cancels nothing
    assert stack.call("GET", "/messages/dash-cancel").status_code == 200
    # The list is redrawn by its next refresh (every 5 s): the new button still asks.
    page.wait_for_function("button => !button.isConnected", arg=cancel.element_handle(), timeout=SHOWN)
    expect(cancel).to_have_text("Confirm cancel")
    cancel.click()
    expect(row).to_have_count(0)
    assert stack.call("GET", "/messages/dash-cancel").status_code == 404


def test_what_this_api_does_not_serve_is_shown_as_not_available(page: Page, stack: Stack) -> None:
    # A deployment from before GET /stats and the failed listing (its GET /messages ignored the
    # status filter and listed pending messages): the rest of the page still works.
    page.route("**/stats", lambda route: route.fulfill(status=404, json={"detail": "not found"}))
    pending = {"scheduledJobs": [], "count": 0, "nextCursor": None}
    page.route(re.compile(r"/messages\?status=failed"), lambda route: route.fulfill(json=pending))
    sign_in(page, stack)
    expect(page.locator("#chart")).to_contain_text("Not available")
    expect(page.locator("#count-pending .value")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#failed")).to_contain_text("Not available")
    expect(page.locator("#notice")).to_be_hidden()


def test_a_phone_width_window_does_not_scroll_sideways(
    browser: Browser, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    long_id = "dash-phone-" + "x" * 120
    schedule_message(stack, long_id, receiver.url + "/" + "y" * 200, datetime(2030, 12, 25, tzinfo=UTC))
    long_agent = "dash-phone-agent-with-a-rather-long-identifier"
    register(stack, long_agent, receiver.url + "/work", cron="0 0 1 1 *")
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    phone = context.new_page()
    try:
        sign_in(phone, stack)
        expect(phone.locator(f'#pending tr[data-message-id="{long_id}"]')).to_be_visible(timeout=SHOWN)
        expect(agent_row(phone, long_agent)).to_be_visible()
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        phone.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
        assert overflow <= 0
        # One column: the cards stack instead of sitting side by side.
        boxes = [phone.locator(f"main > section:nth-of-type({n})").bounding_box() for n in (1, 2)]
        assert boxes[0] and boxes[1] and boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]
    finally:
        context.close()


def test_the_counts_and_the_chart_show_what_stats_says(page: Page, stack: Stack) -> None:
    # GET /stats answered with known figures, so what the page draws can be checked exactly.
    minutes = [{"minute": f"2030-12-25T09:{m:02d}:00Z", "delivered": 0, "failed": 0, "retried": 0,
                "latenessP50Ms": None, "latenessP99Ms": None} for m in range(60)]
    minutes[-2] = {**minutes[-2], "delivered": 8, "failed": 2, "retried": 3,
                   "latenessP50Ms": 4, "latenessP99Ms": 40}
    minutes[-1] = {**minutes[-1], "delivered": 4, "latenessP50Ms": 2, "latenessP99Ms": 10}
    counts = {"scheduled": 5, "queued": 1, "delivering": 1, "delivered": 12, "failed": 2,
              "pending": 7, "overdue": 3}
    stats = {"messages": counts, "minutes": minutes, "agentRuns": {"completed": 3, "failed": 1}}
    page.route("**/stats", lambda route: route.fulfill(json=stats))
    sign_in(page, stack)
    for name, value in counts.items():
        expect(page.locator(f"#count-{name} .value")).to_have_text(str(value))
    bars = page.locator("#chart rect.delivered")
    expect(bars).to_have_count(60)
    tallest = bars.nth(58)
    expect(tallest.locator("title")).to_have_text(re.compile(r"8 delivered, 2 failed, 3 retried$"))
    heights = [float(bars.nth(n).get_attribute("height") or 0) for n in (57, 58, 59)]
    assert heights[0] == 0 and heights[1] > heights[2] > 0
    expect(page.locator("#chart figcaption").nth(1)).to_contain_text("max 40")
    assert page.locator("#chart polyline.latenessP99Ms").get_attribute("points").count(",") == 2
    expect(page.locator("#chart rect.mark.latenessP99Ms")).to_have_count(2)
    expect(page.locator("#chart rect.mark.latenessP99Ms title").first).to_contain_text("lateness p99 40 ms")
    expect(page.locator("#agent-runs")).to_have_text("Agent runs by outcome: completed 3, failed 1")


def test_replay_a_failed_message_from_the_page(page: Page, stack: Stack) -> None:
    if "failedMessages" not in stack.call("GET", "/messages?status=failed").json():
        pytest.skip("this stack has no failed listing and replay yet (issue 19, item 2)")
    # The first call is refused for good (410: not retried); the replay's call succeeds.
    rcv = Receiver(responder=lambda path, n: (410 if n == 1 else 200, {}))
    try:
        schedule_message(stack, "dash-replay", rcv.url + "/flaky", datetime.now(UTC))
        stack.wait_until("/messages/dash-replay", lambda m: m["status"] == "failed")
        sign_in(page, stack)
        failed = page.locator('#failed tr[data-message-id="dash-replay"]')
        expect(failed).to_contain_text("410", timeout=SHOWN)
        failed.locator("button[data-action=replay]").click()
        expect(failed).to_have_count(0, timeout=SHOWN)
        recent = page.locator('#recent tr[data-message-id="dash-replay"]')
        expect(recent).to_have_attribute("data-status", "delivered", timeout=SHOWN)
        # Its attempts: the refused call, then the replay's.
        recent.locator("summary").click()
        expect(recent.locator(".attempts li")).not_to_have_count(0)
        expect(recent.locator(".attempts")).to_contain_text("410")
        assert len(rcv.wait_for(2)) == 2
        # The same webhook-id on both calls: receivers dedupe on it.
        assert {r.headers["webhook-id"] for r in rcv.received} == {"dash-replay"}
    finally:
        rcv.stop()
