"""``GET /metrics``, scraped from real gateways on a real Redis and read with Prometheus' own text parser."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.embedded_redis import free_port
from handoff.queues import QueueStore
from sessions.keys import Keys
from tests.chat import connect
from tests.conftest import make_settings
from tests.test_desk import AgentClient, add_agent
from tests.test_handoff_webchat import FRIDAY_MORNING
from tests.test_twilio_messaging import (
    TwilioStandIn,
    post,
    sms_form,
    twilio_api,  # noqa: F401 - a fixture
    with_agent,
)
from tests.test_twilio_messaging import start as start_with_twilio

METRICS_TOKEN = "metrics-token-for-tests-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, base: str, **headers: str) -> Samples:
    async with http.get(f"{base}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; a labelled series nobody has touched yet is absent, which means 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def test_a_web_chat_handoff_is_counted_once_and_its_queue_shows_it_waiting(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    before = await scrape(http, base)
    handoff = {"reason": "explicit_request", "queue": "general", "channel": "webchat"}
    assert value(before, "hg_handoffs_total", **handoff) == 0
    assert value(before, "hg_queue_depth", queue="general") == 0 and value(before, "hg_desk_up") == 1

    chat = await connect(http, base)
    await chat.say("I want to talk to a human")
    await chat.say_until_handoff("agent please")
    await chat.send("hello? still there?")  # no second handoff: the conversation already left the bot
    during = await scrape(http, base)
    assert value(during, "hg_handoffs_total", **handoff) == 1
    assert sum(v for (n, _), v in during.items() if n == "hg_handoffs_total") == 1
    assert value(during, "hg_queue_depth", queue="general") == 1
    assert 0 <= value(during, "hg_queue_oldest_wait_seconds", queue="general") < 30
    assert value(during, "hg_agents_online", queue="general") == 0
    ws = {"route": "/ws/chat", "channel": "webchat"}
    assert value(during, "hg_websocket_connections_open", **ws) == 1
    assert value(during, "hg_bot_response_seconds_count", bot="faq") == 2  # two turns, the bot's
    assert value(during, "hg_redis_step_seconds_count", step="batch") > 0

    await chat.ws.close()
    for _ in range(50):
        after = await scrape(http, base)
        if value(after, "hg_websocket_connections_open", **ws) == 0:
            break
        await asyncio.sleep(0.05)
    assert value(after, "hg_websocket_connections_total", **ws) == 1
    assert value(after, "hg_websocket_connection_duration_seconds_count", **ws) == 1
    assert ("hg_http_request_duration_seconds_count", frozenset({"method": "GET", **ws}.items())) not in after
    assert value(after, "hg_handoffs_total", **handoff) == 1


async def test_two_gateways_on_one_redis_report_the_same_queue_depth(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    """The desk's figures are shared state, read from Redis: both instances show the one waiting customer
    (not half each, not one each to be added up). The handoff is counted by the instance that made it."""
    first = await start_gateway(clock=lambda: FRIDAY_MORNING)
    second = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, first)
    await chat.say_until_handoff("I want to dispute a charge on my card")

    one, other = await scrape(http, first), await scrape(http, second)
    for samples in (one, other):
        assert value(samples, "hg_queue_depth", queue="billing") == 1
        assert value(samples, "hg_queue_depth", queue="general") == 0
    handoff = {"reason": "high_risk_intent", "queue": "billing", "channel": "webchat"}
    assert value(one, "hg_handoffs_total", **handoff) == 1
    assert value(other, "hg_handoffs_total", **handoff) == 0


async def test_time_to_agent_and_agents_online_follow_a_claim(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    await chat.say_until_handoff("I want to dispute a charge on my card")
    agent = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await agent.online()
    status, _ = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert status == 200

    samples = await scrape(http, base)
    assert value(samples, "hg_agents_online", queue="billing") == 1
    assert value(samples, "hg_queue_depth", queue="billing") == 0
    waited = {"queue": "billing", "channel": "webchat"}
    assert value(samples, "hg_time_to_agent_seconds_count", **waited) == 1
    assert 0 <= value(samples, "hg_time_to_agent_seconds_sum", **waited) < 30
    # The route is the pattern, never the conversation's id: the label set stays bounded.
    claim = {"method": "POST", "route": "/api/conversations/{id}/claim", "channel": "gateway", "status": "200"}
    assert value(samples, "hg_http_requests_total", **claim) == 1
    assert not [labels for (_, labels) in samples if ("route", f"/api/conversations/{chat.conversation_id}")
                in labels or any(chat.conversation_id in v for _, v in labels)]


async def test_signed_and_forged_sms_webhooks_show_in_webhook_outcomes(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    base = await start_with_twilio(start_gateway)
    status, _, _ = await post(http, base, sms_form("where is my order #12345"))
    assert status == 200
    status, _, _ = await post(http, base, sms_form("hello"), signature="bm90IGEgc2lnbmF0dXJl")
    assert status == 403

    samples = await scrape(http, base)
    webhook = {"route": "/twilio/messaging", "channel": "twilio_messaging"}
    assert value(samples, "hg_webhook_requests_total", **webhook, outcome="accepted") == 1
    assert value(samples, "hg_webhook_requests_total", **webhook, outcome="invalid_signature") == 1
    assert value(samples, "hg_http_request_duration_seconds_count", method="POST", **webhook) == 2


async def test_a_refused_twilio_send_is_counted(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str,
    twilio_api: TwilioStandIn,  # noqa: F811
) -> None:
    base, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                        "I want to dispute a charge on my card")
    failure = {"channel": "twilio_messaging", "action": "messages.create", "kind": "rejected"}
    assert value(await scrape(http, base), "hg_twilio_send_failures_total", **failure) == 0
    twilio_api.refuse = (400, 21610, "Attempt to send to unsubscribed recipient")
    status, _ = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Are you there?"})
    assert status == 201
    assert value(await scrape(http, base), "hg_twilio_send_failures_total", **failure) == 1


async def test_unknown_paths_share_one_label(gateway: str, http: aiohttp.ClientSession) -> None:
    for path in ("/nope/1", "/nope/2", "/wp-admin.php"):
        async with http.get(f"{gateway}{path}") as response:
            assert response.status == 404
    for method in ("PROPFIND", "MKCOL"):  # WebDAV methods aiohttp parses
        async with http.request(method, f"{gateway}/healthz") as response:
            assert response.status == 405
    samples = await scrape(http, gateway)
    unmatched = {"method": "GET", "route": "unmatched", "channel": "gateway", "status": "404"}
    assert value(samples, "hg_http_requests_total", **unmatched) == 3
    assert value(samples, "hg_http_requests_total", method="other", route="unmatched", channel="gateway",
                 status="405") == 2
    assert not any(v in ("/nope/1", "PROPFIND", "MKCOL") for (_, labels) in samples for _, v in labels)


async def test_with_a_token_only_scrapers_that_send_it_are_answered(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(metrics_token=METRICS_TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": METRICS_TOKEN}):
        async with http.get(f"{base}/metrics", headers=headers) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert (await response.json())["code"] == "unauthorized"
    samples = await scrape(http, base, Authorization=f"Bearer {METRICS_TOKEN}")
    assert {"hg_http_requests_total", "hg_queue_depth", "hg_agents_online"} <= names(samples)


async def test_without_a_token_only_direct_loopback_callers_are_answered(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    assert "hg_desk_up" in names(await scrape(http, gateway))  # the test runs on the same machine
    # Through a proxy on this machine, any visitor would look local: refused without a token.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        async with http.get(f"{gateway}/metrics", headers={header: "203.0.113.9"}) as response:
            assert response.status == 403
            assert (await response.json())["code"] == "metrics_token_required"


async def test_the_longest_wait_is_found_whatever_the_priorities(redis: Redis, namespace: str) -> None:
    """Scores sort by priority first: the oldest entry of a queue may sit anywhere in it."""
    queues = QueueStore(redis, Keys(namespace))
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for n, priority in enumerate([9, 5, 3, 5, 9, 0]):
        await queues.enqueue("general", f"c{n}", priority, start + timedelta(minutes=10 - n))
    await queues.enqueue("general", "follow-up", 0, start, live=False)  # the backlog: not a live wait
    figures = await queues.figures(["general", "billing"])
    # c5 has waited longest (since start + 5 minutes) and, with the lowest priority, is served last.
    assert [cid for cid, _ in await queues.waiting("general")][-1] == "c5"
    assert figures["general"].depth == 6 and figures["general"].backlog == 1
    assert figures["general"].oldest == start + timedelta(minutes=5)
    assert figures["billing"].depth == 0 and figures["billing"].oldest is None


async def test_without_redis_the_process_figures_are_still_served(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Redis down: the scrape says so (hg_desk_up 0) and still carries this instance's own figures."""
    port = free_port()
    runner = web.AppRunner(create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0", "tdead", tmp_path,
                                                    port=port)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        samples = await scrape(http, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert value(samples, "hg_desk_up") == 0 and "hg_queue_depth" not in names(samples)
    healthz = {"method": "GET", "route": "/healthz", "channel": "gateway", "status": "200"}
    assert value(samples, "hg_http_requests_total", **healthz) == 1
