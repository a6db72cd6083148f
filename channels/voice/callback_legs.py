"""Keeping a callback on the phone: the agent who took it is called first, hears why, and presses 1; then
the customer is called, hears who is calling and why before the agent speaks, and joins the agent's room.

An agent with a phone is also called when the desk offers them a due callback (``leg=offer``): pressing 1
is the desk's atomic claim, and the customer is called straight away from the same leg; anything else passes
the offer to the next agent, as for a caller waiting on the line, and the attempt goes on.

Each attempt is dialled at most once, whichever instance hears of it and however often: the first leg is
claimed on the call's hash (``cb_dial:<attempt>``) before Twilio is asked, and Twilio's calls-create is never
retried (it is not idempotent). An ambiguous failure is left to the leg's signed status callback, which any
instance may receive, and to the attempt's deadline (handoff/callbacks.py) when none ever comes. A machine
answering the customer's phone hears a short message with nothing personal in it, and the attempt fails.
"""

from __future__ import annotations

import re

import structlog
from aiohttp import web
from twilio.twiml.voice_response import Dial, VoiceResponse

from channels.twilio.rest import CALL_EVENTS
from channels.voice import twiml
from channels.voice.caller import FINAL_STATUSES
from channels.voice.calls import room_of
from channels.voice.desk import Accepted
from channels.voice.params import BadRequest, answer, call_sid, conversation_param
from channels.voice.runtime import VoiceRuntime
from sessions.models import StatusUpdate

log = structlog.get_logger(__name__)

MACHINE_DETECTION = "Enable"
_AGENT = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
LEGS = frozenset({"agent", "customer", "offer"})
# Said to an answering machine: no name, no topic, no number.
MACHINE_MESSAGE = "Hello, this is a call back you asked us for. We'll try again later. Goodbye."
AGENT_PROMPT = "Press 1 to call the customer now, or 2 to pass."
OFFER_PROMPT = "Press 1 to take it and call the customer now, or 2 to pass it to a colleague."
OFFER_GONE = "This callback is no longer waiting for you. Goodbye."
OFFER_PASSED = "OK, the callback goes to a colleague. Goodbye."
NOT_TAKEN = {Accepted.TAKEN: "Sorry, a colleague has already taken this callback. Goodbye.",
             Accepted.UNABLE: ("You can't take callbacks right now: set yourself online with a free slot. "
                               "It goes to a colleague. Goodbye.")}
CALLING = "Calling the customer now. Please hold; they'll hear who is calling before you speak."
NOT_REACHED = "The customer didn't answer. We'll try again later and tell them. Goodbye."
GONE = "This callback is no longer needed. Goodbye."
PASSED = "OK, the callback is passed back. Goodbye."


def _attempt(request: web.Request) -> int:
    raw = request.query.get("n", "")
    if not raw.isdigit() or not 0 < int(raw) < 100:
        raise BadRequest("invalid_attempt", "The URL's n= must be the callback attempt's number.")
    return int(raw)


def _offered_agent(request: web.Request) -> str | None:
    """The agent an offer's leg rings (``a=``), or None on the leg of an agent who took it in the console."""
    if "a" not in request.query:
        return None
    agent_id = request.query["a"]
    if not _AGENT.match(agent_id):
        raise BadRequest("invalid_agent", "The URL's a= must name an agent.")
    return agent_id


def room(cid: str, attempt: int) -> str:
    return f"{room_of(cid)}-cb{attempt}"


class CallbackLegs:
    def __init__(self, rt: VoiceRuntime) -> None:
        self.rt = rt

    def _speech(self) -> twiml.Speech:
        return twiml.Speech(self.rt.config.locale(None), self.rt.config.voice)

    # -- an agent took a callback attempt (console claim): call the agent ---------------------------------
    async def start(self, update: StatusUpdate) -> None:
        rt, cid, agent_id = self.rt, update.conversation_id, update.agent_id
        attempt = update.data.get("callback_attempt")
        if not isinstance(attempt, int) or agent_id is None or update.data.get("via") == "phone":
            return  # taken by pressing 1 on the offer's leg: the agent is on the line already
        await self._stop_offer(cid, attempt)
        line = await rt.desk.agent(agent_id)
        if line is None or line.phone is None or rt.rest is None or rt.config.from_number is None:
            log.warning("voice.callback_without_phone", conversation_id=cid, agent_id=agent_id)
            await rt.desk.callback_failed(cid, attempt, "no_agent_phone")
            return
        # Once per attempt, on whichever instance gets here first: never a second call for the same one.
        if not await rt.calls.claim(cid, f"cb_dial:{attempt}", agent_id):
            return
        if not await rt.desk.callback_step(cid, attempt, "dialling", agent=agent_id):
            return  # cancelled (or moved on) between the claim and now
        result = await rt.rest.create_call(
            line.phone, rt.config.from_number, self._url("/callback/agent", cid, attempt),
            status_callback=self._url("/callback/status", cid, attempt, leg="agent"),
            status_callback_events=CALL_EVENTS, timeout_seconds=rt.config.agent_ring_seconds,
            machine_detection=MACHINE_DETECTION,
        )
        if result.ok and result.sid:
            await rt.calls.set(cid, **{f"cb_agent:{attempt}": result.sid})
            await rt.desk.callback_step(cid, attempt, "dialling", agent_call=result.sid)
            log.info("voice.callback_agent_dialled", conversation_id=cid, attempt=attempt)
        elif not result.ambiguous:  # Twilio refused it: nobody was called, so the attempt failed now
            await rt.desk.callback_failed(cid, attempt, "agent_unreachable")
        else:
            log.warning("voice.callback_dial_ambiguous", conversation_id=cid, attempt=attempt,
                        status=result.status)

    # -- the desk offered a due callback to an agent: ring their phone, if they have one -------------------
    async def offer(self, update: StatusUpdate) -> None:
        rt, cid, agent_id = self.rt, update.conversation_id, update.agent_id
        attempt = update.data.get("callback_attempt")
        if not isinstance(attempt, int) or agent_id is None:
            return
        line = await rt.desk.agent(agent_id)
        if line is None or line.phone is None or rt.rest is None or rt.config.from_number is None:
            return  # the console shows the offer
        await rt.calls.set(cid, **{f"cb_offer_agent:{attempt}": agent_id,
                                   f"cb_offer_ringing:{attempt}": None})
        result = await rt.rest.create_call(
            line.phone, rt.config.from_number, self._url("/callback/agent", cid, attempt, a=agent_id),
            status_callback=self._url("/callback/status", cid, attempt, leg="offer", a=agent_id),
            status_callback_events=CALL_EVENTS, timeout_seconds=rt.config.agent_ring_seconds,
            machine_detection=MACHINE_DETECTION,
        )
        if result.ok and result.sid:
            await rt.calls.set(cid, **{f"cb_offer_ringing:{attempt}": result.sid})
            log.info("voice.callback_offer_dialled", conversation_id=cid, attempt=attempt)
        elif not result.ambiguous:  # nobody was called: the next agent, now
            await self._pass(cid, attempt, agent_id)

    async def withdrawn(self, update: StatusUpdate) -> None:
        """An offer lapsed or was declined in the console: its phone stops ringing."""
        attempt, lapsed = update.data.get("callback_attempt"), update.data.get("offer_lapsed_for")
        if isinstance(attempt, int) and isinstance(lapsed, str):
            call = await self.rt.calls.get(update.conversation_id)
            if call.get(f"cb_offer_agent:{attempt}") == lapsed:
                await self._stop_offer(update.conversation_id, attempt)

    async def _stop_offer(self, cid: str, attempt: int) -> None:
        """An offer's leg that is not the attempt's agent leg ends, whether ringing or hearing the brief."""
        rt = self.rt
        call = await rt.calls.get(cid)
        leg = call.get(f"cb_offer_ringing:{attempt}")
        if not leg or call.get(f"cb_agent:{attempt}") == leg:
            return
        await rt.calls.set(cid, **{f"cb_offer_agent:{attempt}": None, f"cb_offer_ringing:{attempt}": None})
        if rt.rest is None:
            return
        if call.get(f"cb_offer_answered:{attempt}") == leg:  # hearing the brief: told, then it ends
            ended = await rt.rest.update_call(leg, twiml=twiml.goodbye(self._speech(), [OFFER_GONE]))
        else:
            ended = await rt.rest.update_call(leg, status="canceled")
        await rt.checked(cid, "end a callback offer's leg", ended)

    async def _pass(self, cid: str, attempt: int, agent_id: str) -> None:
        """The offer was not taken on the phone: the next agent is offered it (the attempt goes on)."""
        call = await self.rt.calls.get(cid)
        if call.get(f"cb_offer_agent:{attempt}") != agent_id:
            return
        await self.rt.calls.set(cid, **{f"cb_offer_agent:{attempt}": None,
                                        f"cb_offer_ringing:{attempt}": None})
        await self.rt.desk.pass_offer(agent_id, cid)

    def _url(self, path: str, cid: str, attempt: int, **extra: str) -> str:
        return self.rt.urls.callback(path.removeprefix("/callback"), cid, attempt, **extra)

    # -- POST /twilio/voice/callback/agent?c=&n= (the agent answered) ---------------------------------------
    async def agent_answered(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, attempt, sid = conversation_param(request), _attempt(request), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid, attempt=attempt)
        speech, rt = self._speech(), self.rt
        offered_to = _offered_agent(request)
        human = form.get("AnsweredBy", "human") in ("human", "unknown")
        if offered_to is not None:
            if not human:
                await self._pass(cid, attempt, offered_to)
                return answer(twiml.goodbye(speech, []))
            if (await rt.calls.get(cid)).get(f"cb_offer_agent:{attempt}") != offered_to:
                return answer(twiml.goodbye(speech, [OFFER_GONE]))
            await rt.calls.set(cid, **{f"cb_offer_answered:{attempt}": sid})
            await rt.desk.hold_offer(offered_to, cid, rt.config.brief_seconds)
            prompt, extra = OFFER_PROMPT, {"a": offered_to}
        else:
            if not human:
                await rt.desk.callback_failed(cid, attempt, "agent_unreachable")
                return answer(twiml.goodbye(speech, []))
            if not await rt.desk.callback_step(cid, attempt, "dialling"):
                return answer(twiml.goodbye(speech, [GONE]))
            prompt, extra = AGENT_PROMPT, {}
        brief = await rt.desk.callback_brief(cid)
        action = self._url("/callback/agent/key", cid, attempt, **extra)
        seconds = rt.config.agent_key_seconds
        return answer(twiml.agent_brief(speech, [*brief, prompt], action, seconds))

    # -- POST /twilio/voice/callback/agent/key?c=&n= -------------------------------------------------------
    async def agent_key(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, attempt, sid = conversation_param(request), _attempt(request), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid, attempt=attempt)
        rt, speech = self.rt, self._speech()
        offered_to = _offered_agent(request)
        if offered_to is not None:
            return await self._offer_key(cid, attempt, sid, offered_to, form.get("Digits", ""))
        if form.get("Digits", "") != "1":
            await rt.desk.callback_failed(cid, attempt, "agent_declined")
            return answer(twiml.goodbye(speech, [PASSED]))
        return await self._call_customer(cid, attempt, sid)

    async def _offer_key(self, cid: str, attempt: int, sid: str, agent_id: str, digits: str) -> web.Response:
        """1 on an offer's leg: the desk's claim (of two agents pressing at once, one wins), then this leg
        is the attempt's agent leg and the customer is called. Anything else: the next agent."""
        rt, speech = self.rt, self._speech()
        if digits != "1":
            await self._pass(cid, attempt, agent_id)
            return answer(twiml.goodbye(speech, [OFFER_PASSED]))
        outcome = await rt.desk.accept(agent_id, cid)
        log.info("voice.callback_offer_pressed", outcome=outcome.value)
        if outcome is not Accepted.WON:
            return answer(twiml.goodbye(speech, [NOT_TAKEN.get(outcome, OFFER_GONE)]))
        # This leg is the attempt's agent leg from now on (a console claim would have dialled a new one).
        await rt.calls.set(cid, **{f"cb_agent:{attempt}": sid, f"cb_offer_agent:{attempt}": None})
        if not await rt.calls.claim(cid, f"cb_dial:{attempt}", agent_id):
            return answer(twiml.goodbye(speech, [GONE]))
        if not await rt.desk.callback_step(cid, attempt, "dialling", agent=agent_id, agent_call=sid):
            return answer(twiml.goodbye(speech, [GONE]))
        return await self._call_customer(cid, attempt, sid)

    async def _call_customer(self, cid: str, attempt: int, sid: str) -> web.Response:
        """The agent is on the line and ready: the customer's phone rings, and the agent waits in the room."""
        rt, speech = self.rt, self._speech()
        conversation = await rt.store.get(cid)
        number = conversation.callback.number if conversation.callback is not None else None
        if number is None or not await rt.desk.callback_step(cid, attempt, "dialling"):
            return answer(twiml.goodbye(speech, [GONE]))
        if await rt.calls.claim(cid, f"cb_customer:{attempt}", sid) and rt.rest is not None:
            assert rt.config.from_number is not None
            result = await rt.rest.create_call(
                number, rt.config.from_number, self._url("/callback/customer", cid, attempt),
                status_callback=self._url("/callback/status", cid, attempt, leg="customer"),
                status_callback_events=CALL_EVENTS, timeout_seconds=rt.config.customer_ring_seconds,
                machine_detection=MACHINE_DETECTION,
            )
            if result.ok and result.sid:
                await rt.calls.set(cid, **{f"cb_customer_sid:{attempt}": result.sid})
            elif not result.ambiguous:
                await rt.desk.callback_failed(cid, attempt, "failed")
                return answer(twiml.goodbye(speech, [NOT_REACHED]))
        response = VoiceResponse()
        speech.say(response, CALLING)
        dial = Dial()
        dial.conference(room(cid, attempt), start_conference_on_enter=True, end_conference_on_exit=True,
                        beep=False, wait_url="", wait_method="POST")
        response.append(dial)
        return answer(str(response))

    # -- POST /twilio/voice/callback/customer?c=&n= (the customer's phone answered) ----------------------
    async def customer_answered(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, attempt, sid = conversation_param(request), _attempt(request), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid, attempt=attempt)
        rt = self.rt
        conversation = await rt.store.get(cid)
        speech = rt.speech(conversation)
        if form.get("AnsweredBy", "human") not in ("human", "unknown"):
            log.info("voice.callback_machine", answered_by=form.get("AnsweredBy"))
            await self._not_reached(cid, attempt, "machine")
            return answer(twiml.goodbye(speech, [MACHINE_MESSAGE]))
        if not await rt.desk.callback_step(cid, attempt, "connected", customer_call=sid):
            return answer(twiml.goodbye(speech, [GONE]))
        greeting = await rt.desk.callback_greeting(cid)
        response = VoiceResponse()
        speech.say(response, greeting)
        dial = Dial()
        dial.conference(room(cid, attempt), start_conference_on_enter=True, end_conference_on_exit=True,
                        beep=False)
        response.append(dial)
        log.info("voice.callback_connected")
        return answer(str(response))

    # -- POST /twilio/voice/callback/status?c=&n=&leg= -----------------------------------------------------
    async def status(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, attempt, sid = conversation_param(request), _attempt(request), call_sid(form)
        leg = request.query.get("leg", "")
        if leg not in LEGS:
            raise BadRequest("invalid_leg", "The URL's leg= must be agent or customer.")
        status = form.get("CallStatus", "")
        rt = self.rt
        if status not in FINAL_STATUSES or not await rt.callbacks.first(sid, status):
            return web.Response(status=204)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid, attempt=attempt)
        log.info("voice.callback_leg_ended", leg=leg, status=status)
        if leg == "offer":
            if (await rt.calls.get(cid)).get(f"cb_agent:{attempt}") != sid:
                # Not taken on this leg (unanswered, busy, or hung up during the brief): the next agent.
                offered_to = _offered_agent(request)
                if offered_to is not None:
                    await self._pass(cid, attempt, offered_to)
                return web.Response(status=204)
            leg = "agent"  # taken on this leg: it was the attempt's agent leg
        if status == "completed":
            # Answered and over: a machine or a decline was handled when it answered; a customer who
            # talked to the agent is the promise kept.
            if leg == "customer":
                await rt.desk.callback_step(cid, attempt, "completed")
            return web.Response(status=204)
        outcome = status if leg == "customer" else "agent_unreachable"
        if leg == "customer":
            await self._not_reached(cid, attempt, outcome)
        else:
            await rt.desk.callback_failed(cid, attempt, outcome)
        return web.Response(status=204)

    async def _not_reached(self, cid: str, attempt: int, outcome: str) -> None:
        """The customer was not reached: the attempt fails, and the agent waiting in the room is told."""
        rt = self.rt
        await rt.desk.callback_failed(cid, attempt, outcome)
        agent_sid = (await rt.calls.get(cid)).get(f"cb_agent:{attempt}")
        if agent_sid and rt.rest is not None:
            told = await rt.rest.update_call(agent_sid, twiml=twiml.goodbye(self._speech(), [NOT_REACHED]))
            await rt.checked(cid, "tell the agent the customer was not reached", told)
