"""Whole calls through the voice channel: Twilio's side played by the emulator, everything else real."""

from __future__ import annotations

from typing import Any

from sessions.models import SenderKind
from tests.voice_rig import CALLER, said_until, voice  # noqa: F401 - the fixture

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
