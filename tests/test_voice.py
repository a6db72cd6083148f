"""Whole calls through the voice channel: Twilio's side played by the emulator, everything else real."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from aiohttp import web

from gateway.app import SWEEP_SECONDS
from gateway.settings import DEMO_RULES
from sessions.models import SenderKind
from tests.test_twilio_messaging import sms_form
from tests.voice_rig import CALLER, PUBLIC, SUNDAY, eventually, said_until

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
    # Waiting while Sam's phone rings out, the caller hears their place and the expected wait.
    heard = await said_until(leg, "You're number 1", timeout=20)
    assert "Billing" in heard[-1] and "The wait is about" in heard[-1]
    alex = await rig.agent("Alex", "+15550001111")  # online now: the next in line once Sam's offer lapsed
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
    rig = await voice(offer_timeout_seconds=5, voice_agent_answer_seconds=5)
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
    leg, phone, cid = await bridged_with_agent(rig, alex)
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
    leg, phone, cid = await bridged_with_agent(rig, alex)
    # Talking on the phone keeps a console-less agent present (their heartbeat would end the call after 60 s).
    presence = (await alex.call("GET", "/api/agents/me"))[1]["presence"]
    assert presence["heartbeat_until"] / 1000 > time.time() + 3600
    await leg.hang_up()
    await rig.until_state(leg, "resolved")
    await phone.wait_ended(timeout=10)
    await rig.emulator.callbacks_sent()
    await eventually_async(lambda: _heartbeat_within(alex, 61), True)
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


async def colleague_briefed(rig: Any, alex: Any, cid: str) -> tuple[Any, Any]:
    """Alex transfers the call to Sam, whose phone rings and who has heard the brief up to "press 1"."""
    sam = await rig.agent("Sam", "+15550002222", capacity=1)
    await alex.call("POST", f"/api/conversations/{cid}/transfer", {"agent": "Sam"})
    sams = await rig.emulator.next_incoming(sam.phone, timeout=10)
    await said_until(sams, "press 1")
    return sam, sams


async def bridged_with_agent(rig: Any, agent: Any) -> tuple[Any, Any, str]:
    """A caller handed off and the agent who pressed 1, talking."""
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    phone = await rig.emulator.next_incoming(agent.phone, timeout=10)
    await said_until(phone, "press 1")
    await phone.press("1")
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    return leg, phone, cid


async def test_a_warm_transfer_holds_the_caller_briefs_the_colleague_and_bridges_them_when_the_first_leaves(
    voice: Any,
) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    sam = await rig.agent("Sam", "+15550002222", capacity=1)
    await alex.call("POST", "/api/agents/me/presence", {"status": "online", "capacity": 1})
    status, body = await alex.call("POST", f"/api/conversations/{cid}/transfer",
                                   {"agent": "Sam", "note": "Refund of the double charge approved, needs booking"})
    assert status == 202 and body["to_agent"]["name"] == "Sam"
    await leg.wait_until(lambda: leg.on_hold, timeout=10)
    await said_until(leg, "Please hold")
    sams = await rig.emulator.next_incoming(sam.phone, timeout=10)
    brief = await said_until(sams, "press 1")
    assert "double charge" in brief[0] and brief[0].startswith("Transfer from Alex")
    # Settled before anyone was held: the caller ends the room, the first agent does not.
    updates = [r for r in rig.emulator.requests if "/Participants/" in r.path]
    assert [r.get("EndConferenceOnExit") for r in updates[:2]] == ["true", "false"]
    assert updates[2].get("Hold") == "true"
    await sams.press("1")
    await sams.wait_until(lambda: alexs in rig.emulator.hearing(sams), timeout=10)
    assert leg.on_hold and (await rig.conversation(leg)).agent == alex.id  # one owner: still Alex
    await alexs.hang_up()
    await leg.wait_until(lambda: sams in rig.emulator.hearing(leg), timeout=10)
    conversation = await rig.until_state(leg, "assigned")
    assert conversation.agent == sam.id
    assert (await alex.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 0
    assert (await sam.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 1
    await asyncio.sleep(0.5)  # nothing more is dialled after the handover (no second call to Sam)
    creates = [r.get("To") for r in rig.emulator.requests if r.path.endswith("/Calls.json")]
    assert creates == [alex.phone, sam.phone]
    assert rig.emulator.errors == []


async def test_a_declined_transfer_brings_the_caller_back_to_the_first_agent_who_is_told(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    sam = await rig.agent("Sam", "+15550002222", capacity=1)
    status, _ = await alex.call("POST", f"/api/conversations/{cid}/transfer", {"agent": sam.id, "note": "VIP"})
    assert status == 202
    sams = await rig.emulator.next_incoming(sam.phone, timeout=10)
    await said_until(sams, "press 1")
    await sams.press("2")
    await said_until(alexs, "didn't take the transfer")
    await leg.wait_until(lambda: not leg.on_hold and alexs in rig.emulator.hearing(leg), timeout=10)
    conversation = await rig.conversation(leg)
    assert conversation.agent == alex.id and conversation.state.value == "assigned"
    failed = [e for e in await rig.store.events(cid) if e.type == "handoff.transfer_failed"]
    assert len(failed) == 1 and failed[0].data["reason"] == "declined"


async def test_a_transfer_nobody_answers_also_comes_back(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    sam = await rig.agent("Sam", "+15550002222", capacity=1)
    rig.emulator.phone(sam.phone, "no-answer")
    await alex.call("POST", f"/api/conversations/{cid}/transfer", {"agent": "Sam"})
    await said_until(alexs, "didn't take the transfer")
    await leg.wait_until(lambda: not leg.on_hold and alexs in rig.emulator.hearing(leg), timeout=10)


async def test_a_call_claimed_in_the_console_calls_the_agent_who_joins_the_caller(voice: Any) -> None:
    rig = await voice()
    nophone = await rig.agent("Nia", None)  # offered the call in the console: no phone to ring
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    status, body = await nophone.call("POST", f"/api/conversations/{cid}/claim")
    assert status == 409 and body["code"] == "phone_required"
    assert (await rig.conversation(leg)).state.value in ("queued", "offered")
    status, _ = await nophone.call("POST", f"/api/conversations/{cid}/claim", {"phone": "+15550003333"})
    assert status == 200
    phone = await rig.emulator.next_incoming("+15550003333", timeout=10)
    await leg.wait_until(lambda: phone in rig.emulator.hearing(leg), timeout=10)
    assert (await rig.conversation(leg)).agent == nophone.id
    status, body = await nophone.call("POST", "/api/agents/me/phone", {"phone": "12345"})
    assert status == 400 and body["code"] == "invalid_body"


async def test_after_hours_the_caller_is_told_when_the_team_is_back_and_never_put_on_hold(voice: Any) -> None:
    rig = await voice(clock=SUNDAY)
    await rig.agent("Alex", "+15550001111", skills=[])
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("I want to talk to a human")
    await leg.next_said()  # the rules' one offer of help first
    await leg.speak("agent please")
    heard = await said_until(leg, "press the hash key")
    assert "they're back Monday" in heard[0] and "call you back once they're open" in heard[0]
    assert heard[-1].startswith("Our Customer Support team can call you back, so you don't have to hold. "
                                "Press 1 to be called on the number ending in 0 1 4 2")
    await leg.press("1")  # the number they call from
    times = await said_until(leg, "for no callback")
    # In the caller's time zone (their number's: San Francisco), Monday 08:00 in New York.
    assert " ".join(times[-1].split()).startswith(
        "When should our Customer Support team call you? Press 1 for as soon as we open "
                                "(Monday 05:00 Pacific Time). Press 2 for Monday 30 Nov, 06:00-07:00 Pacific Time.")
    await leg.press("2")  # Monday's first slot
    done = await said_until(leg, "Goodbye")
    assert done[-1].startswith("Done. Our Customer Support team will call you on the number ending in 0 1 4 2, "
                               "Monday 30 Nov, 06:00-07:00 Pacific Time.")
    assert "To cancel it, call us and press 2." in done[-1]
    await leg.wait_ended()
    assert not any(w for w in rig.emulator.webhooks if "/twilio/voice/wait" in w.url)
    conversation = await rig.conversation(leg)
    assert conversation.handoff is not None and conversation.handoff.mode == "callback"
    # A promise kept by the desk: the caller's number, at the time they chose (docs/callbacks.md).
    assert conversation.state.value == "callback" and conversation.callback is not None
    assert conversation.callback.number == CALLER and conversation.callback.state == "scheduled"
    assert conversation.callback.slot is not None and not conversation.callback.slot.asap
    assert conversation.callback.due_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # Monday 09:00 New York


async def asks_for_a_person_after_hours(rig: Any) -> Any:
    """A caller asks for a person twice on Sunday: the team is closed, and the callback questions begin."""
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("I want to talk to a human")
    await leg.next_said()
    await leg.speak("agent please")
    await said_until(leg, "press the hash key")
    return leg


async def test_after_hours_a_caller_keys_in_another_number_and_a_wrong_one_is_asked_again(voice: Any) -> None:
    rig = await voice(clock=SUNDAY)
    leg = await asks_for_a_person_after_hours(rig)
    await leg.press("12#")  # too short to be a number
    again = await said_until(leg, "press the hash key")
    assert again[0] == "Sorry, that didn't work." and "Press 1 to be called on" in again[-1]
    await leg.press("6505550199#")  # a local way of writing it: read in the caller's country
    await said_until(leg, "for no callback")
    await leg.press("1")  # as soon as they open
    done = await said_until(leg, "Goodbye")
    assert "on the number ending in 0 1 9 9, as soon as we open" in done[-1]
    await leg.wait_ended()
    conversation = await rig.conversation(leg)
    assert conversation.callback is not None and conversation.callback.number == "+16505550199"
    assert conversation.callback.slot is not None and conversation.callback.slot.asap
    keys = [w.form.get("Digits") for w in rig.emulator.webhooks if "/callback/intake" in w.url]
    assert keys == ["12", "6505550199", "1"]


async def test_after_hours_a_caller_who_answers_nothing_is_called_back_as_soon_as_the_team_opens(
    voice: Any,
) -> None:
    rig = await voice(clock=SUNDAY)
    leg = await asks_for_a_person_after_hours(rig)
    for _ in range(3):  # the question, asked again twice, then the caller's own number
        await leg.stay_silent(timeout=10)
    await said_until(leg, "for no callback")
    for _ in range(3):
        await leg.stay_silent(timeout=10)
    done = await said_until(leg, "Goodbye")
    assert "on the number ending in 0 1 4 2, as soon as we open" in done[-1]
    conversation = await rig.until_state(leg, "callback")
    assert conversation.callback is not None and conversation.callback.slot is not None
    assert conversation.callback.slot.asap


async def test_after_hours_a_caller_who_presses_star_gets_no_callback_and_the_team_follows_up(voice: Any) -> None:
    rig = await voice(clock=SUNDAY)
    leg = await asks_for_a_person_after_hours(rig)
    await leg.press("1")
    await said_until(leg, "for no callback")
    await leg.press("*")
    done = await said_until(leg, "Goodbye")
    assert done == ["No problem, no callback. Everything you've told us stays with our Customer Support team.",
                    "Thank you for calling. Goodbye."]
    await leg.wait_ended()
    conversation = await rig.conversation(leg)
    assert conversation.callback is not None and conversation.callback.state == "declined"
    assert conversation.state.value == "async"


async def test_a_team_that_takes_voicemail_after_hours_records_one_for_the_agents(voice: Any) -> None:
    rig = await voice(clock=SUNDAY)
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("I want to dispute a charge on my card")
    heard = await said_until(leg, "after the tone")
    assert "Billing" in heard[-1]
    turn = [w for w in rig.emulator.webhooks if "/twilio/voice/turn" in w.url][-1]
    # The TwiML asks Twilio to record after the tone; the emulator says it records no sound.
    await eventually(lambda: any("Record" in e for e in rig.emulator.errors))
    cid = (await rig.conversation(leg)).id
    form = {**turn.form, "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            "RecordingSid": "RE" + "1" * 32, "RecordingDuration": "14"}
    for _ in range(2):  # Twilio retries: stored once
        status, body = await rig.signed_post(f"/twilio/voice/recorded?c={cid}", form)
        assert status == 200 and "saved" in body
    voicemail = [m for m in await rig.store.transcript(cid) if m.channel_metadata.get("voicemail")]
    assert len(voicemail) == 1 and voicemail[0].attachments[0].url == form["RecordingUrl"]


async def test_with_nobody_online_the_caller_is_told_and_called_back_not_held(voice: Any) -> None:
    rig = await voice()
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    heard = await said_until(leg, "press the hash key")
    assert any("nobody from the team is free" in line.lower() for line in heard), heard
    assert "Press 1 to be called on the number ending in 0 1 4 2" in heard[-1]
    await leg.press("1")
    times = await said_until(leg, "for no callback")
    assert times[-1].startswith("When should our Billing team call you? Press 1 for as soon as possible.")
    await leg.press("1")
    done = await said_until(leg, "Goodbye")
    assert "as soon as possible" in done[-1]
    await leg.wait_ended(timeout=10)
    # Billing takes callbacks when nobody is online: the caller's number, as soon as possible. That is now,
    # so the desk may already have moved it into the queue for its first attempt; the caller hanging up on
    # the goodbye abandons nothing.
    await eventually(lambda: any("/twilio/voice/status" in w.url for w in rig.emulator.webhooks))
    conversation = await rig.conversation(leg)
    assert conversation.state.value in ("callback", "queued"), conversation.state
    assert conversation.queue == "billing" and conversation.callback is not None
    assert conversation.callback.number == CALLER and conversation.callback.why == "unstaffed"
    assert conversation.callback.state in ("scheduled", "offering")
    assert cid not in [c for c, _ in await rig.queue_backlog("billing")]


async def test_the_console_api_shows_the_call_its_brief_and_every_turn_as_it_happens(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", None)  # takes calls in the console: offered there
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    status, body = await alex.call("GET", f"/api/conversations/{cid}")
    assert status == 200
    assert body["call"]["state"].startswith("waiting")
    assert any("dispute" in line for line in body["call"]["brief"])
    said = [m["text"] for m in body["context"]["transcript"] if m["sender"] == "customer"]
    assert said == ["I want to dispute a charge on my card"]
    await leg.hang_up()
    await rig.until_state(leg, "abandoned")


async def test_every_webhook_of_a_whole_call_delivered_twice_changes_nothing_the_second_time(voice: Any) -> None:
    """Twilio retries a webhook it got no answer to in time: every one of a call's, sent again after the
    call, stores nothing, records nothing and moves nothing."""
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, phone, cid = await bridged_with_agent(rig, alex)
    await leg.hang_up()
    await rig.until_state(leg, "resolved")
    await phone.wait_ended(timeout=10)
    await rig.emulator.callbacks_sent()
    await asyncio.sleep(0.3)
    transcript, events = await rig.store.transcript_and_events(cid)
    sent = list(rig.emulator.webhooks)
    # (The room's wait audio may never be asked for: the agent can start the room before the caller has
    # heard everything said on the way in.)
    assert {w.url.split("?")[0].removeprefix(PUBLIC) for w in sent} >= {
        "/twilio/voice", "/twilio/voice/turn", "/twilio/voice/agent",
        "/twilio/voice/agent/key", "/twilio/voice/agent/status", "/twilio/voice/conference",
        "/twilio/voice/status"}
    for webhook in sent:
        status, _ = await rig.replay(webhook)
        assert status in (200, 204), webhook.url
    await asyncio.sleep(0.5)
    again, events_again = await rig.store.transcript_and_events(cid)
    assert [m.id for m in again] == [m.id for m in transcript]
    assert [e.type for e in events_again] == [e.type for e in events]
    assert (await rig.conversation(leg)).state.value == "resolved"
    assert (await alex.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 0


async def test_a_caller_hanging_up_on_hold_during_a_transfer_frees_both_agents(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    sam, sams = await colleague_briefed(rig, alex, cid)
    await sams.press("1")
    await sams.wait_until(lambda: alexs in rig.emulator.hearing(sams), timeout=10)
    await leg.hang_up()
    await rig.until_state(leg, "resolved")
    await alexs.wait_ended(timeout=10)
    await sams.wait_ended(timeout=10)
    await rig.emulator.callbacks_sent()
    for agent in (alex, sam):
        await eventually_async(lambda a=agent: _active(a), 0)


async def _active(agent: Any) -> int:
    return int((await agent.call("GET", "/api/agents/me"))[1]["presence"]["active"])


async def eventually_async(read: Any, expected: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"{value} is not {expected}"
        await asyncio.sleep(0.05)


async def test_words_the_recogniser_was_unsure_of_feed_the_low_confidence_rule(voice: Any) -> None:
    rig = await voice()
    leg = await rig.call()
    await leg.next_said()
    await leg.speak("how much is shipping", confidence=0.95)
    sure = await leg.next_said()
    await leg.speak("I forgot my password", confidence=0.3)  # words the bot knows, barely recognised
    unsure = await leg.next_said()
    assert "shipping" in sure.lower() and "password" not in unsure.lower()
    replies = [m for m in await rig.store.transcript((await rig.conversation(leg)).id)
               if m.sender is SenderKind.BOT and m.channel_metadata.get("policy")]
    assert replies and replies[-1].text == unsure  # the rules' clarifying question, not the FAQ answer
    assert replies[-1].channel_metadata["policy"] == "clarify"
    assert replies[-1].turn is not None and replies[-1].turn.confidence == 0.3


async def _heartbeat_within(agent: Any, seconds: float) -> bool:
    presence = (await agent.call("GET", "/api/agents/me"))[1]["presence"]
    return bool(presence["heartbeat_until"] / 1000 <= time.time() + seconds)


async def test_a_first_agent_leaving_before_the_colleague_takes_over_drops_the_transfer(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    _, sams = await colleague_briefed(rig, alex, cid)
    await alexs.hang_up()  # before Sam pressed 1
    await sams.wait_ended(timeout=10)  # Sam's call ends: there is nobody to join any more
    await said_until(leg, "back at the front of the queue")
    failed = [e for e in await rig.store.events(cid) if e.type == "handoff.transfer_failed"]
    assert len(failed) == 1
    call = await rig.call_state(cid)
    assert call.get("transfer_agent") is None


async def test_resolving_a_call_in_the_console_ends_the_agents_leg_and_says_goodbye(voice: Any) -> None:
    rig = await voice()
    alex = await rig.agent("Alex", "+15550001111")
    leg, alexs, cid = await bridged_with_agent(rig, alex)
    status, _ = await alex.call("POST", f"/api/conversations/{cid}/resolve", {"outcome": "refund booked"})
    assert status == 200
    heard = await said_until(leg, "Goodbye")
    assert "resolved" in " ".join(heard)
    await alexs.wait_ended(timeout=10)
    await leg.wait_ended(timeout=10)
    assert (await alex.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 0


async def test_an_agent_who_claimed_in_the_console_but_never_answers_hands_the_caller_back(voice: Any) -> None:
    rig = await voice()
    nia = await rig.agent("Nia", None)
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    rig.emulator.phone("+15550003333", "no-answer")
    status, _ = await nia.call("POST", f"/api/conversations/{cid}/claim", {"phone": "+15550003333"})
    assert status == 200
    heard = await said_until(leg, "back at the front of the queue", timeout=15)
    assert heard
    conversation = await rig.until_state(leg, "queued")
    assert conversation.agent is None
    assert (await nia.call("GET", "/api/agents/me"))[1]["presence"]["active"] == 0


async def test_a_waiting_caller_presses_star_and_arranges_a_callback_instead_of_holding(voice: Any) -> None:
    rig = await voice()
    await rig.agent("Nia", None)  # online in the console only: the call is offered there, the caller holds
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    heard = await said_until(leg, "press star")
    assert heard[-1] == "You can press star at any time to be called back instead of holding."
    await leg.wait_until(lambda: leg.in_conference, timeout=10)
    await leg.press("*")
    number = await said_until(leg, "press the hash key")
    assert number[-1].startswith("Our Billing team can call you back, so you don't have to hold. Press 1")
    await leg.press("1")
    await said_until(leg, "for no callback")
    await leg.press("1")
    done = await said_until(leg, "Goodbye")
    assert "will call you on the number ending in 0 1 4 2, as soon as possible" in done[-1]
    await leg.wait_ended(timeout=10)
    conversation = await rig.store.get(cid)
    assert conversation.callback is not None and conversation.callback.why == "asked"
    assert conversation.callback.state in ("scheduled", "offering")  # as soon as possible: due at once
    assert conversation.callback.number == CALLER


async def test_a_waiting_caller_who_presses_star_then_changes_their_mind_keeps_their_place(voice: Any) -> None:
    rig = await voice()
    await rig.agent("Nia", None)
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    await said_until(leg, "press star")
    await leg.wait_until(lambda: leg.in_conference, timeout=10)
    await leg.press("*")
    await said_until(leg, "press the hash key")
    await leg.press("*")  # no callback after all
    back = await said_until(leg, "no callback")
    assert back[-1] == "No problem, no callback. Everything you've told us stays with our Billing team."
    await leg.wait_until(lambda: leg.in_conference, timeout=10)  # holding again, in the same queue
    conversation = await rig.store.get(cid)
    assert conversation.state.value in ("queued", "offered") and conversation.queue == "billing"
    assert conversation.callback is not None and conversation.callback.state == "declined"
    entered = [w for w in rig.emulator.webhooks if "/twilio/voice/resume" in w.url]
    assert len(entered) == 1  # star left the room once; the second time round it is not offered again


async def test_a_caller_facing_a_long_wait_is_offered_a_callback_before_holding_and_may_keep_their_place(
    voice: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    queues = rules / "queues.yaml"
    queues.write_text(queues.read_text().replace(
        "      offer_when: [unstaffed]\n      max_attempts: 2",
        "      offer_when: [unstaffed, wait_over]\n      callback_after_seconds: 60\n      max_attempts: 2"))
    rig = await voice(rules_dir=rules)
    nia = await rig.agent("Nia", None, capacity=1)  # Billing's only agent, busy with someone else
    status, _ = await rig.signed_post("/twilio/messaging", sms_form("I want to dispute a charge on my card"))
    assert status == 200
    [texted] = await rig.store.recent()
    await rig.until_state_of(texted, "offered")
    status, body = await nia.call("POST", f"/api/conversations/{texted}/claim")
    assert status == 200, body
    leg = await rig.call()
    cid = await handed_off(rig, leg)
    # The desk's first queue update estimates one handle time (minutes) against Billing's 60 s: the caller
    # leaves the hold audio for the offer, once.
    number = await said_until(leg, "press the hash key", timeout=15)
    assert number[-1].startswith("Our Billing team can call you back, so you don't have to hold. Press 1")
    await leg.press("*")  # no thanks: back to holding, in the same place
    back = await said_until(leg, "no callback")
    assert back[-1] == "No problem, no callback. Everything you've told us stays with our Billing team."
    await leg.wait_until(lambda: leg.in_conference, timeout=10)
    waiting = await rig.store.get(cid)
    assert waiting.state.value == "queued" and waiting.callback is not None
    assert waiting.callback.why == "wait_over" and waiting.callback.state == "declined"
    await asyncio.sleep(3 * SWEEP_SECONDS)  # later queue updates: not offered again
    assert len([w for w in rig.emulator.webhooks if "why=wait_over" in w.url]) == 1
