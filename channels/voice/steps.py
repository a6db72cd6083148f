"""Multi-step moves of a call that both webhooks and handoff steps need: bringing the caller back when
their agent is gone, dropping a transfer that can no longer happen, taking the caller off hold.

Each leaves the caller hearing something and the desk holding a true picture: never a caller alone in a
started room, never a conversation owned by someone who is not on the line.
"""

from __future__ import annotations

import asyncio

import structlog

from channels.voice.calls import CallState
from channels.voice.runtime import VoiceRuntime

log = structlog.get_logger(__name__)

TRANSFER_CLEARED: dict[str, str | int | None] = {
    "transfer_agent": None, "transfer_sid": None, "transfer_ringing": None, "transfer_from": None,
    "transfer_joined": None,
}
# Twilio's "Call is not in-progress. Cannot redirect.": the caller is gone.
CALL_NOT_IN_PROGRESS = "21220"
_RETRY_SECONDS = 1.0


class CallSteps:
    def __init__(self, rt: VoiceRuntime) -> None:
        self.rt = rt

    async def agent_gone(self, cid: str, call: CallState, agent_id: str) -> None:
        """The agent with the caller is gone (hung up, their join leg never answered, let go in the
        console): the caller's leg is redirected to ``/resume``, which hands the conversation back to the
        head of its queue and tells the caller. A redirect Twilio refuses because the call is over means
        the caller left first; one that fails otherwise is tried again, then the hand-back happens here."""
        rt = self.rt
        await self.drop_transfer(cid, call, "the first agent left before the colleague took over")
        # Cleared first: the hand-back's own status must not find this agent still with the caller.
        await rt.calls.set(cid, agent_id=None, agent_sid=None)
        await rt.desk.on_the_phone(agent_id, False)
        if rt.rest is not None and call.caller_sid:
            back = rt.urls.resume(cid, "agent_left", agent_id)
            for attempt in range(2):
                moved = await rt.rest.update_call(call.caller_sid, url=back)
                if moved.ok:
                    return
                if CALL_NOT_IN_PROGRESS in (moved.error or ""):
                    await rt.desk.caller_left(cid)
                    return
                if attempt == 0 and (moved.retryable or moved.status is None):
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                await rt.checked(cid, "bring the caller back to the queue", moved)
                break
        await rt.desk.agent_left(agent_id, cid)

    async def drop_transfer(self, cid: str, call: CallState, why: str) -> None:
        """A transfer not yet taken that can no longer happen: the colleague's phone stops, and both
        agents' consoles are told."""
        rt = self.rt
        first, target = call.get("transfer_from"), call.get("transfer_agent")
        if not target or call.get("transfer_joined"):
            return
        await rt.calls.set(cid, **TRANSFER_CLEARED)
        if first:
            await rt.desk.transfer_failed(cid, first, target, why)
        answered, ringing = call.get("transfer_sid"), call.get("transfer_ringing")
        if rt.rest is not None and (answered or ringing):
            leg = answered or ringing
            assert leg is not None
            ended = await rt.rest.update_call(leg, status="completed" if answered else "canceled")
            await rt.checked(cid, "stop the colleague's call", ended)

    async def fail_transfer(self, cid: str, call: CallState, why: str) -> None:
        """The colleague did not take it: recorded first (the consoles know at once), then the caller is
        back with the first agent, who hears why."""
        rt = self.rt
        first, target = call.get("transfer_from"), call.get("transfer_agent")
        await rt.calls.set(cid, **TRANSFER_CLEARED)
        if first and target:
            await rt.desk.transfer_failed(cid, first, target, why)
        await self.unhold(cid, call)
        if rt.rest is not None and call.conference_sid and call.agent_sid:
            told = await rt.rest.update_participant(call.conference_sid, call.agent_sid,
                                                    announce_url=rt.urls.notice("transfer_declined"))
            await rt.checked(cid, "tell the agent the transfer failed", told)
        log.info("voice.transfer_failed", why=why)

    async def unhold(self, cid: str, call: CallState) -> None:
        rt = self.rt
        if rt.rest is not None and call.conference_sid and call.caller_sid:
            unheld = await rt.rest.update_participant(call.conference_sid, call.caller_sid, hold=False)
            await rt.checked(cid, "take the caller off hold", unheld)
