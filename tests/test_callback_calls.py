"""Callbacks on the phone: the agent who took one is called first, then the customer, in one room.

Twilio's side is played by the emulator (tests/voice_rig.py): signed webhooks, TwiML followed as Twilio
would, the gateway's REST calls answered, and phones that answer as a person, a machine, or not at all.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.app import SWEEP_SECONDS
from gateway.simulator import Simulator
from gateway.simulator import run as simulator_run
from gateway.twilio_voice_emulator import AnswerMode, CallLeg
from sessions.models import Conversation, ConversationState
from tests.test_twilio_messaging import sms_form
from tests.voice_rig import (
    ACCOUNT,
    AUTH_TOKEN,
    BUSINESS,
    FRIDAY_MORNING,
    PUBLIC,
    VoiceRig,
    eventually,
    said_until,
)

CUSTOMER = "+14155550123"


async def text(rig: VoiceRig, body: str) -> str:
    status, reply = await rig.signed_post("/twilio/messaging", sms_form(body, sender=CUSTOMER))
    assert status == 200
    return reply


async def promised(rig: VoiceRig, choice: str = "1") -> Conversation:
    """A customer texts for a person while nobody is online: offered a callback, they take the first time
    (as soon as possible) or the one they ``choice``."""
    await asyncio.sleep(SWEEP_SECONDS + 0.5)  # the desk has looked: it knows nobody is online
    reply = ""
    for body in ("I need to talk to a real person please", "no, just put me through to a human now",
                 "my parcel 88123 never arrived", "I still want a person to sort it out"):
        reply = await text(rig, body)
        if "When suits you?" in reply:
            break
    if "When suits you?" not in reply:
        [cid] = await rig.store.recent()
        for m in await rig.store.transcript(cid):
            print(m.sender.value, m.text[:150])
        print((await rig.store.get(cid)).state, (await rig.store.get(cid)).queue)
    assert "When suits you?" in reply, reply
    reply = await text(rig, choice)
    assert "will call you on +1 415-555-0123" in reply, reply
    [cid] = await rig.store.recent()
    conversation = await rig.store.get(cid)
    assert conversation.state is ConversationState.CALLBACK
    return conversation


async def taken(rig: VoiceRig, conversation: Conversation, agent_phone: str) -> tuple[Any, CallLeg]:
    """The callback comes due (as soon as possible: now), an agent takes it in the console, giving the
    number to call them on (the desk offered it to their console only: they had no phone yet), and the
    gateway calls the agent."""
    alex = await rig.agent("Alex", None, skills=[])

    async def queued() -> bool:
        return (await rig.store.get(conversation.id)).state in (ConversationState.QUEUED, ConversationState.OFFERED)

    for _ in range(200):
        if await queued():
            break
        await eventually(lambda: True, timeout=0.05)
    status, body = await alex.call("POST", f"/api/conversations/{conversation.id}/claim", {"phone": agent_phone})
    assert status == 200, body
    phone = await rig.emulator.next_incoming(agent_phone, timeout=10)
    return alex, phone


async def kept(rig: VoiceRig, cid: str) -> None:
    """The promise is kept: the callback's state becomes completed (once the customer's leg has ended)."""
    for _ in range(100):
        found = await rig.store.get(cid)
        if found.callback is not None and found.callback.state == "completed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the callback was not completed: {found.callback}")


def dialled(rig: VoiceRig, number: str) -> int:
    """Calls the gateway asked Twilio to place to ``number`` (calls-create requests)."""
    return sum(1 for leg in rig.emulator.calls.values() if leg.direction != "inbound" and leg.to == number)


async def test_the_agent_is_called_first_then_the_customer_who_hears_why_before_joining(voice: Any) -> None:
    rig = await voice()
    conversation = await promised(rig)
    _, phone = await taken(rig, conversation, "+15550001111")
    brief = await said_until(phone, "press 1")
    assert brief[0] == "This is a callback the customer asked for at 10:00."
    told = [m.text for m in await rig.store.transcript(conversation.id)]
    assert told[-1] == "Alex from our team is calling you now on +1 415-555-0123, with everything you've told us."
    assert any("Customer Support" in line for line in brief)
    await phone.press("1")
    assert "Calling the customer now" in await phone.next_said()
    customer = await rig.emulator.next_incoming(CUSTOMER, timeout=10)
    greeting = await customer.next_said()
    assert greeting.startswith("Hello, this is Northwind Goods calling you back, as you asked")
    assert "Alex is on the line now" in greeting
    await customer.wait_until(lambda: phone in rig.emulator.hearing(customer), timeout=10)
    current = await rig.store.get(conversation.id)
    assert current.state is ConversationState.ASSIGNED and current.callback is not None
    assert current.callback.current is not None and current.callback.current.state == "connected"
    await customer.hang_up()
    await kept(rig, conversation.id)
    assert dialled(rig, "+15550001111") == 1 and dialled(rig, CUSTOMER) == 1
    assert rig.emulator.errors == []


async def test_an_answering_machine_hears_nothing_personal_and_the_attempt_is_retried_later(voice: Any) -> None:
    rig = await voice()
    conversation = await promised(rig)
    rig.emulator.phone(CUSTOMER, "machine")
    _, phone = await taken(rig, conversation, "+15550001111")
    await said_until(phone, "press 1")
    await phone.press("1")
    customer = await rig.emulator.next_incoming(CUSTOMER, timeout=10)
    said = await customer.next_said()
    assert said == "Hello, this is a call back you asked us for. We'll try again later. Goodbye."
    await said_until(phone, "The customer didn't answer")  # the agent waiting in the room is told
    back = await rig.until_state_of(conversation.id, "callback")
    assert back.callback is not None and back.callback.attempts[0].outcome == "machine"
    assert back.callback.state == "scheduled" and back.callback.due_at is not None
    transcript = await rig.store.transcript(conversation.id)
    assert "couldn't reach you" in transcript[-1].text
    assert dialled(rig, CUSTOMER) == 1


async def test_an_agent_who_passes_fails_the_attempt_and_the_customer_is_never_called(voice: Any) -> None:
    rig = await voice()
    conversation = await promised(rig)
    _, phone = await taken(rig, conversation, "+15550001111")
    await said_until(phone, "press 1")
    await phone.press("2")
    assert "passed back" in await phone.next_said()
    back = await rig.until_state_of(conversation.id, "callback")
    assert back.callback is not None and back.callback.attempts[0].outcome == "agent_declined"
    assert dialled(rig, CUSTOMER) == 0


async def due_and_offered_by_phone(rig: VoiceRig, agent_phone: str) -> tuple[Conversation, CallLeg]:
    """A promised callback comes due while an agent with a phone is online: the desk's offer rings it."""
    conversation = await promised(rig)
    await rig.agent("Alex", agent_phone, skills=[])
    phone = await rig.emulator.next_incoming(agent_phone, timeout=10)
    return conversation, phone


async def test_an_agent_offered_a_callback_on_the_phone_takes_it_with_1_and_the_customer_is_called(
    voice: Any,
) -> None:
    rig = await voice()
    conversation, phone = await due_and_offered_by_phone(rig, "+15550001111")
    brief = await said_until(phone, "press 1")
    assert brief[0] == "This is a callback the customer asked for at 10:00."
    assert brief[-1] == "Press 1 to take it and call the customer now, or 2 to pass it to a colleague."
    assert (await rig.store.get(conversation.id)).state is ConversationState.OFFERED
    await phone.press("1")
    assert "Calling the customer now" in await phone.next_said()
    taken_by = await rig.store.get(conversation.id)
    assert taken_by.state is ConversationState.ASSIGNED and taken_by.agent is not None
    told = [m.text for m in await rig.store.transcript(conversation.id)]
    assert told[-1].startswith("Alex from our team is calling you now on +1 415-555-0123")
    customer = await rig.emulator.next_incoming(CUSTOMER, timeout=10)
    assert "Alex is on the line now" in await customer.next_said()
    await customer.wait_until(lambda: phone in rig.emulator.hearing(customer), timeout=10)
    connected = await rig.store.get(conversation.id)
    assert connected.callback is not None and connected.callback.current is not None
    assert connected.callback.current.state == "connected"
    assert connected.callback.current.agent == taken_by.agent
    # One call to the agent (the offer's leg became the attempt's), one to the customer.
    assert dialled(rig, "+15550001111") == 1 and dialled(rig, CUSTOMER) == 1
    assert rig.emulator.errors == []


async def test_an_agent_who_passes_a_callback_offer_on_the_phone_sends_it_on_and_the_attempt_goes_on(
    voice: Any,
) -> None:
    rig = await voice()
    conversation, phone = await due_and_offered_by_phone(rig, "+15550001111")
    await said_until(phone, "press 1")
    await phone.press("2")
    assert "goes to a colleague" in await phone.next_said()
    # Back in its queue for the next agent (Alex passed it, so it is not offered to Alex again at once);
    # the attempt is still the first and still open: passing an offer is not a failed attempt.
    back = await rig.until_state_of(conversation.id, "queued")
    assert back.callback is not None and back.callback.state == "offering"
    assert len(back.callback.attempts) == 1 and back.callback.current is not None
    assert back.callback.current.outcome is None
    sam = await rig.agent("Sam", None, skills=[])
    status, body = await sam.call("POST", f"/api/conversations/{conversation.id}/claim", {"phone": "+15550002222"})
    assert status == 200, body
    sams = await rig.emulator.next_incoming("+15550002222", timeout=10)
    assert (await said_until(sams, "press 1"))[0] == "This is a callback the customer asked for at 10:00."
    assert dialled(rig, CUSTOMER) == 0


async def test_a_callback_offer_nobody_answers_on_the_phone_lapses_to_the_next_agent(voice: Any) -> None:
    rig = await voice()
    rig.emulator.phone("+15550001111", "no-answer")
    conversation = await promised(rig)
    await rig.agent("Alex", "+15550001111", skills=[])
    await eventually(lambda: dialled(rig, "+15550001111") == 1)
    back = await rig.until_state_of(conversation.id, "queued", timeout=15)
    assert back.callback is not None and back.callback.state == "offering"
    assert back.callback.current is not None and back.callback.current.outcome is None
    assert dialled(rig, CUSTOMER) == 0
    # Waiting for a call, not a reply: no "a person will reply here, usually within ..." once it is due
    # and an agent is online (the queue updates a waiting customer gets from the desk's next sweeps).
    await asyncio.sleep(2 * SWEEP_SECONDS + 0.5)
    told = [m.text for m in await rig.store.transcript(conversation.id)]
    assert not [t for t in told if "usually within" in t], told


async def test_a_customer_who_calls_in_with_a_callback_booked_is_reminded_and_cancels_it_with_2(
    voice: Any,
) -> None:
    rig = await voice()
    booked = await promised(rig, choice="2")  # a time later today, booked by text
    leg = await rig.emulator.place_call(CUSTOMER, BUSINESS)
    heard = await said_until(leg, "press 2")
    assert heard[-1].startswith("You have a callback booked with our Customer Support team, Friday 27 Nov, ")
    await leg.press("2")
    assert await leg.next_said() == "Your callback is cancelled. Is there anything else I can help with?"
    cancelled = await rig.store.get(booked.id)
    assert cancelled.state is ConversationState.RESOLVED and cancelled.callback is not None
    assert cancelled.callback.state == "cancelled"
    # Told on the channel they booked it on too.
    told = [m.text for m in await rig.store.transcript(booked.id)]
    assert told[-1] == "Your callback is cancelled. If you need us again, just write here."
    await leg.speak("my parcel 88123 never arrived")  # the call goes on with the bot
    assert await leg.next_said()
    call = await rig.conversation(leg)
    assert [m.text for m in await rig.store.transcript(call.id) if m.sender.value == "customer"] == [
        "my parcel 88123 never arrived"]


async def test_a_caller_without_a_callback_booked_hears_no_reminder_and_2_goes_to_the_bot(voice: Any) -> None:
    rig = await voice()
    leg = await rig.emulator.place_call(CUSTOMER, BUSINESS)
    greeting = await leg.next_said()
    assert greeting.startswith("Hello, you're through to customer support.")
    await leg.press("2")
    await leg.next_said()
    call = await rig.conversation(leg)
    assert [m.text for m in await rig.store.transcript(call.id) if m.sender.value == "customer"] == ["(pressed 2)"]


async def test_the_sms_simulator_walks_through_a_whole_callback_on_one_laptop(voice: Any) -> None:
    """`simulate sms`: the customer texts for a person, chooses a time, and when an agent takes it the
    simulator's stand-in for Twilio rings the agent's phone (``agent: #1``), then the customer's own."""
    rig = await voice()
    await rig.emulator.stop()  # the simulator stands in for Twilio's API on the gateway's port instead
    simulator = Simulator(rig.base, PUBLIC, AUTH_TOKEN, channel="sms", number=CUSTOMER,
                          api_port=rig.emulator.api_port, account_sid=ACCOUNT)
    out = io.StringIO()

    async def seen(fragment: str) -> None:
        try:
            await eventually(lambda: fragment in out.getvalue(), timeout=15)
        except AssertionError:
            raise AssertionError(f"never saw {fragment!r} in:\n{out.getvalue()}") from None

    async def script() -> AsyncIterator[str]:
        await seen("Type a message")
        await asyncio.sleep(SWEEP_SECONDS + 0.5)  # the desk has looked: nobody is online
        for body in ("I need to talk to a real person please", "no, just put me through to a human now"):
            answered = out.getvalue().count("  gateway: ")
            yield body + "\n"
            await eventually(lambda n=answered: out.getvalue().count("  gateway: ") > n)
        await seen("When suits you?")
        yield "1\n"
        await seen("will call you on +1 415-555-0123")
        [cid] = await rig.store.recent()
        alex = await rig.agent("Alex", None, skills=[])
        await rig.until_state_of(cid, "offered")
        status, body = await alex.call("POST", f"/api/conversations/{cid}/claim", {"phone": "+15550001111"})
        assert status == 200, body
        await seen("agent hears: Press 1 to call the customer now")
        yield "agent: #1\n"
        await seen("caller hears: Hello, this is Northwind Goods calling you back")
        await seen("caller is in conference")
        yield "call: hangup\n"
        await rig.until_state_of(cid, "assigned")
        await eventually(lambda: "call ended" in out.getvalue(), timeout=15)

    code = await simulator_run(simulator, lines=script(), out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "agent phone +15550001111 rings" in text and "caller phone +14155550123 rings" in text
    assert "gateway (REST): Alex from our team is calling you now on +1 415-555-0123" in text
    [cid] = await rig.store.recent()
    done = await rig.store.get(cid)
    assert done.callback is not None and done.callback.state == "completed", done.callback


@pytest.mark.parametrize("answer", ["busy", "no-answer"])
async def test_a_busy_or_unanswered_customer_fails_the_attempt_and_it_is_tried_again_later(
    voice: Any, answer: AnswerMode
) -> None:
    rig = await voice()
    conversation = await promised(rig)
    rig.emulator.phone(CUSTOMER, answer)
    _, phone = await taken(rig, conversation, "+15550001111")
    await said_until(phone, "press 1")
    await phone.press("1")
    await said_until(phone, "The customer didn't answer", timeout=15)  # the agent waiting is told
    back = await rig.until_state_of(conversation.id, "callback")
    assert back.callback is not None and back.callback.attempts[0].outcome == answer
    assert back.callback.state == "scheduled" and len(back.callback.attempts) == 1
    told = [m.text for m in await rig.store.transcript(conversation.id)]
    assert told[-1].startswith("We tried to call you on +1 415-555-0123 but couldn't reach you.")
    assert dialled(rig, CUSTOMER) == 1


async def test_an_attempt_goes_on_at_another_instance_when_the_one_that_dialled_is_cut_off(
    voice: Any, start_gateway: Any
) -> None:
    """The instance that dialled the agent never hears from Twilio again (killed, or cut off): the legs'
    webhooks and status callbacks reach another instance, which keeps the promise, and nothing is dialled
    twice."""
    rig = await voice()
    other = await start_gateway(
        clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN, twilio_account_sid=ACCOUNT,
        twilio_api_base_url=f"http://127.0.0.1:{rig.emulator.api_port}", twilio_sms_from="+15550100000",
        twilio_voice_from=BUSINESS, voice_agent_ring_seconds=5, offer_timeout_seconds=5)
    conversation = await promised(rig)
    _, phone = await taken(rig, conversation, "+15550001111")  # dialled by the first instance
    rig.emulator.gateway_url = other  # from now on Twilio reaches only the other one
    brief = await said_until(phone, "press 1")
    assert brief[0] == "This is a callback the customer asked for at 10:00."
    await phone.press("1")
    customer = await rig.emulator.next_incoming(CUSTOMER, timeout=10)
    assert "Alex is on the line now" in await customer.next_said()
    await customer.wait_until(lambda: phone in rig.emulator.hearing(customer), timeout=10)
    await customer.hang_up()
    await kept(rig, conversation.id)
    assert dialled(rig, "+15550001111") == 1 and dialled(rig, CUSTOMER) == 1
