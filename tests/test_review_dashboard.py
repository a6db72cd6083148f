"""The review dashboard: `GET /api/review` and `/api/review/live` for supervisors, and `/review` drawing them
in a real headless Chromium with the gateway's own copy of uPlot (no CDN), under the pages' CSP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.embedded_redis import free_port
from gateway.review_demo import Target, play
from handoff.agents import AgentStore
from sessions.keys import Keys
from tests.test_browser import Browser, Server, browser, expect  # noqa: F401 - fixtures
from tests.test_browser_csp import _watch
from tests.test_review import history, recorder_for, review_cli, write_all
from tests.test_twilio_messaging import ACCOUNT, AUTH_TOKEN, PUBLIC

ADMIN = "admin-token-for-the-review-dashboard"
FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # New York 10:00: the teams are open


@pytest.fixture
async def reviewed(redis_url: str, namespace: str, tmp_path: Path, redis: Redis) -> AsyncIterator[Server]:
    server = Server(redis_url, namespace, tmp_path, admin_token=ADMIN)
    await server.start()
    yield server
    await server.stop()


async def tokens(redis: Redis, namespace: str) -> tuple[str, str]:
    agents = AgentStore(redis, Keys(namespace))
    _, supervisor = await agents.add("Sue", ["billing"], ["en"], [], supervisor=True)
    _, agent = await agents.add("Alex", ["billing"], ["en"], [])
    return supervisor, agent


async def get(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_supervisors_and_the_admin_see_the_figures_and_agents_get_403(
    reviewed: Server, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    supervisor, agent = await tokens(redis, namespace)
    status, body = await get(http, f"{reviewed.base}/api/review", None)
    assert status == 401 and body["code"] == "unauthorized"
    status, body = await get(http, f"{reviewed.base}/api/review", agent)
    assert status == 403 and body["code"] == "supervisor_only"
    status, body = await get(http, f"{reviewed.base}/api/review/live", agent)
    assert status == 403
    status, body = await get(http, f"{reviewed.base}/api/review?since=30d", supervisor)
    assert status == 200 and body["empty"].startswith("No data for the last 30 days")
    status, body = await get(http, f"{reviewed.base}/api/review?since=0d", ADMIN)
    assert status == 400 and body["code"] == "invalid_since"

    await write_all(recorder_for(redis, namespace), history())
    status, body = await get(http, f"{reviewed.base}/api/review?since=30d", ADMIN)
    assert status == 200 and "empty" not in body
    # The same checklist as `handoff-gateway review --json` (tests/test_review.py's hand-built history).
    assert {(s["signal"], s["subject"]) for s in body["signals"]} == {
        ("escalation_rate_up", "orders"), ("queue_overloaded", "billing"), ("abandonment_rising", "all"),
        ("misroutes", "general"), ("repeat_contact_rising", "all"), ("not_enough_context", "all")}
    assert body["sections"]["outcomes"]["ended"] == {"contained": 28, "resolved": 11, "left_after_failure": 4,
                                                     "abandoned": 1}
    daily = body["daily"]
    assert len(daily["day"]) == 30 and sum(daily["escalations"]) == 12
    two_days_ago = daily["day"].index(daily["day"][-3])
    assert daily["escalations"][two_days_ago] == 10 and daily["abandonment_rate"][two_days_ago] == 0.1
    status, body = await get(http, f"{reviewed.base}/api/review?since=7d", supervisor)
    assert status == 200 and len(body["daily"]["day"]) == 7 and sum(body["daily"]["escalations"]) == 10

    status, live = await get(http, f"{reviewed.base}/api/review/live", supervisor)
    assert status == 200
    billing = next(q for q in live["queues"] if q["id"] == "billing")
    assert billing["depth"] == 0 and billing["agents_online"] == 0 and billing["name"] == "Billing"


async def test_the_dashboard_draws_the_charts_and_tables_in_chromium(
    browser: Browser, reviewed: Server, redis: Redis, namespace: str  # noqa: F811
) -> None:
    supervisor, agent = await tokens(redis, namespace)
    await write_all(recorder_for(redis, namespace), history())
    page = await browser.new_page()
    problems = _watch(page)
    await page.goto(f"{reviewed.base}/review")
    await page.get_by_label("Supervisor or admin token").fill(agent)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not a supervisor's")
    await page.get_by_label("Supervisor or admin token").fill(supervisor)
    await page.get_by_role("button", name="Sign in").click()
    signals = page.locator("#signals li")
    await expect(signals).to_have_count(6)
    await expect(signals.first).to_contain_text("threshold")
    # Both charts drawn by uPlot on a canvas of real size, with their series named in the legend.
    for chart in ("#chart-volume", "#chart-rates"):
        canvas = page.locator(f"{chart} canvas")
        await expect(canvas).to_have_count(1)
        width = await canvas.evaluate("c => c.width")
        assert width > 100
    await expect(page.locator("#chart-volume .u-legend")).to_contain_text("Escalations")
    live = page.locator("#live table")
    await expect(live).to_contain_text("Billing")
    await expect(page.locator("#sections")).to_contain_text("outcomes")
    await expect(page.locator("#sections")).to_contain_text("left after failure")
    # Another period: the 7-day figures replace the 30-day ones.
    await page.get_by_role("button", name="7 days").click()
    await expect(page.locator("#updated")).to_have_text("figures for the last 7d")
    # Nothing went wrong but the agent's refused sign-in (no CSP violation, no script error).
    assert [p for p in problems if "status of 403" not in p] == []


async def test_review_demo_fills_the_review_through_the_gateways_real_paths(
    start_gateway: Any, redis: Redis, redis_url: str, namespace: str
) -> None:
    """`handoff-gateway review demo`: customers on web chat and SMS, and demo agents on the agent API; the
    gateway records their outcomes as it would any customer's."""
    api_port = free_port()
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                               twilio_account_sid=ACCOUNT, twilio_sms_from="+15550100000",
                               twilio_api_base_url=f"http://127.0.0.1:{api_port}",
                               twilio_voice_from="+15550100002",
                               chat_new_conversations_per_hour_per_address=10)
    target = Target(base, PUBLIC, AUTH_TOKEN, "+15550100000", ACCOUNT, api_port, "+15550100002")
    assert await play(target, redis_url, namespace, 40) == 0
    code, out, err = await review_cli(redis_url, namespace, "--since", "1d", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["escalation"]["escalations"] >= 5, got["escalation"]
    assert set(got["escalation"]["by"]["channel"][0]) >= {"channel", "conversations", "escalations", "rate"}
    channels = {row["channel"] for row in got["escalation"]["by"]["channel"]}
    assert channels == {"webchat", "sms", "voice"}  # web chat until its limit per address, then texts
    assert got["outcomes"]["resolved_by_agent"] >= 1 and got["context"]["rated"] >= 1
