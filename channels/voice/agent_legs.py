"""The agents' side of a call: their phones, dialled by the gateway, hear a brief and take the call with 1.

Three kinds of leg, named in their URLs (``k``): ``offer`` (the desk offered the call: pressing 1 is the
desk's atomic claim, so of two agents pressing at once one wins and the other hears it is taken), ``join``
(the agent claimed in the console and is called to join) and ``transfer`` (a colleague's warm transfer:
pressing 1 joins the first agent while the caller holds; the caller is bridged when the first agent
leaves). A leg that ends unanswered, busy, by voicemail or without a 1 passes the offer or fails the
transfer, so the caller is never left with nobody.
"""

from __future__ import annotations

import re

import structlog
from aiohttp import web

from channels.voice import twiml
from channels.voice.caller import FINAL_STATUSES
from channels.voice.calls import CallState, room_of
from channels.voice.desk import Accepted
from channels.voice.params import BadRequest, answer, call_sid, conversation_param
from channels.voice.runtime import VoiceRuntime
from channels.voice.steps import TRANSFER_CLEARED, CallSteps

log = structlog.get_logger(__name__)

KINDS = frozenset({"offer", "join", "transfer"})
_AGENT = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
NOTICES = {"transfer_declined"}
ROOM_STARTS = frozenset({"conference-start", "participant-join"})



def _agent_param(request: web.Request) -> tuple[str, str]:
    agent_id, kind = request.query.get("a", ""), request.query.get("k", "")
    if not _AGENT.match(agent_id) or kind not in KINDS:
        detail = "The URL's a= and k= must name an agent and offer, join or transfer."
        raise BadRequest("invalid_agent_leg", detail)
    return agent_id, kind


class AgentLegs:
    def __init__(self, rt: VoiceRuntime) -> None:
        self.rt = rt
        self.steps = CallSteps(rt)

    def _speech(self) -> twiml.Speech:
        return twiml.Speech(self.rt.config.locale(None), self.rt.config.voice)

    # -- POST /twilio/voice/agent?c=&a=&k= (the agent answered) ---------------------------------------------
    async def answered(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, (agent_id, kind), sid = conversation_param(request), _agent_param(request), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, agent_id=agent_id, call_sid=sid)
        rt, texts, speech = self.rt, self.rt.config.texts, self._speech()
        call = await rt.calls.get(cid)
        if form.get("AnsweredBy", "human") not in ("human", "unknown"):  # voicemail or fax: not a person
            log.info("voice.agent_machine", answered_by=form.get("AnsweredBy"))
            await self._not_taken(cid, call, agent_id, kind, "voicemail answered")
            return answer(twiml.goodbye(speech, []))
        if call.ended or not self._still_for(call, agent_id, kind):
            return answer(twiml.goodbye(speech, [texts.gone]))
        if kind == "join":
            await rt.calls.set(cid, agent_sid=sid)
            await rt.desk.on_the_phone(agent_id, True)
            brief = await rt.desk.brief(cid)
            return self._join(cid, " ".join(brief[:2]))
        if kind == "transfer":
            await rt.calls.set(cid, transfer_sid=sid)
        else:
            await rt.calls.set(cid, offer_sid=sid)
            await rt.desk.hold_offer(agent_id, cid, rt.config.brief_seconds)
        brief = await rt.desk.brief(cid)
        key_url = rt.urls.agent_key(cid, agent_id, kind)
        seconds = rt.config.agent_key_seconds
        return answer(twiml.agent_brief(speech, [*brief, texts.accept_prompt], key_url, seconds))

    @staticmethod
    def _still_for(call: CallState, agent_id: str, kind: str) -> bool:
        if kind == "offer":
            return call.get("offer_agent") == agent_id
        if kind == "transfer":
            return call.get("transfer_agent") == agent_id
        return call.agent_id == agent_id

    # -- POST /twilio/voice/agent/key?c=&a=&k= (the key the agent pressed, or none) --------------------------
    async def key(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, (agent_id, kind), sid = conversation_param(request), _agent_param(request), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, agent_id=agent_id, call_sid=sid)
        rt, texts, speech = self.rt, self.rt.config.texts, self._speech()
        digits = form.get("Digits", "")
        call = await rt.calls.get(cid)
        if digits != "1":
            await self._not_taken(cid, call, agent_id, kind, "declined" if digits else "no key pressed")
            return answer(twiml.goodbye(speech, [texts.passed if digits else texts.no_key]))
        if call.ended:
            return answer(twiml.goodbye(speech, [texts.gone]))
        if kind == "transfer":
            # Only while the first agent still has the caller: otherwise there is nobody to join.
            first = call.get("transfer_from")
            still_theirs = call.get("transfer_agent") == agent_id and call.agent_id == first
            if not still_theirs or not await rt.calls.claim(cid, "transfer_joined", sid):
                return answer(twiml.goodbye(speech, [texts.gone]))
            log.info("voice.transfer_joined")
            return self._join(cid, texts.connecting)
        outcome = await rt.desk.accept(agent_id, cid)
        log.info("voice.agent_pressed", outcome=outcome.value)
        if outcome is not Accepted.WON:
            said = {Accepted.TAKEN: texts.taken, Accepted.UNABLE: texts.unable}.get(outcome, texts.gone)
            return answer(twiml.goodbye(speech, [said]))
        await rt.calls.set(cid, agent_id=agent_id, agent_sid=sid, offer_agent=None, offer_sid=None,
                           offer_ringing=None)
        await rt.desk.on_the_phone(agent_id, True)
        return self._join(cid, texts.connecting)

    def _join(self, cid: str, text: str) -> web.Response:
        return answer(twiml.join_as_agent(self._speech(), text, room_of(cid), self.rt.urls.room_events(cid)))

    # -- POST /twilio/voice/agent/status?c=&a=&k= (the agent leg's progress) --------------------------------
    async def status(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, (agent_id, kind), sid = conversation_param(request), _agent_param(request), call_sid(form)
        status = form.get("CallStatus", "")
        structlog.contextvars.bind_contextvars(conversation_id=cid, agent_id=agent_id, call_sid=sid)
        rt = self.rt
        if status not in FINAL_STATUSES or not await rt.callbacks.first(sid, status):
            return web.Response(status=204)
        if not await rt.calls.claim(cid, f"leg_ended:{sid}", status):  # a final status is final
            return web.Response(status=204)
        try:
            await self._leg_ended(cid, agent_id, kind, sid, status)
        except Exception:  # Twilio retries it: both claims go back, so the retry does the work
            await rt.calls.release(cid, f"leg_ended:{sid}")
            await rt.callbacks.forget(sid, status)
            raise
        return web.Response(status=204)

    async def _leg_ended(self, cid: str, agent_id: str, kind: str, sid: str, status: str) -> None:
        rt = self.rt
        call = await rt.calls.get(cid)
        log.info("voice.agent_leg_ended", status=status, kind=kind)
        if call.agent_sid == sid or call.get("transfer_joined") == sid:
            await rt.desk.on_the_phone(agent_id, False)
        if call.agent_sid == sid:  # the agent who was with the caller left
            await self._agent_hung_up(cid, call, agent_id)
        elif kind == "transfer" and call.get("transfer_joined") == sid:
            # The colleague left before the first agent: the transfer did not happen.
            await self.steps.fail_transfer(cid, call, "the colleague left before taking over")
        elif not call.ended:
            await self._not_taken(cid, call, agent_id, kind, status, sid=sid)

    async def _not_taken(
        self, cid: str, call: CallState, agent_id: str, kind: str, why: str, *, sid: str | None = None
    ) -> None:
        """An offer not taken lapses to the next agent; a transfer not taken returns the caller to the
        first agent."""
        rt = self.rt
        if kind == "offer" and call.get("offer_agent") == agent_id:
            await rt.calls.set(cid, offer_agent=None, offer_sid=None, offer_ringing=None)
            await rt.desk.pass_offer(agent_id, cid)
            log.info("voice.offer_not_taken", why=why)
        elif (kind == "transfer" and call.get("transfer_agent") == agent_id
              and not call.get("transfer_joined")):
            await self.steps.fail_transfer(cid, call, why)
        elif kind == "join" and call.agent_id == agent_id and call.agent_sid in (None, sid):
            # Claimed in the console, then never reached on the phone: the caller must not wait for them.
            await self.steps.agent_gone(cid, call, agent_id)

    async def _agent_hung_up(self, cid: str, call: CallState, agent_id: str) -> None:
        """The agent with the caller left: a colleague waiting in the room takes over (warm transfer), else
        the caller goes back to the head of the queue and is told, never left in silence."""
        rt = self.rt
        joined, target = call.get("transfer_joined"), call.get("transfer_agent")
        if call.ended:
            await rt.desk.on_the_phone(agent_id, False)
            return
        if joined and target and await rt.desk.handover(cid, agent_id, target):
            await rt.calls.set(cid, agent_id=target, agent_sid=joined, **TRANSFER_CLEARED)
            await rt.desk.on_the_phone(target, True)
            await self.steps.unhold(cid, call)
            log.info("voice.transfer_completed", to_agent=target)
            return
        await self.steps.agent_gone(cid, call, agent_id)

    # -- POST /twilio/voice/conference?c= (the room's events) -----------------------------------------------
    async def room_event(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """The room's SID, learnt when someone joins it: participants are updated by it (hold, announce). A
        late event of an earlier room of the same name (the caller waits again after an agent left) must
        not replace it, so only a start or a join counts."""
        cid = conversation_param(request)
        conference = form.get("ConferenceSid", "")
        event = form.get("StatusCallbackEvent", "")
        if event in ROOM_STARTS and conference.startswith("CF") and conference.isalnum():
            call = await self.rt.calls.get(cid)
            if call.conference_sid != conference:
                await self.rt.calls.set(cid, conference_sid=conference)
        return web.Response(status=204)

    # -- POST /twilio/voice/hold and /twilio/voice/notice?t= ------------------------------------------------
    async def hold(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """What a held caller hears: never silence."""
        rt = self.rt
        text, audio = rt.config.texts.transfer_hold, rt.config.hold_audio_url
        again, seconds = rt.urls.hold(), rt.config.announce_seconds
        return answer(twiml.announcements(self._speech(), text, audio, again, seconds))

    async def notice(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        key = request.query.get("t", "")
        if key not in NOTICES:
            raise BadRequest("invalid_notice", "Unknown notice.")
        return answer(twiml.say_only(self._speech(), [getattr(self.rt.config.texts, key)]))
