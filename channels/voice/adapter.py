"""The voice channel's adapter: what happens on the phone when a handoff moves on.

A call cannot be sent a message: what the caller hears is the TwiML of the webhook in progress. So an
outbound message is taken into that answer when one is open, and otherwise is part of the record only
(an agent talks on the phone). The handoff's steps are what this adapter acts on: dial the offered agent,
call an agent who claimed in the console, hold the caller and dial a transfer's target, and bring the
caller back to the queue when their agent is gone.
"""

from __future__ import annotations

from typing import Any, ClassVar

import structlog

from channels.base import Capabilities
from channels.voice.callback_legs import CallbackLegs
from channels.voice.runtime import CHANNEL, VoiceRuntime
from channels.voice.steps import CallSteps
from sessions.models import (
    Conversation,
    ConversationEvent,
    ConversationState,
    Message,
    SenderKind,
    StatusKind,
    StatusUpdate,
)
from sessions.store import ConversationNotFound

log = structlog.get_logger(__name__)

# Twilio's answering machine detection: a voicemail answering an agent's phone is not the agent.
MACHINE_DETECTION = "Enable"
TYPED_ON_A_CALL = "This is a phone call: speak to the caller. Typed text stays in the record only."


class VoiceAdapter:
    name: ClassVar[str] = CHANNEL
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_text_chars=4000, attachments=False, push=False, live_updates=True, warm_transfer=True,
        agents_by_phone=True, callback_menu=True, places_callbacks=True,
    )

    def __init__(self, rt: VoiceRuntime, callbacks: CallbackLegs) -> None:
        self.rt = rt
        self.steps = CallSteps(rt)
        self.callbacks = callbacks

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        if self.rt.collector.take(conversation.id, message):
            return
        if message.sender is SenderKind.AGENT:  # typed in the console during a call: say why it went nowhere
            await self.rt.store.record(conversation.id, ConversationEvent(
                type="delivery.failed", conversation_id=conversation.id,
                data={"message_id": message.id, "reason": "voice_call", "status": None,
                      "detail": TYPED_ON_A_CALL}))

    async def agent_view(self, conversation_id: str) -> dict[str, Any]:
        """The call as the console shows it: where the caller is now, and the brief an agent hears."""
        rt = self.rt
        call = await rt.calls.get(conversation_id)
        if not call.exists:
            return {}
        state = "with the bot"
        if call.ended:
            state = f"ended ({call.get('ended')})"
        elif call.get("transfer_agent"):
            state = "on hold: a colleague is being brought in"
        elif call.agent_id:
            state = "talking with an agent"
        elif call.get("offer_agent"):
            state = "waiting: an agent's phone is ringing"
        elif call.get("announced_at"):
            state = "waiting for an agent"
        agent = await rt.desk.agent(call.agent_id) if call.agent_id else None
        return {"call": {"state": state, "agent": agent.name if agent else None,
                         "brief": await rt.desk.brief(conversation_id)}}

    async def on_status(self, update: StatusUpdate) -> None:
        """REST calls to Twilio run in the background: the desk step that told us is done already, and a
        slow Twilio must not slow the desk's clockwork."""
        if "callback_attempt" in update.data:
            # A due callback, on whatever channel the customer asked for it: an agent with a phone is called
            # when it is offered to them, and the agent who took it is called first.
            step = {StatusKind.OFFERED: self.callbacks.offer, StatusKind.QUEUED: self.callbacks.withdrawn,
                    StatusKind.ASSIGNED: self.callbacks.start}.get(update.kind)
            if step is not None:
                name = f"voice-callback-{update.kind.value}-{update.conversation_id}"
                self.rt.spawn(step(update), name=name, after=update.conversation_id)
            return
        handler = {
            StatusKind.OFFERED: self._offered,
            StatusKind.ASSIGNED: self._assigned,
            StatusKind.QUEUED: self._queued,
            StatusKind.WAIT_UPDATE: self._wait_update,
            StatusKind.TRANSFERRING: self._transferring,
            StatusKind.TRANSFERRED: self._back_to_wait,
            StatusKind.REQUEUED: self._back_to_wait,
            StatusKind.BACK_TO_BOT: self._back_to_wait,
            StatusKind.RESOLVED: self._back_to_wait,
        }.get(update.kind)
        if handler is not None:
            self.rt.spawn(handler(update), name=f"voice-{update.kind.value}-{update.conversation_id}",
                          after=update.conversation_id)

    async def _offered(self, update: StatusUpdate) -> None:
        """Call the offered agent, if they take calls by phone; otherwise the console shows the offer."""
        rt, cid, agent_id = self.rt, update.conversation_id, update.agent_id
        call = await rt.calls.get(cid)
        if agent_id is None or call.ended or not call.exists:
            return
        line = await rt.desk.agent(agent_id)
        if line is None or line.phone is None or rt.rest is None or rt.config.from_number is None:
            return
        if (await rt.store.get(cid)).state is not ConversationState.OFFERED:
            return  # taken in the console, or lapsed, meanwhile
        await rt.calls.set(cid, offer_agent=agent_id, offer_sid=None)
        await self._dial(cid, agent_id, line.phone, "offer")

    async def _dial(self, cid: str, agent_id: str, phone: str, kind: str) -> bool:
        """Calls create is not idempotent: never retried. A clear refusal passes the offer (or fails the
        transfer) now; an ambiguous failure waits for the status callback or the offer's deadline."""
        rt = self.rt
        assert rt.rest is not None and rt.config.from_number is not None
        result = await rt.rest.create_call(
            phone, rt.config.from_number, rt.urls.agent(cid, agent_id, kind),
            status_callback=rt.urls.agent_status(cid, agent_id, kind),
            timeout_seconds=rt.config.agent_ring_seconds, machine_detection=MACHINE_DETECTION,
        )
        if result.ok:
            log.info("voice.agent_dialled", conversation_id=cid, agent_id=agent_id, kind=kind, sid=result.sid)
            await rt.calls.set(cid, **{f"{kind}_ringing": result.sid})
            return True
        log.warning("voice.agent_not_dialled", conversation_id=cid, agent_id=agent_id, kind=kind,
                    status=result.status, ambiguous=result.ambiguous)
        if result.ambiguous:
            return True
        if kind == "offer":
            await rt.calls.set(cid, offer_agent=None)
            await rt.desk.pass_offer(agent_id, cid)
        elif kind == "transfer":
            why = "the colleague's phone could not be called"
            await self.steps.fail_transfer(cid, await rt.calls.get(cid), why)
        elif kind == "join":  # the agent who claimed in the console cannot be reached
            await self.steps.agent_gone(cid, await rt.calls.get(cid), agent_id)
        return False

    async def _assigned(self, update: StatusUpdate) -> None:
        """Claimed in the console (not by a key press on the phone): call the agent to join the caller."""
        rt, cid, agent_id = self.rt, update.conversation_id, update.agent_id
        call = await rt.calls.get(cid)
        if update.data.get("via", "console") != "console":
            return  # pressed 1 on the phone, or a transfer's handover: already with the caller
        if agent_id is None or call.ended or not call.exists:
            return
        ringing = call.get("offer_ringing") if not call.get("offer_sid") else None
        if ringing and rt.rest is not None:  # it may still ring for the offer they took in the console
            stopped = await rt.rest.update_call(ringing, status="canceled")
            await rt.checked(cid, "stop the offer's ringing", stopped)
        await rt.calls.set(cid, agent_id=agent_id, agent_sid=None, offer_agent=None, offer_sid=None,
                           offer_ringing=None)
        line = await rt.desk.agent(agent_id)
        if line is None or line.phone is None or rt.rest is None or rt.config.from_number is None:
            log.warning("voice.claimed_without_phone", conversation_id=cid, agent_id=agent_id)
            await self.steps.agent_gone(cid, await rt.calls.get(cid), agent_id)
            return
        await self._dial(cid, agent_id, line.phone, "join")

    async def _queued(self, update: StatusUpdate) -> None:
        """An offer lapsed (or was declined in the console): stop the agent's phone if it still rings."""
        rt, cid = self.rt, update.conversation_id
        lapsed = update.data.get("offer_lapsed_for")
        if not isinstance(lapsed, str):
            return  # a handoff's own notice is spoken by the turn that made it
        call = await rt.calls.get(cid)
        if call.get("offer_agent") == lapsed:
            # Still ringing: stop it. Answered (hearing the brief): a key press now hears it was passed on.
            ringing = call.get("offer_ringing") if not call.get("offer_sid") else None
            await rt.calls.set(cid, offer_agent=None, offer_sid=None, offer_ringing=None)
            if ringing and rt.rest is not None:
                stopped = await rt.rest.update_call(ringing, status="canceled")
                await rt.checked(cid, "stop a lapsed offer's ringing", stopped)

    async def _wait_update(self, update: StatusUpdate) -> None:
        """What the waiting caller hears next time: the same words and estimate web chat shows. With nobody
        online to serve the queue, the caller is not kept holding: told so, and called back."""
        rt, cid = self.rt, update.conversation_id
        call = await rt.calls.get(cid)
        if call.ended or not call.exists:
            return
        await rt.calls.set(cid, wait_text=update.text or "")
        eta = update.status.get("eta_seconds")
        if isinstance(eta, int) and call.caller_sid and rt.rest is not None:
            await self._maybe_offer_callback(cid, call.caller_sid, eta)
            return
        if eta is None and call.caller_sid and rt.rest is not None:
            # The caller's leg moves the conversation to the follow-ups when it gets there (/resume): never
            # a follow-up while the caller still holds.
            moved = await rt.rest.update_call(call.caller_sid, url=rt.urls.resume(cid, "unstaffed"))
            await rt.checked(cid, "tell the caller nobody is online", moved)
            log.info("voice.unstaffed_goodbye", conversation_id=cid)

    async def _maybe_offer_callback(self, cid: str, caller_sid: str, eta: int) -> None:
        """The expected wait passed the queue's limit for callbacks: the caller leaves the hold audio for the
        offer (their place is kept), once per call."""
        rt = self.rt
        try:
            conversation = await rt.store.get(cid)
        except ConversationNotFound:
            return
        after = rt.desk.callback_after_seconds(conversation)
        if after is None or eta <= after or conversation.state is not ConversationState.QUEUED:
            return
        if not await rt.calls.claim(cid, "cb_wait_offer", str(eta)):
            return
        assert rt.rest is not None
        moved = await rt.rest.update_call(caller_sid, url=rt.urls.resume(cid, "wait_over", e=eta))
        await rt.checked(cid, "offer the waiting caller a callback", moved)
        log.info("voice.callback_wait_over", conversation_id=cid, eta_seconds=eta, after=after)

    async def _transferring(self, update: StatusUpdate) -> None:
        """Warm transfer: settle who ends the room before anyone is held (Twilio ignores changes to a held
        participant), hold the caller, and call the colleague, who hears the note and the brief."""
        rt, cid = self.rt, update.conversation_id
        first, target = update.data.get("from_agent"), update.data.get("to_agent")
        call = await rt.calls.get(cid)
        if not isinstance(first, str) or not isinstance(target, str):
            return
        if call.get("transfer_agent"):
            await rt.desk.transfer_failed(cid, first, target, "another transfer of this call is under way")
            return
        line = await rt.desk.agent(target)
        conference, caller, agent_leg = call.conference_sid, call.caller_sid, call.agent_sid
        if (line is None or line.phone is None or rt.rest is None or rt.config.from_number is None
                or not conference or not caller or not agent_leg):
            await rt.desk.transfer_failed(cid, first, target, "the colleague cannot be called on a phone")
            return
        await rt.calls.set(cid, transfer_agent=target, transfer_from=first, transfer_sid=None,
                           transfer_joined=None)
        participants = rt.rest.update_participant
        await rt.checked(cid, "let the caller end the room",
                         await participants(conference, caller, end_conference_on_exit=True))
        await rt.checked(cid, "keep the room when the agent leaves",
                         await participants(conference, agent_leg, end_conference_on_exit=False))
        await rt.checked(cid, "hold the caller",
                         await participants(conference, caller, hold=True, hold_url=rt.urls.hold()))
        await self._dial(cid, target, line.phone, "transfer")

    async def _back_to_wait(self, update: StatusUpdate) -> None:
        """The agent with the caller let go in the console (a transfer to a queue, a hand-back, resolved,
        back to the bot): their phone leg ends, and the caller hears why and where they are now."""
        rt, cid = self.rt, update.conversation_id
        call = await rt.calls.get(cid)
        if call.ended or not call.exists or call.agent_id is None:
            return
        leg = call.agent_sid
        await self.steps.drop_transfer(cid, call, "the first agent let the call go")
        await rt.calls.set(cid, agent_id=None, agent_sid=None, resume_text=update.text or "")
        await rt.desk.on_the_phone(call.agent_id, False)
        if rt.rest is None:
            return
        if call.caller_sid:
            moved = await rt.rest.update_call(call.caller_sid, url=rt.urls.resume(cid, update.kind.value))
            await rt.checked(cid, "move the caller on", moved)
        if leg:
            await rt.checked(cid, "end the agent's leg", await rt.rest.update_call(leg, status="completed"))
