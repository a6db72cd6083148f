"""Callbacks: the customer chooses a time instead of waiting, and the desk keeps that promise exactly once.

Real Redis, real gateways, SMS through signed webhooks; the clock is a setting the tests move, so slots come
due when a test says so. Slots follow the demo rules' `general` queue: New York, weekdays 08:00-20:00,
Saturdays 10:00-16:00, US holidays and two early closures.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.app import business_clock
from gateway.embedded_redis import free_port
from gateway.settings import DEMO_RULES
from handoff import callback_slots
from handoff.agents import AgentStore
from handoff.callbacks import CallbackBook, CallbackError
from handoff.desk import Desk
from handoff.loader import load_rules
from handoff.queues import QueueStore, queue_score
from sessions.keys import Keys
from sessions.models import CallbackSlot, Conversation, ConversationState
from sessions.store import ConversationStore
from tests.conftest import make_settings
from tests.test_desk import AgentClient
from tests.test_twilio_messaging import ACCOUNT, AUTH_TOKEN, PUBLIC, post, sms_form

NEW_YORK = ZoneInfo("America/New_York")
FRIDAY_NIGHT = datetime(2026, 11, 28, 4, 30, tzinfo=UTC)  # Friday 23:30 in New York: general is closed
FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # Friday 10:00 in New York: open
CUSTOMER = "+14155550123"  # a San Francisco number: told in Pacific time
RULES = load_rules(DEMO_RULES)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def book_for(redis: Redis, namespace: str, clock: Clock) -> tuple[CallbackBook, ConversationStore, QueueStore]:
    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 3600)
    queues = QueueStore(redis, keys)
    desk = Desk(redis=redis, keys=keys, store=store, agents=AgentStore(redis, keys), queues=queues)
    return CallbackBook(desk, clock=clock), store, queues


async def sms_gateway(start_gateway: Any, clock: Clock) -> str:
    return str(await start_gateway(clock=clock, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                                   twilio_account_sid=ACCOUNT, twilio_sms_from="+14155550100",
                                   twilio_api_base_url=f"http://127.0.0.1:{free_port()}"))


async def text(http: aiohttp.ClientSession, base: str, body: str) -> str:
    status, _, reply = await post(http, base, sms_form(body, sender=CUSTOMER))
    assert status == 200
    return reply


async def night_customer(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> tuple[Clock, str, CallbackBook, ConversationStore, Conversation]:
    """A gateway on Friday night, and a customer there who was just offered a callback."""
    clock = Clock(FRIDAY_NIGHT)
    base = await sms_gateway(start_gateway, clock)
    book, store, _ = book_for(redis, namespace, clock)
    return clock, base, book, store, await offered_after_hours(http, base, store)


async def offered_after_hours(http: aiohttp.ClientSession, base: str, store: ConversationStore) -> Conversation:
    """A customer texting at night who insists on a person: handed to `general`'s follow-ups, offered a call."""
    reply = ""
    # Texts at night: the bot offers help once, then the help centre (live help by text is a daytime
    # service), then passes the message on to the team, who can call back.
    for body in ("I need to talk to a real person please", "no, just put me through to a human now",
                 "my parcel 88123 never arrived", "I still want a person to sort it out"):
        reply = await text(http, base, body)
        if "When suits you?" in reply:
            break
    assert "When suits you?" in reply and "+1 415-555-0123" in reply
    [cid] = await store.recent()
    return await store.get(cid)


# -- slots ---------------------------------------------------------------------------------------------
def test_slots_lie_wholly_inside_open_hours_on_the_teams_clock() -> None:
    friday_evening = datetime(2026, 11, 27, 18, 30, tzinfo=NEW_YORK)  # open until 20:00
    [first, *later] = callback_slots.choices(RULES, "general", friday_evening)
    assert first.asap and first.start == friday_evening  # open now: as soon as possible means now
    assert [(s.start.astimezone(NEW_YORK).strftime("%a %H:%M"), s.end and s.end.astimezone(NEW_YORK).strftime("%H:%M"))
            for s in later] == [("Fri 19:00", "20:00"), ("Sat 10:00", "11:00"), ("Sat 11:00", "12:00")]


def test_closed_days_and_early_closures_never_get_a_slot() -> None:
    # Christmas Eve closes at 14:00, Christmas Day is a holiday, the 26th is a Saturday (10:00-16:00).
    christmas_eve = datetime(2026, 12, 24, 12, 10, tzinfo=NEW_YORK)
    slots = callback_slots.next_slots(RULES, "general", christmas_eve, count=4)
    assert [s.start.astimezone(NEW_YORK).strftime("%d %H:%M") for s in slots] == [
        "24 13:00", "26 10:00", "26 11:00", "26 12:00"]
    first = callback_slots.asap(RULES, "general", datetime(2026, 12, 24, 15, 0, tzinfo=NEW_YORK))
    assert first is not None and first.start == datetime(2026, 12, 26, 10, 0, tzinfo=NEW_YORK)


def test_a_slot_outside_open_hours_is_refused_with_the_reason() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=NEW_YORK)
    late = CallbackSlot(start=datetime(2026, 11, 27, 19, 30, tzinfo=NEW_YORK),
                        end=datetime(2026, 11, 27, 20, 30, tzinfo=NEW_YORK))
    assert callback_slots.keepable(RULES, "general", late, now) == "the Customer Support team is not open for all of that slot"
    night = CallbackSlot(start=datetime(2026, 11, 28, 3, 0, tzinfo=NEW_YORK), end=None)
    assert callback_slots.keepable(RULES, "general", night, now) is not None
    fine = CallbackSlot(start=datetime(2026, 11, 27, 14, 0, tzinfo=NEW_YORK),
                        end=datetime(2026, 11, 27, 15, 0, tzinfo=NEW_YORK))
    assert callback_slots.keepable(RULES, "general", fine, now) is None
    past = CallbackSlot(start=datetime(2026, 11, 27, 8, 0, tzinfo=NEW_YORK), end=None)
    assert callback_slots.keepable(RULES, "general", past, now) == "the slot is in the past"


# -- intake over SMS -----------------------------------------------------------------------------------
async def test_sms_intake_promises_a_chosen_slot_and_cancel_callback_takes_it_back(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    _, base, book, store, conversation = await night_customer(start_gateway, http, redis, namespace)
    queues = QueueStore(redis, Keys(namespace))
    assert conversation.state is ConversationState.ASYNC
    assert conversation.callback is not None and conversation.callback.state == "choosing"
    chosen = conversation.callback.choices[2]

    assert "one of the numbers in the list" in await text(http, base, "7")  # not a choice shown
    reply = await text(http, base, "3")
    assert "will call you on +1 415-555-0123, Saturday 28 Nov, 09:00-10:00 Pacific Time" in reply
    assert "CANCEL CALLBACK" in reply
    conversation = await store.get(conversation.id)
    assert conversation.state is ConversationState.CALLBACK
    assert conversation.callback is not None and conversation.callback.slot == chosen
    # Nobody waits in a queue for it; the agents' list has it, due at the slot's start.
    assert await queues.waiting("general", live=False) == [] and await queues.waiting("general") == []
    [row] = await book.listing(["general"], "scheduled")
    assert row["conversation_id"] == conversation.id and row["slot_start"] == chosen.start.isoformat()
    assert row["number"] == CUSTOMER and row["attempts"] == 0

    reply = await text(http, base, "Cancel callback")
    assert "Your callback is cancelled" in reply
    conversation = await store.get(conversation.id)
    assert conversation.state is ConversationState.RESOLVED
    assert conversation.callback is not None and conversation.callback.state == "cancelled"
    assert await book.listing(None, None) == []
    assert await book.run_due(RULES, chosen.start + timedelta(minutes=1)) == []  # nothing left to call


async def test_another_number_can_be_given_and_a_bare_cancel_stays_an_sms_opt_out(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    _, base, _, store, conversation = await night_customer(start_gateway, http, redis, namespace)
    assert "one of the numbers in the list" in await text(http, base, "+1 555 01")  # too short to be one
    reply = await text(http, base, "(212) 555-0187")  # a New York number, written the local way
    assert "call you on +1 212-555-0187" in reply and "Eastern" in reply
    reply = await text(http, base, "1")
    assert "+1 212-555-0187, as soon as we open (Saturday 10:00 Eastern Time)" in reply
    # CANCEL alone is a carrier opt-out keyword on SMS: the callback stays, the number is opted out.
    await text(http, base, "CANCEL")
    assert (await store.get(conversation.id)).state is ConversationState.CALLBACK


# -- keeping the promise -------------------------------------------------------------------------------
async def scheduled(redis: Redis, namespace: str, clock: Clock, http: aiohttp.ClientSession,
                    start_gateway: Any) -> tuple[CallbackBook, ConversationStore, Conversation]:
    base = await sms_gateway(start_gateway, clock)
    book, store, _ = book_for(redis, namespace, clock)
    conversation = await offered_after_hours(http, base, store)
    await text(http, base, "2")
    conversation = await store.get(conversation.id)
    assert conversation.state is ConversationState.CALLBACK
    return book, store, conversation


async def test_a_callback_joins_its_queue_at_its_slot_ahead_of_later_arrivals_and_not_before(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    book, store, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    request = conversation.callback
    assert request is not None and request.slot is not None
    start = request.slot.start
    assert await book.run_due(RULES, start - timedelta(seconds=1)) == []
    assert (await store.get(conversation.id)).state is ConversationState.CALLBACK

    queues = QueueStore(redis, Keys(namespace))
    later = start + timedelta(minutes=5)
    await queues.enqueue("general", "newcomer", conversation.priority, later - timedelta(minutes=1))
    clock.now = later
    assert await book.run_due(RULES, later) == [conversation.id]
    due = await store.get(conversation.id)
    assert due.state is ConversationState.QUEUED and due.callback is not None
    assert due.callback.state == "offering" and [a.n for a in due.callback.attempts] == [1]
    waiting = [cid for cid, _ in await queues.waiting("general")]
    assert waiting == [conversation.id, "newcomer"]  # the promise goes first
    score = await redis.zscore(Keys(namespace).queue("main", "general"), conversation.id)
    assert score == queue_score(conversation.priority, start)
    assert await book.run_due(RULES, later + timedelta(minutes=5)) == []  # offered once


async def test_two_instances_sweeping_the_same_due_callbacks_start_each_once(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    first, store, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    second, _, _ = book_for(redis, namespace, clock)
    assert conversation.callback is not None and conversation.callback.slot is not None
    at = conversation.callback.slot.start + timedelta(minutes=1)
    results = await asyncio.gather(*(book.run_due(RULES, at) for book in (first, second, first, second)))
    assert sorted(cid for started in results for cid in started) == [conversation.id]
    due = await store.get(conversation.id)
    assert due.callback is not None and len(due.callback.attempts) == 1


async def test_failed_attempts_are_retried_inside_open_hours_then_become_a_written_follow_up(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    book, store, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    request = conversation.callback
    assert request is not None and request.slot is not None and request.max_attempts == 3
    # Saturday 15:50 in New York: the team closes at 16:00, so a retry 30 minutes later waits for Monday.
    clock.now = datetime(2026, 11, 28, 15, 50, tzinfo=NEW_YORK)
    for attempt, outcome in enumerate(("busy", "no-answer", "machine"), start=1):
        assert await book.run_due(RULES, clock.now) == [conversation.id]
        stored = await book.attempt_failed(conversation.id, outcome, RULES)
        assert stored is not None
        current = await store.get(conversation.id)
        assert current.callback is not None and current.callback.attempts[-1].outcome == outcome
        if attempt < 3:
            assert current.state is ConversationState.CALLBACK
            assert "couldn't reach you" in stored.message.text
            due_at = current.callback.due_at
            assert due_at is not None
            if attempt == 1:
                assert due_at == datetime(2026, 11, 30, 8, 0, tzinfo=NEW_YORK)  # Monday's opening
            assert await book.run_due(RULES, due_at - timedelta(seconds=1)) == []
            clock.now = due_at
    final = await store.get(conversation.id)
    assert final.state is ConversationState.ASYNC and final.callback is not None
    assert final.callback.state == "failed" and len(final.callback.attempts) == 3
    assert "tried to call you 3 times" in stored.message.text
    queues = QueueStore(redis, Keys(namespace))
    assert [cid for cid, _ in await queues.waiting("general", live=False)] == [conversation.id]
    [row] = await book.listing(["general"], "failed")
    assert row["last_outcome"] == "machine"


async def test_cancel_wins_over_an_attempt_not_yet_dialling(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    book, _, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    assert conversation.callback is not None and conversation.callback.slot is not None
    clock.now = conversation.callback.slot.start
    assert await book.run_due(RULES, clock.now) == [conversation.id]  # waiting for an agent
    stored = await book.cancel(conversation.id, RULES, by="customer")
    assert stored.conversation.state is ConversationState.RESOLVED
    assert await QueueStore(redis, Keys(namespace)).waiting("general") == []
    assert await book.listing(None, None) == []


async def test_once_a_phone_rings_the_attempt_can_no_longer_be_cancelled(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    book, store, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    assert conversation.callback is not None and conversation.callback.slot is not None
    clock.now = conversation.callback.slot.start
    await book.run_due(RULES, clock.now)
    assert not await book.step(conversation.id, 2, "dialling")  # not the current attempt
    assert await book.step(conversation.id, 1, "dialling", agent_call="CA" + "1" * 32)
    assert not await book.step(conversation.id, 1, "completed")  # nobody has talked yet
    with pytest.raises(CallbackError) as refused:
        await book.cancel(conversation.id, RULES, by="customer")
    assert refused.value.code == "not_cancellable"
    current = await store.get(conversation.id)
    assert current.callback is not None and current.callback.state == "dialling"
    # Nothing heard from either leg by the attempt's deadline: failed as unknown, never dialled again.
    late = clock.now + timedelta(minutes=11)
    assert await book.run_due(RULES, late) == []
    failed = await store.get(conversation.id)
    assert failed.callback is not None and failed.callback.attempts[0].outcome == "unknown"
    assert failed.state is ConversationState.CALLBACK and len(failed.callback.attempts) == 1


async def test_scheduled_callbacks_survive_a_restart_and_any_instance_keeps_them(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    _, _, conversation = await scheduled(redis, namespace, clock, http, start_gateway)
    assert conversation.callback is not None and conversation.callback.slot is not None
    # A new process: nothing of the first is shared but Redis.
    fresh, store, _ = book_for(redis, namespace, Clock(conversation.callback.slot.start))
    assert [row["conversation_id"] for row in await fresh.listing(None, "due")] == [conversation.id]
    assert await fresh.run_due(RULES) == [conversation.id]
    assert (await store.get(conversation.id)).state is ConversationState.QUEUED


# -- the agents' API -----------------------------------------------------------------------------------
async def test_agents_list_move_and_cancel_callbacks_of_their_own_queues(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    _, base, _, store, conversation = await night_customer(start_gateway, http, redis, namespace)
    await text(http, base, "2")
    agents = AgentStore(redis, Keys(namespace))
    _, token = await agents.add("Alex", [], ["en"], [])
    _, german_token = await agents.add("Jonas", ["german"], ["de"], ["support_de"])
    alex, jonas = AgentClient(http, base, token), AgentClient(http, base, german_token)

    status, body = await alex.call("GET", "/api/callbacks?state=scheduled")
    assert status == 200 and [c["conversation_id"] for c in body["callbacks"]] == [conversation.id]
    assert body["callbacks"][0]["queue"] == "general" and body["callbacks"][0]["why"] == "after_hours"
    status, body = await jonas.call("GET", "/api/callbacks")
    assert status == 200 and body["callbacks"] == []
    status, body = await alex.call("GET", "/api/callbacks?state=soon")
    assert status == 400 and body["code"] == "invalid_state"
    status, body = await jonas.call("POST", f"/api/callbacks/{conversation.id}/cancel", {})
    assert status == 403 and body["code"] == "not_your_queue"

    sunday = datetime(2026, 11, 29, 11, 0, tzinfo=NEW_YORK)  # closed all day
    status, body = await alex.call("POST", f"/api/callbacks/{conversation.id}/reschedule",
                                   {"start": sunday.isoformat(), "end": (sunday + timedelta(hours=1)).isoformat()})
    assert status == 422 and body["code"] == "slot_unavailable" and "not open" in body["detail"]
    status, body = await alex.call("POST", f"/api/callbacks/{conversation.id}/reschedule", {"start": "tomorrow"})
    assert status == 400 and body["code"] == "invalid_body"
    monday = datetime(2026, 11, 30, 14, 0, tzinfo=NEW_YORK)
    status, body = await alex.call("POST", f"/api/callbacks/{conversation.id}/reschedule",
                                   {"start": monday.isoformat(), "end": (monday + timedelta(hours=1)).isoformat(),
                                    "note": "asked by email to move it"})
    assert status == 200 and body["due_at"] == monday.astimezone(UTC).isoformat()
    transcript = await store.transcript(conversation.id)
    assert "has moved: they'll call you on +1 415-555-0123, Monday 30 Nov, 11:00-12:00 Pacific Time" in transcript[-1].text

    status, body = await alex.call("POST", f"/api/callbacks/{conversation.id}/cancel", {"note": "sorted by email"})
    assert status == 200 and body["state"] == "cancelled"
    assert (await store.get(conversation.id)).state is ConversationState.RESOLVED
    status, body = await alex.call("POST", f"/api/callbacks/{conversation.id}/cancel", {})
    assert status == 409 and body["code"] == "not_cancellable"


def test_a_demo_business_clock_starts_where_it_is_told_and_runs_faster(tmp_path: Any) -> None:
    """BUSINESS_CLOCK_START and BUSINESS_CLOCK_SPEED: a slot an hour away comes due in a minute."""
    start = datetime(2026, 11, 27, 19, 55, tzinfo=NEW_YORK)
    settings = make_settings("redis://unused", "x", tmp_path, business_clock_start=start.isoformat(),
                             business_clock_speed=60)
    clock = business_clock(settings)
    first = clock()
    assert timedelta(0) <= first - start < timedelta(seconds=30)
    time.sleep(0.2)
    assert timedelta(seconds=10) <= clock() - first < timedelta(seconds=60)  # 0.2 s real is ~12 s
    plain = business_clock(make_settings("redis://unused", "x", tmp_path))
    assert abs((plain() - datetime.now(UTC)).total_seconds()) < 1


async def test_a_long_expected_wait_offers_a_callback_once_where_the_customer_can_answer_a_menu(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_MORNING)
    base = await sms_gateway(start_gateway, clock)
    book, store, _ = book_for(redis, namespace, clock)
    _, token = await AgentStore(redis, Keys(namespace)).add("Busy", [], ["en"], [])
    await AgentClient(http, base, token).online(capacity=0)  # online, but with no free slot
    await asyncio.sleep(2.5)  # the desk has looked: someone serves the queue, so it is not unstaffed
    for body in ("I need to talk to a real person please", "no, just put me through to a human now"):
        await text(http, base, body)
    [cid] = await store.recent()
    waiting = await store.get(cid)
    assert waiting.state is ConversationState.QUEUED and waiting.callback is None
    assert await book.offer_if_long_wait(cid, 900, RULES, lambda channel: False) is None  # a caller
    assert await book.offer_if_long_wait(cid, 600, RULES, lambda channel: True) is None  # not over 600 s
    offered = await book.offer_if_long_wait(cid, 900, RULES, lambda channel: True)
    assert offered is not None and "When suits you?" in offered.message.text
    assert offered.conversation.callback is not None and offered.conversation.callback.why == "wait_over"
    assert await book.offer_if_long_wait(cid, 1800, RULES, lambda channel: True) is None  # once
    assert "You keep your place" in await text(http, base, "no callback")
    assert await book.offer_if_long_wait(cid, 1800, RULES, lambda channel: True) is None  # said no


async def test_whatsapp_intake_offers_the_number_they_write_from_and_keeps_the_choice(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    clock = Clock(FRIDAY_NIGHT)
    base = str(await start_gateway(clock=clock, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                                   twilio_account_sid=ACCOUNT, twilio_whatsapp_from="+14155550100",
                                   twilio_api_base_url=f"http://127.0.0.1:{free_port()}"))
    _, store, _ = book_for(redis, namespace, clock)

    async def whatsapp(body: str) -> str:
        form = sms_form(body, sender=f"whatsapp:{CUSTOMER}", To="whatsapp:+14155550100")
        status, _, reply = await post(http, base, form)
        assert status == 200
        return reply

    reply = ""
    for body in ("I need to talk to a real person please", "no, just put me through to a human now",
                 "my parcel 88123 never arrived", "I still want a person to sort it out"):
        reply = await whatsapp(body)
        if "When suits you?" in reply:
            break
    assert "Our Customer Support team can call you on +1 415-555-0123. When suits you?" in reply
    reply = await whatsapp("2")
    assert "will call you on +1 415-555-0123, Saturday 28 Nov" in reply
    [cid] = await store.recent()
    conversation = await store.get(cid)
    assert conversation.channel == "whatsapp" and conversation.state is ConversationState.CALLBACK
    assert conversation.callback is not None and conversation.callback.number == CUSTOMER
    assert "Your callback is cancelled" in await whatsapp("cancel callback")
    assert (await store.get(cid)).state is ConversationState.RESOLVED
