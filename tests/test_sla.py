"""Live queue updates: place in the queue and an honest estimate, from live desk state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.settings import DEMO_RULES
from handoff.agents import AgentStore
from handoff.desk import Desk
from handoff.loader import load_rules
from handoff.queues import QueueStore
from handoff.sla import QueueUpdates, Staffing, estimate_wait, expected_wait, material
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.test_desk import AgentClient, handed_off

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def test_estimate_comes_from_free_slots_capacity_and_handle_time() -> None:
    staffed = Staffing(capacity=2, free=1, handle_seconds=300)
    assert estimate_wait(1, staffed) == 60  # someone is free: about the time to offer and accept
    assert estimate_wait(2, staffed) == 360  # after one round of conversations
    assert estimate_wait(4, staffed) == 660
    assert estimate_wait(1, Staffing(capacity=0, free=0, handle_seconds=300)) is None  # nobody online


def test_the_expected_wait_for_overflow_is_that_of_the_next_customer_to_join() -> None:
    one_agent = Staffing(capacity=1, free=0, handle_seconds=300)
    assert expected_wait(0, one_agent) == 360
    assert expected_wait(3, one_agent) == 1260  # over the demo general queue's 900 s: it would overflow
    assert expected_wait(3, None) is None  # not known yet: overflow goes by depth alone


def test_only_a_noticeable_move_is_worth_a_message() -> None:
    assert material(None, 7)
    assert not material(7, 7)
    assert not material(8, 7)  # 1 of 8: not a quarter
    assert material(8, 6) and material(2, 1) and material(3, 4)


async def test_waiting_customers_are_told_their_place_and_the_wait(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    first = await handed_off(http, base)
    second = await handed_off(http, base)
    frame = (await second.recv_until(lambda f: f.get("type") == "handoff" and "position" in f))[-1]
    assert frame["position"] == 2 and frame["eta_seconds"] is None  # nobody online: no promise
    assert "Nobody from the team is free right now" in frame["text"]
    first_frame = (await first.recv_until(lambda f: f.get("type") == "handoff" and "position" in f))[-1]
    assert first_frame["position"] == 1

    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    await AgentClient(http, base, token).online(capacity=1)  # the first conversation is offered to Alex
    await first.recv_until(lambda f: f.get("status") == "offered")

    keys = Keys(namespace)
    desk = Desk(redis=redis, keys=keys, store=ConversationStore(redis, keys, 3600), agents=AgentStore(redis, keys),
                queues=QueueStore(redis, keys))
    assert await QueueUpdates(desk, rate_limit_seconds=0).send_due(load_rules(DEMO_RULES), datetime.now(UTC)) == 1
    frame = (await second.recv_until(lambda f: f.get("type") == "handoff" and f.get("position") == 1))[-1]
    assert frame["eta_seconds"] == 360  # Alex's one slot is taken: one average handle time, then the offer
    assert "You're number 1 in the queue for our Billing team" in frame["text"] and "6 minutes" in frame["text"]
