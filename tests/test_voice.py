"""Whole calls through the voice channel: Twilio's side played by the emulator, everything else real."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from xml.etree import ElementTree

from aiohttp import web

from sessions.models import SenderKind
from tests.voice_rig import CALLER, eventually, said_until

GREETING = "Hello, you're through to customer support"


async def test_the_bot_answers_speech_and_each_turn_is_stored_once(voice: Any) -> None:
    rig = await voice()
    leg = await rig.call()
    assert (await leg.next_said()).startswith(GREETING)
    await leg.speak("where is my order 12345", confidence=0.91)
    answer = await leg.next_said()
    assert "order" in answer.lower()
    conversation = await rig.conversation(leg)
    assert conversation.channel == "voice" and conversation.state.value == "bot"
    transcript = await rig.store.transcript(conversation.id)
    customer = [m for m in transcript if m.sender is SenderKind.CUSTOMER]
    assert [m.text for m in customer] == ["where is my order 12345"]
    assert customer[0].channel_metadata["asr_confidence"] == 0.91
    assert [m.text for m in transcript if m.sender is SenderKind.BOT][-1] == answer
    assert conversation.customer.identities[0].address == CALLER
    await leg.hang_up()
    await rig.emulator.callbacks_sent()
    assert rig.emulator.errors == []


async def test_a_caller_handed_off_waits_hearing_their_place_and_the_agent_who_presses_1_is_bridged(
    voice: Any,
) -> None:
    rig = await voice(voice_announce_seconds=10)
    alex = await rig.agent("Alex", "+15550001111")
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("I want to dispute a charge on my card")
    heard = await said_until(leg, "stay on the line")
    assert "billing" in heard[-1].lower()
    phone = await rig.emulator.next_incoming(alex.phone, timeout=10)
    brief = await said_until(phone, "press 1")
    assert any("dispute" in line.lower() for line in brief), brief
    await phone.press("1")
    assert await phone.next_said() == "Connecting you now."
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    conversation = await rig.until_state(leg, "assigned")
    assert conversation.agent == alex.id
    await leg.hang_up()
    await rig.until_state(leg, "resolved")
    assert rig.emulator.errors == []


async def test_key_0_asks_for_a_person_and_silence_is_reprompted_then_ends_the_call(voice: Any) -> None:
    rig = await voice()
    leg = await rig.call()
    await leg.next_said()
    await leg.stay_silent()
    assert "didn't catch that" in await leg.next_said()
    await leg.press("0")
    offer = await leg.next_said()  # the rules' first answer to a request for a person: one offer of help
    transcript = await rig.store.transcript((await rig.conversation(leg)).id)
    pressed = [m for m in transcript if m.sender is SenderKind.CUSTOMER]
    assert pressed[-1].channel_metadata["digits"] == "0" and "agent" in pressed[-1].text
    assert offer == [m for m in transcript if m.sender is not SenderKind.CUSTOMER][-1].text
    await leg.stay_silent()
    await leg.next_said()
    await leg.stay_silent()
    await leg.next_said()
    await leg.stay_silent()
    assert "end the call" in await leg.next_said()
    await leg.wait_ended()
    assert leg.status == "completed"


async def test_a_slow_bot_gets_a_holding_phrase_and_the_call_polls_for_its_answer(
    voice: Any, bot_server: Any,
) -> None:
    async def slow_bot(request: web.Request) -> web.Response:
        await asyncio.sleep(0.8)
        return web.json_response({"text": "Your order left our warehouse today.", "intent": "order_status",
                                  "confidence": 0.95})

    rig = await voice(bot="http", bot_http_url=await bot_server(slow_bot), voice_reply_budget_seconds=0.2)
    leg = await rig.call()
    await leg.next_said()
    started = time.monotonic()
    await leg.speak("where is my order")
    assert await leg.next_said() == "One moment, please."
    assert await leg.next_said(timeout=10) == "Your order left our warehouse today."
    assert time.monotonic() - started < 5
    polls = [w for w in rig.emulator.webhooks if "/twilio/voice/poll" in w.url]
    assert polls and all(w.status == 200 for w in rig.emulator.webhooks)
    customer = [m for m in await rig.store.transcript((await rig.conversation(leg)).id)
                if m.sender is SenderKind.CUSTOMER]
    assert len(customer) == 1


async def test_a_retried_turn_is_stored_once_and_answered_the_same(voice: Any) -> None:
    rig = await voice()
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("how much is shipping")
    first_answer = await leg.next_said()
    turn = next(w for w in rig.emulator.webhooks if "/twilio/voice/turn" in w.url and w.form.get("SpeechResult"))
    status, body = await rig.replay(turn)
    assert status == 200
    said = [e.text for e in ElementTree.fromstring(body).iter("Say")]
    assert said[0] == first_answer
    customer = [m for m in await rig.store.transcript((await rig.conversation(leg)).id)
                if m.sender is SenderKind.CUSTOMER]
    assert [m.text for m in customer] == ["how much is shipping"]


async def test_unsigned_or_malformed_voice_webhooks_are_refused_and_change_nothing(voice: Any) -> None:
    rig = await voice()
    form = {"CallSid": "CA" + "a" * 32, "From": CALLER, "To": "+15550100002", "CallStatus": "ringing"}
    async with rig.http.post(f"{rig.base}/twilio/voice", data=form) as response:
        assert response.status == 403 and (await response.json())["code"] == "invalid_signature"
    status, body = await rig.signed_post("/twilio/voice", {**form, "CallSid": "nope"})
    assert status == 400 and '"invalid_call_sid"' in body
    status, body = await rig.signed_post("/twilio/voice/turn?c=zzz&n=1", {**form})
    assert status == 400 and '"invalid_conversation"' in body
    assert await rig.store.recent() == []


async def handed_off(rig: Any, leg: Any) -> str:
    """The caller asks about a disputed charge: the rules hand that to billing at once."""
    await leg.next_said()
    await leg.speak("I want to dispute a charge on my card")
    await said_until(leg, "stay on the line")
    return str((await rig.conversation(leg)).id)


async def test_an_offer_nobody_answers_lapses_to_the_next_agent(voice: Any) -> None:
    rig = await voice()
    sam = await rig.agent("Sam", "+15550002222")
    rig.emulator.phone(sam.phone, "no-answer")
    leg = await rig.call()
    await handed_off(rig, leg)
    await rig.emulator.callbacks_sent()
    alex = await rig.agent("Alex", "+15550001111")  # online now: the next in line once Sam's offer lapses
    phone = await rig.emulator.next_incoming(alex.phone, timeout=15)
    await said_until(phone, "press 1")
    await phone.press("1")
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    conversation = await rig.until_state(leg, "assigned")
    assert conversation.agent == alex.id
    events = [e for e in await rig.store.events(conversation.id) if e.type == "handoff.queued"]
    assert any(e.data.get("offer_lapsed_for") == sam.id for e in events)


async def test_voicemail_answering_an_agents_phone_passes_the_offer(voice: Any) -> None:
    rig = await voice()
    sam = await rig.agent("Sam", "+15550002222")
    rig.emulator.phone(sam.phone, "machine")
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    alex = await rig.agent("Alex", "+15550001111")
    phone = await rig.emulator.next_incoming(alex.phone, timeout=15)
    await said_until(phone, "press 1")
    events = [e for e in await rig.store.events(cid) if e.type == "handoff.queued"]
    assert any(e.data.get("offer_lapsed_for") == sam.id for e in events)


async def test_two_agents_pressing_1_at_once_one_gets_the_caller_the_other_hears_it_is_taken(voice: Any) -> None:
    rig = await voice(offer_timeout_seconds=5)
    sam = await rig.agent("Sam", "+15550002222")
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    sams = await rig.emulator.next_incoming(sam.phone, timeout=10)
    await said_until(sams, "press 1")
    alex = await rig.agent("Alex", "+15550001111")
    alexs = await rig.emulator.next_incoming(alex.phone, timeout=15)  # Sam's offer lapsed while listening
    await said_until(alexs, "press 1")
    await asyncio.gather(sams.press("1"), alexs.press("1"))
    answers = {await sams.next_said(), await alexs.next_said()}
    assert answers == {"Connecting you now.", "Sorry, this call has already been taken by someone else. Goodbye."}
    conversation = await rig.until_state(leg, "assigned")
    winner = alexs if conversation.agent == alex.id else sams
    await leg.wait_until(lambda: winner in rig.emulator.hearing(leg), timeout=10)
    assert len([e for e in await rig.store.events(cid) if e.type == "handoff.assigned"]) == 1


async def test_a_caller_hanging_up_while_waiting_is_abandoned_with_the_wait_and_the_agents_phone_stops(
    voice: Any,
) -> None:
    rig = await voice()
    sam = await rig.agent("Sam", "+15550002222")
    rig.emulator.phone(sam.phone, "no-answer", ring_seconds=60)
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    await eventually(lambda: any(r.path.endswith("/Calls.json") for r in rig.emulator.requests))
    await leg.hang_up()
    conversation = await rig.until_state(leg, "abandoned")
    abandoned = [e for e in await rig.store.events(cid) if e.type == "handoff.abandoned"]
    assert len(abandoned) == 1 and abandoned[0].data["wait_seconds"] >= 0
    assert conversation.state.value == "abandoned"
    await eventually(lambda: any(r.get("Status") == "canceled" for r in rig.emulator.requests))
    state = await sam.call("GET", "/api/agents/me")
    assert state[1]["presence"]["active"] == 0


async def test_an_agent_hanging_up_puts_the_caller_back_at_the_head_of_the_queue_with_a_word(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    phone = await rig.emulator.next_incoming(alex.phone, timeout=10)
    await said_until(phone, "press 1")
    await phone.press("1")
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    await phone.hang_up()
    heard = await said_until(leg, "back at the front of the queue")
    assert "had to leave" in heard[-1]
    await leg.wait_until(lambda: leg.in_conference, timeout=10)  # waiting again, not in silence
    requeued = [e for e in await rig.store.events(cid) if e.type == "handoff.requeued"]
    assert requeued and requeued[0].data["note"] == "the agent hung up"
    again = await rig.emulator.next_incoming(alex.phone, timeout=10)  # the next free agent: Alex again
    await said_until(again, "press 1")
    await again.press("1")
    await leg.wait_until(lambda: again in rig.emulator.hearing(leg), timeout=10)
    assert (await rig.conversation(leg)).agent == alex.id


async def test_a_caller_hanging_up_during_the_agent_call_frees_the_agent(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    phone = await rig.emulator.next_incoming(alex.phone, timeout=10)
    await said_until(phone, "press 1")
    await phone.press("1")
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    await leg.hang_up()
    await rig.until_state(leg, "resolved")
    await phone.wait_ended(timeout=10)
    resolved = [e for e in await rig.store.events(cid) if e.type == "handoff.resolved"]
    assert resolved[0].data["outcome"] == "caller_hung_up"
    assert (await alex.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 0


async def test_repeated_and_out_of_order_status_callbacks_never_bring_a_call_back(voice: Any) -> None:
    rig = await voice()
    rig.emulator.repeat_status_callbacks = True
    leg = await rig.call()
    await leg.next_said()
    await leg.hang_up()
    await rig.emulator.callbacks_sent()
    completed = next(w for w in rig.emulator.webhooks if w.url.endswith("/twilio/voice/status"))
    late = {**completed.form, "CallStatus": "in-progress"}
    status, _ = await rig.signed_post("/twilio/voice/status", late)
    assert status == 204
    conversation = await rig.until_state(leg, "resolved")
    ended = [e for e in await rig.store.events(conversation.id) if e.type == "call.ended"]
    assert len(ended) == 1
