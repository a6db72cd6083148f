"""Twilio's side of phone calls, on loopback: a stand-in for Twilio's voice platform for tests and the CLI.

The emulator does what Twilio does for a number whose Voice URL is ``{gateway}/twilio/voice`` and whose call
status callback is ``{gateway}/twilio/voice/status``: it places inbound calls to the gateway as signed
webhooks, follows whatever TwiML comes back (Say, Play, Pause, Gather, Redirect, Hangup, Reject, Enqueue,
Dial with Conference, Number or Queue), keeps conference rooms and call queues, posts call and conference
status callbacks, and serves a stand-in of Twilio's REST API (Calls, Conferences, Participants, Queue Members,
Messages) on 127.0.0.1. It knows nothing else of the gateway.

Tests drive the people: ``leg.speak()``, ``leg.press()``, ``leg.stay_silent()``, ``leg.hang_up()``, and
``leg.next_said()`` / ``leg.heard`` for what a person hears. Outbound calls (REST or ``<Dial><Number>``) ring
phones configured with ``emulator.phone()``; answered ones come out of ``emulator.next_incoming(number)``.

Seconds are emulated: every wait Twilio would make (Pause, ringing, Timeout, speaking a Say) lasts
``seconds * time_scale`` real seconds, so tests use e.g. ``time_scale=0.01``. A Gather waits for the person
(speak, press or stay_silent) however long that takes: its own timeout is not emulated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import urlencode, urljoin, urlsplit
from xml.etree import ElementTree

import aiohttp
import phonenumbers
from aiohttp import web
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
VOICE_PATH = "/twilio/voice"
VOICE_STATUS_PATH = "/twilio/voice/status"
DEFAULT_HOLD_MUSIC = "http://twimlets.com/holdmusic?Bucket=com.twilio.music.classical"
APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

AnswerMode = Literal["human", "no-answer", "busy", "machine", "fail"]

# Which statusCallbackEvent word subscribes to which conference event.
_CONFERENCE_SUBSCRIPTION = {
    "conference-start": "start", "conference-end": "end", "participant-join": "join",
    "participant-leave": "leave", "participant-hold": "hold", "participant-unhold": "hold",
    "participant-mute": "mute", "participant-unmute": "mute", "participant-modify": "modify",
    "announcement-end": "announcement", "announcement-fail": "announcement",
}
_AUDIO_VERBS = frozenset({"Say", "Play", "Pause"})


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _rfc2822(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() == "true"


def _tf(value: bool) -> str:
    return "true" if value else "false"


def _number(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _country(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ""
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0)
    return "" if region in (None, "ZZ") else str(region)


@dataclass(frozen=True)
class RecordedRequest:
    """A request the stand-in REST API received."""

    method: str
    path: str
    form: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.form if k == key), None)

    def getall(self, key: str) -> list[str]:
        return [v for k, v in self.form if k == key]


@dataclass(frozen=True)
class Webhook:
    """A request the emulator sent (TwiML fetch, action, status callback...), by its public (signed) URL."""

    kind: str
    method: str
    url: str
    form: dict[str, str]
    status: int | None


@dataclass(frozen=True)
class VoiceEvent:
    """What happened, for listeners such as the CLI: kind is ringing, answered, said, played, gather, joined,
    left, hold, unhold, ended or error."""

    kind: str
    leg: CallLeg | None
    text: str = ""


@dataclass
class _Nav:
    """Where a leg goes next: fetch url (public, absolute) or run inline TwiML."""

    url: str | None
    method: str = "POST"
    fields: dict[str, str] = field(default_factory=dict)
    twiml: str | None = None


class _Stop:
    def __init__(self, name: str) -> None:
        self.name = name


_HANGUP = _Stop("hangup")  # <Hangup>, <Reject>, or an error: the call ends
_END_OF_DOC = _Stop("end")  # the document ran out of verbs: the call ends too (but a whisper bridges)
_Outcome: TypeAlias = _Nav | _Stop | None  # None: go on with the next verb


@dataclass
class _Input:
    kind: Literal["speech", "dtmf", "silence"]
    text: str = ""
    confidence: float = 0.0


@dataclass
class _Phone:
    answer: AnswerMode
    ring_seconds: float


@dataclass
class _Callback:
    kind: str
    url: str
    method: str
    fields: dict[str, str]


@dataclass
class _JoinOptions:
    start_on_enter: bool = True
    end_on_exit: bool = False
    muted: bool = False
    beep: str = "true"
    label: str | None = None
    wait_url: str | None = None  # None: Twilio's default music; "": silence
    wait_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    events: frozenset[str] = frozenset()
    coaching: bool = False
    hangup_on_star: bool = False  # the Dial's hangupOnStar: star leaves the room, then the Dial's action


class Participant:
    """A call leg in a conference room."""

    def __init__(self, leg: CallLeg, room: Conference, options: _JoinOptions) -> None:
        self.leg = leg
        self.room = room
        self.start_on_enter = options.start_on_enter
        self.end_on_exit = options.end_on_exit
        self.muted = options.muted
        self.beep = options.beep
        self.label = options.label
        self.coaching = options.coaching
        self.hangup_on_star = options.hangup_on_star
        self.wait_url = options.wait_url
        self.wait_method = options.wait_method
        self.hold = False
        self.hold_url: str | None = None
        self.hold_method = "POST"
        self.left = False
        self.changed = asyncio.Event()
        self.created = time.time()
        self.updated = self.created


class Conference:
    """A conference room, keyed by FriendlyName while it lives."""

    def __init__(self, name: str) -> None:
        self.sid = _sid("CF")
        self.name = name
        self.status: Literal["init", "in-progress", "completed"] = "init"
        self.participants: list[Participant] = []
        self.callbacks: dict[str, tuple[str, frozenset[str]]] = {}  # url -> (method, events)
        self.sequence = itertools.count(1)
        self.created = time.time()
        self.updated = self.created
        self.reason_ended: str | None = None
        self.call_sid_ending: str | None = None

    @property
    def started(self) -> bool:
        return self.status == "in-progress"


@dataclass
class _Bridge:
    """A <Dial><Queue> agent leg taking a queued caller: the url runs on the caller first."""

    agent: CallLeg
    url: str | None
    method: str
    connected: asyncio.Future[bool]


class _Member:
    def __init__(self, leg: CallLeg, loop: asyncio.AbstractEventLoop) -> None:
        self.leg = leg
        self.enqueued = time.time()
        self.dequeued: asyncio.Future[_Nav | _Bridge] = loop.create_future()


class CallQueue:
    def __init__(self, name: str, max_size: int = 1000) -> None:
        self.sid = _sid("QU")
        self.name = name
        self.max_size = max_size
        self.members: list[_Member] = []
        self.created = time.time()
        self.waited: list[float] = []
        self.changed = asyncio.Event()


class _Gathering:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[_Input] = loop.create_future()


class CallLeg:
    """One call leg: what its person hears, and what that person can do."""

    def __init__(self, emulator: VoiceEmulator, from_: str, to: str, direction: str,
                 parent: CallLeg | None = None) -> None:
        self.emulator = emulator
        self.sid = _sid("CA")
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.parent_sid = parent.sid if parent else None
        self.status = "queued"
        self.answered_by: str | None = None
        self.heard: list[str] = []
        self.created = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.participant: Participant | None = None
        self.status_callback: str | None = None
        self.status_callback_method = "POST"
        self.status_events: frozenset[str] = frozenset({"completed"})
        self._said: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._gathering: _Gathering | None = None
        self._member: _Member | None = None
        self._bridge: CallLeg | None = None
        self._bridge_ended = asyncio.Event()
        self._hangup_action: Callable[[], _Nav] | None = None
        self._final_status: str | None = None
        self._machine = False
        self._nav: _Nav | None = None
        self._sequence = itertools.count(0)
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        return f"<CallLeg {self.sid} {self.from_}->{self.to} {self.direction} {self.status}>"

    # -- state -------------------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def in_conference(self) -> bool:
        return self.participant is not None

    @property
    def conference(self) -> Conference | None:
        return self.participant.room if self.participant else None

    @property
    def on_hold(self) -> bool:
        return self.participant is not None and self.participant.hold

    @property
    def gathering(self) -> bool:
        """True while a Gather waits for this leg's person."""
        return self._gathering is not None

    @property
    def in_queue(self) -> bool:
        return self._member is not None

    @property
    def bridged_with(self) -> CallLeg | None:
        """The other leg of a <Dial><Number> or <Dial><Queue> bridge."""
        return self._bridge

    def fields(self) -> dict[str, str]:
        """The parameters Twilio sends with every request about this call."""
        form = {"AccountSid": self.emulator.account_sid, "ApiVersion": API_VERSION, "CallSid": self.sid,
                "CallStatus": self.status, "Direction": self.direction, "From": self.from_, "To": self.to,
                "Caller": self.from_, "Called": self.to}
        for prefix, number in (("From", self.from_), ("To", self.to), ("Caller", self.from_),
                               ("Called", self.to)):
            form[f"{prefix}Country"] = _country(number)
            form[f"{prefix}State"] = ""
            form[f"{prefix}City"] = ""
            form[f"{prefix}Zip"] = ""
        if self.parent_sid:
            form["ParentCallSid"] = self.parent_sid
        if self.answered_by:
            form["AnsweredBy"] = self.answered_by
        return form

    def duration(self) -> int:
        if self.answered_at is None:
            return 0
        end = self.ended_at or time.time()
        return round((end - self.answered_at) / self.emulator.time_scale)

    # -- for tests and the CLI ----------------------------------------------------------------------------
    async def next_said(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109 - the tests' API
        """The next thing this leg's person hears said (Say), in order; raises TimeoutError."""
        return await asyncio.wait_for(self._said.get(), timeout)

    def said_nowait(self) -> list[str]:
        """Everything said and not yet taken by next_said."""
        out: list[str] = []
        while not self._said.empty():
            out.append(self._said.get_nowait())
        return out

    async def wait_until(self, predicate: Callable[[], bool],
                         timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        """Waits (polling) until predicate() is true; raises TimeoutError."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self!r}: condition not met within {timeout} s")
            await asyncio.sleep(0.005)

    async def wait_ended(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def _deliver(self, value: _Input, within: float) -> None:
        try:
            await self.wait_until(lambda: self._gathering is not None or self.ended, within)
        except TimeoutError:
            raise TimeoutError(f"{self!r}: no <Gather> is listening") from None
        gathering = self._gathering
        if gathering is None:
            raise RuntimeError(f"{self!r} has ended")
        if not gathering.future.done():
            gathering.future.set_result(value)
        self._gathering = None

    async def speak(self, text: str, confidence: float = 0.92,
                    timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        """Says text to the current Gather (waiting up to timeout for one): SpeechResult and Confidence."""
        await self._deliver(_Input("speech", text, confidence), timeout)

    async def press(self, digits: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        """Presses keys during the current Gather (waiting up to timeout for one): Digits. In a conference
        joined by a Dial with hangupOnStar, star leaves the room instead (the Dial's action comes next)."""
        participant = self.participant
        in_room = participant is not None and self._gathering is None
        if digits == "*" and in_room and participant is not None and participant.hangup_on_star:
            self.emulator._emit("pressed", self, digits)
            self.emulator._remove_participant(participant, "participant_hung_up")
            return
        await self._deliver(_Input("dtmf", digits), timeout)

    async def stay_silent(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        """Lets the current Gather time out without input."""
        await self._deliver(_Input("silence"), timeout)

    async def hang_up(self) -> None:
        """The person hangs up: the leg leaves any conference or queue, stops, and posts completed."""
        await self.emulator._hang_up(self, "completed")


class VoiceEmulator:
    """Twilio's voice platform as far as a gateway sees it; see the module docstring."""

    def __init__(self, gateway_url: str, public_url: str, auth_token: str, account_sid: str, api_port: int,
                 *, time_scale: float = 1.0, webhook_timeout: float = 15.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.api_port = api_port
        self.time_scale = time_scale
        self.webhook_timeout = webhook_timeout
        self.validator = RequestValidator(auth_token)
        self.errors: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[Webhook] = []
        self.calls: dict[str, CallLeg] = {}
        self.conferences: dict[str, Conference] = {}
        self.queues: dict[str, CallQueue] = {}
        self.messages: list[RecordedRequest] = []
        self.listeners: list[Callable[[VoiceEvent], None]] = []
        self.message_listeners: list[Callable[[RecordedRequest], None]] = []
        self.repeat_status_callbacks = False
        """Send every status callback (call and conference) a second time, as Twilio sometimes does."""
        self.defer_status_callbacks = False
        """Keep status callbacks in deferred_callbacks until flush_status_callbacks() (e.g. reversed)."""
        self.deferred_callbacks: list[_Callback] = []
        self.require_auth = True
        self._phones: dict[str, _Phone] = {}
        self._incoming: dict[str, asyncio.Queue[CallLeg]] = {}
        self._outbox: asyncio.Queue[_Callback] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.api_port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._http = aiohttp.ClientSession()
        self._dispatcher = asyncio.create_task(self._dispatch())

    async def stop(self) -> None:
        for leg in list(self.calls.values()):
            if not leg.ended:
                self._terminate(leg, "completed")
        tasks = [t for leg in self.calls.values() for t in ([leg._task] if leg._task else [])]
        tasks += [t for leg in self.calls.values() for t in leg._side_tasks] + list(self._tasks)
        if self._dispatcher:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()
        self._runner = None
        self._http = None

    # -- phones and calls -------------------------------------------------------------------------------
    def phone(self, number: str, answer: AnswerMode = "human", *, ring_seconds: float = 1.0) -> None:
        """How a phone number answers outbound calls (default: a human, after ring_seconds)."""
        self._phones[number] = _Phone(answer, ring_seconds)

    async def place_call(self, from_: str, to: str) -> CallLeg:
        """An inbound call from from_ to the gateway's number to: posts /twilio/voice and runs the TwiML."""
        leg = CallLeg(self, from_, to, "inbound")
        leg.status = "ringing"
        leg.status_callback = self.public_url + VOICE_STATUS_PATH
        leg.status_events = frozenset({"completed"})
        self.calls[leg.sid] = leg
        leg._task = asyncio.create_task(self._run_leg(leg, _Nav(self.public_url + VOICE_PATH)))
        return leg

    async def next_incoming(self, number: str,
                            timeout: float = 5.0) -> CallLeg:  # noqa: ASYNC109 - the tests' API
        """The next answered outbound call to number (REST Calls, Participants, or <Dial><Number>)."""
        return await asyncio.wait_for(self._incoming_queue(number).get(), timeout)

    def hearing(self, leg: CallLeg) -> set[CallLeg]:
        """The other legs bridged with leg now: same started room, neither on hold; or a direct bridge."""
        bridged: set[CallLeg] = set()
        me = leg.participant
        if me is not None and me.room.started and not me.hold:
            bridged |= {p.leg for p in me.room.participants if p is not me and not p.hold}
        if leg._bridge is not None and not leg._bridge.ended:
            bridged.add(leg._bridge)
        return bridged

    def conference_named(self, name: str) -> Conference | None:
        """The live room of that name, else the latest ended one."""
        rooms = [c for c in self.conferences.values() if c.name == name]
        live = [c for c in rooms if c.status != "completed"]
        found = live or rooms
        return found[-1] if found else None

    def queue_named(self, name: str) -> CallQueue | None:
        return next((q for q in self.queues.values() if q.name == name), None)

    async def callbacks_sent(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - the tests' API
        """Waits until every queued status callback has been delivered."""
        await asyncio.wait_for(self._outbox.join(), timeout)

    async def flush_status_callbacks(self, *, reverse: bool = False) -> None:
        """Sends the callbacks kept while defer_status_callbacks was set, in order or reversed."""
        pending, self.deferred_callbacks = self.deferred_callbacks, []
        for callback in reversed(pending) if reverse else pending:
            await self._send(callback)

    # -- internals: events, errors, time ------------------------------------------------------------
    def _emit(self, kind: str, leg: CallLeg | None, text: str = "") -> None:
        event = VoiceEvent(kind, leg, text)
        for listener in list(self.listeners):
            listener(event)

    def _error(self, message: str, leg: CallLeg | None = None) -> None:
        self.errors.append(message)
        self._emit("error", leg, message)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.time_scale)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _incoming_queue(self, number: str) -> asyncio.Queue[CallLeg]:
        return self._incoming.setdefault(number, asyncio.Queue())

    # -- internals: HTTP to the gateway ----------------------------------------------------------------
    def _target(self, url: str) -> str:
        """The address actually requested: the public URL mapped onto the gateway's."""
        if url == self.public_url or url.startswith(self.public_url + "/") or url.startswith(
                self.public_url + "?"):
            return self.gateway_url + url[len(self.public_url):]
        return url

    def _resolve(self, url: str | None, base: str | None, leg: CallLeg | None = None) -> str | None:
        if url is None:
            return None
        url = url.strip()
        if urlsplit(url).scheme in ("http", "https"):
            return url
        if base is None:
            self._error(f"11100 Invalid URL format: relative URL {url!r} in inline TwiML", leg)
            return None
        return urljoin(base, url)

    async def _request(self, kind: str, url: str, method: str,
                       form: Mapping[str, str]) -> tuple[int, str] | None:
        """A signed request as Twilio makes it; None (and an error recorded) when it cannot be made."""
        url = url.split("#", 1)[0]
        method = method.upper() if method.upper() in ("GET", "POST") else "POST"
        fields = dict(form)
        if method == "GET":
            signed = url + (("&" if "?" in url else "?") + urlencode(fields) if fields else "")
            signature = self.validator.compute_signature(signed, {})
            data: dict[str, str] | None = None
        else:
            signed = url
            signature = self.validator.compute_signature(url, fields)
            data = fields
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
        if self._http is None:
            raise RuntimeError("VoiceEmulator.start() first")
        try:
            async with self._http.request(method, self._target(signed), data=data, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)) as reply:
                body = await reply.text()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.webhooks.append(Webhook(kind, method, url, fields, None))
            self._error(f"11200 HTTP retrieval failure: {method} {url}: {exc!r}")
            return None
        self.webhooks.append(Webhook(kind, method, url, fields, status))
        return status, body

    async def _fetch(self, leg: CallLeg, nav: _Nav) -> ElementTree.Element | None:
        """The TwiML document nav points at; None (error recorded) if Twilio could not use it."""
        if nav.twiml is not None:
            text, where = nav.twiml, "inline TwiML"
        else:
            assert nav.url is not None
            result = await self._request("twiml", nav.url, nav.method, {**leg.fields(), **nav.fields})
            if result is None:
                return None
            status, text = result
            where = f"{nav.method} {nav.url}"
            if not 200 <= status < 300:
                self._error(f"11200 HTTP retrieval failure: {where} answered {status}", leg)
                return None
        try:
            root = ElementTree.fromstring(text)  # noqa: S314 - our own gateway's TwiML
        except ElementTree.ParseError as exc:
            self._error(f"12100 Document parse failure: {where}: {exc}", leg)
            return None
        if root.tag != "Response":
            self._error(f"12100 Document parse failure: {where}: root is <{root.tag}>, not <Response>", leg)
            return None
        return root

    # -- internals: status callbacks -----------------------------------------------------------------
    def _queue_callback(self, callback: _Callback, repeatable: bool = True) -> None:
        if repeatable and self.defer_status_callbacks:
            self.deferred_callbacks.append(callback)
            return
        self._outbox.put_nowait(callback)
        if repeatable and self.repeat_status_callbacks:
            self._outbox.put_nowait(callback)

    async def _dispatch(self) -> None:
        while True:
            callback = await self._outbox.get()
            try:
                await self._send(callback)
            except Exception as exc:  # a bad callback must not stop the others
                self._error(f"emulator: sending {callback.kind} to {callback.url}: {exc!r}")
            finally:
                self._outbox.task_done()

    async def _send(self, callback: _Callback) -> None:
        result = await self._request(callback.kind, callback.url, callback.method, callback.fields)
        if result is not None and not 200 <= result[0] < 300:
            self._error(f"11200 HTTP retrieval failure: {callback.kind} {callback.method} {callback.url} "
                        f"answered {result[0]}")

    def _call_event(self, leg: CallLeg, event: str) -> None:
        """A call progress event (initiated, ringing, answered, completed) to the leg's StatusCallback."""
        if leg.status_callback is None or event not in leg.status_events:
            return
        form = leg.fields()
        form.update({"CallbackSource": "call-progress-events", "SequenceNumber": str(next(leg._sequence)),
                     "Timestamp": _rfc2822(time.time())})
        if event == "initiated":
            form["CallStatus"] = "initiated"
        if event == "completed":
            form["CallDuration"] = str(leg.duration())
            form["Duration"] = str((leg.duration() + 59) // 60)
            form["SipResponseCode"] = {"busy": "486", "no-answer": "487", "failed": "503",
                                       "canceled": "487"}.get(leg.status, "200")
        self._queue_callback(_Callback("status", leg.status_callback, leg.status_callback_method, form))

    def _conference_event(self, room: Conference, event: str, participant: Participant | None = None,
                          extra: Mapping[str, str] | None = None) -> None:
        subscription = _CONFERENCE_SUBSCRIPTION[event]
        form = {"AccountSid": self.account_sid, "ConferenceSid": room.sid, "FriendlyName": room.name,
                "StatusCallbackEvent": event, "Timestamp": _rfc2822(time.time()),
                "SequenceNumber": str(next(room.sequence))}
        if participant is not None:
            form.update({"CallSid": participant.leg.sid, "Hold": _tf(participant.hold),
                         "Muted": _tf(participant.muted), "Coaching": _tf(participant.coaching),
                         "EndConferenceOnExit": _tf(participant.end_on_exit),
                         "StartConferenceOnEnter": _tf(participant.start_on_enter)})
            if participant.label:
                form["ParticipantLabel"] = participant.label
        form.update(extra or {})
        for url, (method, events) in room.callbacks.items():
            if subscription in events:
                self._queue_callback(_Callback("conference", url, method, dict(form)))

    # -- internals: running a leg ---------------------------------------------------------------------
    async def _run_leg(self, leg: CallLeg, nav: _Nav) -> None:
        try:
            await self._execute(leg, nav)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an emulator bug must show, and end the call
            self._error(f"emulator: {type(exc).__name__}: {exc}", leg)
        self._finish(leg, leg._final_status or "completed")

    async def _execute(self, leg: CallLeg, nav: _Nav) -> _Stop:
        """Follows TwiML from nav until the call would end; returns how it ended."""
        outcome: _Outcome = nav
        while isinstance(outcome, _Nav):
            root = await self._fetch(leg, outcome)
            if root is None:
                if leg.status == "ringing":
                    self._answer(leg)
                await self._say(leg, APPLICATION_ERROR)
                return _HANGUP
            verbs = list(root)
            if leg.status == "ringing" and not (verbs and verbs[0].tag == "Reject"):
                self._answer(leg)
            outcome = await self._run_verbs(leg, verbs, outcome.url)
        return outcome if isinstance(outcome, _Stop) else _END_OF_DOC

    def _answer(self, leg: CallLeg) -> None:
        leg.status = "in-progress"
        leg.answered_at = time.time()
        self._emit("answered", leg)

    async def _run_verbs(self, leg: CallLeg, verbs: Sequence[ElementTree.Element],
                         base: str | None) -> _Outcome:
        for verb in verbs:
            outcome = await self._verb(leg, verb, base)
            if outcome is not None:
                return outcome
        return _END_OF_DOC

    async def _verb(self, leg: CallLeg, verb: ElementTree.Element, base: str | None) -> _Outcome:
        tag = verb.tag
        if tag in _AUDIO_VERBS:
            await self._audio_verb(leg, verb)
        elif tag == "Gather":
            return await self._gather(leg, verb, base)
        elif tag == "Redirect":
            url = self._resolve(verb.text or "", base, leg)
            return _Nav(url, verb.get("method") or "POST") if url else _HANGUP
        elif tag == "Hangup":
            return _HANGUP
        elif tag == "Reject":
            if leg.answered_at is None:
                leg._final_status = "busy" if verb.get("reason") == "busy" else "no-answer"
            return _HANGUP
        elif tag == "Enqueue":
            return await self._enqueue(leg, verb, base)
        elif tag == "Dial":
            return await self._dial(leg, verb, base)
        elif tag == "Leave":
            pass  # only means something in an Enqueue waitUrl document
        else:
            self._error(f"emulator: <{tag}> is not emulated; skipped", leg)
        return None

    async def _say(self, leg: CallLeg, text: str) -> None:
        leg.heard.append(text)
        leg._said.put_nowait(text)
        self._emit("said", leg, text)
        await self._sleep(max(0.5, len(text.split()) / 2.5))  # about 150 words a minute

    async def _audio_verb(self, leg: CallLeg, verb: ElementTree.Element) -> None:
        loops = int(_number(verb.get("loop"), 1))
        loops = 1000 if loops <= 0 else loops
        if verb.tag == "Pause":
            await self._sleep(_number(verb.get("length"), 1))
            return
        for _ in range(loops):
            if verb.tag == "Say":
                await self._say(leg, " ".join((verb.text or "").split()))
            else:
                what = f"[play digits {verb.get('digits')}]" if verb.get("digits") else \
                    f"[play {(verb.text or '').strip()}]"
                leg.heard.append(what)
                self._emit("played", leg, what)
                await self._sleep(1)

    async def _gather(self, leg: CallLeg, verb: ElementTree.Element, base: str | None) -> _Outcome:
        inputs = set((verb.get("input") or "dtmf").lower().split())
        action = self._resolve(verb.get("action"), base, leg) if verb.get("action") else base
        method = verb.get("method") or "POST"
        num_digits = int(_number(verb.get("numDigits"), 0))
        finish_on_key = verb.get("finishOnKey", "#")
        on_empty = _flag(verb.get("actionOnEmptyResult"), False)
        for child in verb:
            if child.tag in _AUDIO_VERBS:
                await self._audio_verb(leg, child)
            else:
                self._error(f"12200 Schema validation warning: <{child.tag}> is not allowed in <Gather>", leg)
        gathering = _Gathering(asyncio.get_running_loop())
        leg._gathering = gathering
        self._emit("gather", leg, " ".join(sorted(inputs)))
        try:
            if leg._machine:
                got = _Input("silence")
                await self._sleep(_number(verb.get("timeout"), 5))
            else:
                got = await gathering.future
        finally:
            if leg._gathering is gathering:
                leg._gathering = None
        form: dict[str, str] = {}
        if got.kind == "speech" and "speech" in inputs and got.text:
            form = {"SpeechResult": got.text, "Confidence": f"{got.confidence:.8f}".rstrip("0")}
        elif got.kind == "dtmf" and "dtmf" in inputs:
            digits, finished = got.text, ""
            if finish_on_key and finish_on_key in digits:
                digits, finished = digits.split(finish_on_key, 1)[0], finish_on_key
            if num_digits:
                digits = digits[:num_digits]
            if digits:
                form = {"Digits": digits}
                if finished:
                    form["FinishedOnKey"] = finished
        if not form and not on_empty:
            return None  # no input: fall through to the next verb
        if action is None:
            return None
        return _Nav(action, method, form)

    # -- wait, hold and announce documents --------------------------------------------------------------
    async def _play_document(self, leg: CallLeg, nav: _Nav, context: str, queue: bool) -> str | _Nav | None:
        """One run of a wait/hold/announce document: Say, Play, Pause, Redirect (and Leave, Hangup in a
        queue). Returns 'leave', 'hangup', 'error', a Redirect, or None at its end."""
        root = await self._fetch(leg, nav)
        if root is None:
            return "error"
        for verb in root:
            if verb.tag in _AUDIO_VERBS:
                await self._audio_verb(leg, verb)
            elif verb.tag == "Redirect":
                url = self._resolve(verb.text or "", nav.url, leg)
                return _Nav(url, verb.get("method") or "POST") if url else "error"
            elif queue and verb.tag in ("Leave", "Hangup"):
                return verb.tag.lower()
            elif verb.tag == "Gather" and not queue:
                self._error(f"13238 Invalid verb in {context} TwiML: <Gather> is not allowed in a conference "
                            f"{context} document ({nav.url}); skipped", leg)
            else:
                self._error(f"13238 Invalid verb in {context} TwiML: <{verb.tag}> ({nav.url}); skipped", leg)
        return None

    async def _audio_loop(self, leg: CallLeg, url: str | None, method: str, context: str, *,
                          extra: Callable[[], dict[str, str]] | None = None, queue: bool = False) -> str:
        """Runs a wait/hold document over and over until cancelled (or it says Leave/Hangup)."""
        if url is None:
            what = f"[play {DEFAULT_HOLD_MUSIC}]"
            leg.heard.append(what)
            self._emit("played", leg, what)
            await asyncio.Event().wait()
        if url == "":
            await asyncio.Event().wait()
        assert url is not None
        loop = asyncio.get_running_loop()
        nav = _Nav(url, method, extra() if extra else {})
        while True:
            began = loop.time()
            result = await self._play_document(leg, nav, context, queue)
            if result in ("leave", "hangup"):
                assert isinstance(result, str)
                return result
            if result == "error":
                await asyncio.Event().wait()  # Twilio goes quiet
            nav = result if isinstance(result, _Nav) else _Nav(url, method, {})
            nav.fields.update(extra() if extra else {})
            if loop.time() - began < 0.5 * self.time_scale:
                await self._sleep(1)

    async def _announce(self, leg: CallLeg, url: str, method: str, room: Conference) -> None:
        result = await self._play_document(leg, _Nav(url, method), "announce", queue=False)
        if isinstance(result, _Nav):
            await self._play_document(leg, result, "announce", queue=False)
        participant = leg.participant
        self._conference_event(room, "announcement-end" if result != "error" else "announcement-fail",
                               participant)

    def _side_task(self, leg: CallLeg, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        leg._side_tasks.add(task)
        task.add_done_callback(leg._side_tasks.discard)

    # -- Enqueue ----------------------------------------------------------------------------------------
    def _queue_for(self, name: str) -> CallQueue:
        queue = self.queue_named(name)
        if queue is None:
            queue = CallQueue(name)
            self.queues[queue.sid] = queue
        return queue

    def _queue_seconds(self, member: _Member) -> int:
        return round((time.time() - member.enqueued) / self.time_scale)

    def _queue_fields(self, queue: CallQueue, member: _Member) -> dict[str, str]:
        position = queue.members.index(member) + 1 if member in queue.members else 0
        average = round(sum(queue.waited) / len(queue.waited) / self.time_scale) if queue.waited else 0
        return {"QueuePosition": str(position), "QueueSid": queue.sid,
                "QueueTime": str(self._queue_seconds(member)),
                "AvgQueueTime": str(average), "CurrentQueueSize": str(len(queue.members))}

    def _leave_queue(self, leg: CallLeg) -> None:
        member = leg._member
        if member is None:
            return
        leg._member = None
        for queue in self.queues.values():
            if member in queue.members:
                queue.members.remove(member)
                queue.waited.append(time.time() - member.enqueued)
                queue.changed.set()

    async def _enqueue(self, leg: CallLeg, verb: ElementTree.Element, base: str | None) -> _Outcome:
        name = (verb.text or "").strip()
        action = self._resolve(verb.get("action"), base, leg) if verb.get("action") else None
        method = verb.get("method") or "POST"
        wait_attr = verb.get("waitUrl")
        wait_url = "" if wait_attr == "" else self._resolve(wait_attr, base, leg)
        queue = self._queue_for(name)

        def result(outcome: str, member: _Member | None) -> dict[str, str]:
            seconds = self._queue_seconds(member) if member else 0
            return {"QueueResult": outcome, "QueueSid": queue.sid, "QueueTime": str(seconds)}

        if len(queue.members) >= queue.max_size:
            return _Nav(action, method, result("queue-full", None)) if action else None
        member = _Member(leg, asyncio.get_running_loop())
        queue.members.append(member)
        queue.changed.set()
        leg._member = member
        if action:
            leg._hangup_action = lambda: _Nav(action, method, result("hangup", member))
        waiting = asyncio.create_task(self._audio_loop(
            leg, wait_url, verb.get("waitUrlMethod") or "POST", "wait",
            extra=lambda: self._queue_fields(queue, member), queue=True))
        try:
            either: set[asyncio.Future[Any]] = {member.dequeued, waiting}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            self._leave_queue(leg)
        if member.dequeued.done():
            target = member.dequeued.result()
            if isinstance(target, _Nav):
                leg._hangup_action = None
                if action:  # Twilio requests the action right away, then runs the member's Url
                    fields = {**leg.fields(), **result("redirected", member)}
                    self._queue_callback(_Callback("action", action, method, fields), repeatable=False)
                return target
            return await self._bridged_from_queue(leg, target, action, method, result("bridged", member))
        leg._hangup_action = None
        how = waiting.result()
        if how == "hangup":
            if action:
                fields = {**leg.fields(), **result("hangup", member)}
                self._queue_callback(_Callback("action", action, method, fields), repeatable=False)
            return _HANGUP
        return _Nav(action, method, result("leave", member)) if action else None

    async def _bridged_from_queue(self, leg: CallLeg, bridge: _Bridge, action: str | None, method: str,
                                  fields: dict[str, str]) -> _Outcome:
        if bridge.url:
            await self._play_document(leg, _Nav(bridge.url, bridge.method, {}), "queue url", queue=False)
        if bridge.agent.ended:
            bridge.connected.set_result(False)
            return _Nav(action, method, {**fields, "QueueResult": "hangup"}) if action else None
        ended = self._bridge_legs(leg, bridge.agent)
        bridge.connected.set_result(True)
        if action:
            leg._hangup_action = lambda: _Nav(action, method, fields)
        await ended.wait()
        leg._hangup_action = None
        return _Nav(action, method, fields) if action else None

    # -- Dial -------------------------------------------------------------------------------------------
    async def _dial(self, leg: CallLeg, verb: ElementTree.Element, base: str | None) -> _Outcome:
        action = self._resolve(verb.get("action"), base, leg) if verb.get("action") else None
        method = verb.get("method") or "POST"
        conference = verb.find("Conference")
        numbers = verb.findall("Number")
        queue = verb.find("Queue")
        if action:
            leg._hangup_action = lambda: _Nav(action, method, {"DialCallStatus": "completed"})
        try:
            if conference is not None:
                fields = await self._dial_conference(leg, conference, base,
                                                     _flag(verb.get("hangupOnStar"), False))
            elif numbers or (verb.text or "").strip():
                target = numbers[0] if numbers else None
                number = (target.text if target is not None else verb.text) or ""
                fields = await self._dial_number(leg, verb, target, number.strip(), base)
            elif queue is not None:
                fields = await self._dial_queue(leg, verb, queue, base)
            else:
                children = ", ".join(f"<{c.tag}>" for c in verb) or "nothing"
                self._error(f"emulator: <Dial> of {children} is not emulated", leg)
                fields = {"DialCallStatus": "failed"}
        finally:
            leg._hangup_action = None
        return _Nav(action, method, fields) if action else None

    async def _dial_conference(self, leg: CallLeg, noun: ElementTree.Element, base: str | None,
                               hangup_on_star: bool = False) -> dict[str, str]:
        wait_attr = noun.get("waitUrl")
        options = _JoinOptions(
            start_on_enter=_flag(noun.get("startConferenceOnEnter"), True),
            end_on_exit=_flag(noun.get("endConferenceOnExit"), False),
            muted=_flag(noun.get("muted"), False), beep=noun.get("beep") or "true",
            label=noun.get("participantLabel"),
            wait_url="" if wait_attr == "" else self._resolve(wait_attr, base, leg),
            wait_method=noun.get("waitMethod") or "POST",
            status_callback=self._resolve(noun.get("statusCallback"), base, leg),
            status_callback_method=noun.get("statusCallbackMethod") or "POST",
            events=frozenset((noun.get("statusCallbackEvent") or "").split()),
            coaching=_flag(noun.get("coach"), False), hangup_on_star=hangup_on_star)
        room = await self._in_conference(leg, (noun.text or "").strip(), options)
        return {"DialCallStatus": "completed", "ConferenceSid": room.sid}

    async def _dial_number(self, leg: CallLeg, verb: ElementTree.Element, noun: ElementTree.Element | None,
                           number: str, base: str | None) -> dict[str, str]:
        child = CallLeg(self, verb.get("callerId") or leg.from_, number, "outbound-dial", parent=leg)
        self.calls[child.sid] = child
        if noun is not None and noun.get("statusCallback"):
            child.status_callback = self._resolve(noun.get("statusCallback"), base, leg)
            child.status_callback_method = noun.get("statusCallbackMethod") or "POST"
            child.status_events = frozenset((noun.get("statusCallbackEvent") or "completed").split())
        whisper = self._resolve(noun.get("url"), base, leg) if noun is not None and noun.get("url") else None
        whisper_method = (noun.get("method") if noun is not None else None) or "POST"
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        whisper_nav = _Nav(whisper, whisper_method) if whisper else None
        ring_for = _number(verb.get("timeout"), 30)
        child._task = asyncio.create_task(self._dial_child(child, ring_for, whisper_nav, ready))
        try:
            outcome = await ready
        except asyncio.CancelledError:
            if not child.ended and child._bridge is None:
                self._terminate(child, "canceled")
            raise
        if outcome != "bridged":
            return {"DialCallStatus": outcome, "DialCallSid": child.sid, "DialCallDuration": "0",
                    "DialBridged": "false"}
        ended = leg._bridge_ended
        await ended.wait()
        return {"DialCallStatus": "completed", "DialCallSid": child.sid,
                "DialCallDuration": str(child.duration()), "DialBridged": "true"}

    async def _dial_child(self, child: CallLeg, ring_for: float, whisper: _Nav | None,
                          ready: asyncio.Future[str]) -> None:
        parent = self.calls[child.parent_sid or ""]
        try:
            status = await self._ring(child, ring_for, machine_detection=False)
            if status != "answered":
                ready.set_result(status)
                self._finish(child, status)
                return
            if whisper is not None:
                how = await self._execute(child, whisper)
                if how is _HANGUP or child.ended or parent.ended:
                    if not ready.done():
                        ready.set_result("completed")
                    self._finish(child, "completed")
                    return
            ended = self._bridge_legs(parent, child)
            ready.set_result("bridged")
            await ended.wait()
            self._finish(child, "completed")
        finally:
            if not ready.done():
                ready.set_result("failed")

    async def _dial_queue(self, leg: CallLeg, verb: ElementTree.Element, noun: ElementTree.Element,
                          base: str | None) -> dict[str, str]:
        queue = self.queue_named((noun.text or "").strip())
        if queue is None:
            return {"DialCallStatus": "failed"}
        deadline = asyncio.get_running_loop().time() + _number(verb.get("timeout"), 30) * self.time_scale
        while not queue.members:
            queue.changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return {"DialCallStatus": "no-answer", "QueueSid": queue.sid}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.changed.wait(), remaining)
        member = queue.members[0]
        url = self._resolve(noun.get("url"), base, leg) if noun.get("url") else None
        bridge = _Bridge(leg, url, noun.get("method") or "POST", asyncio.get_running_loop().create_future())
        self._leave_queue(member.leg)
        member.dequeued.set_result(bridge)
        if not await bridge.connected:
            return {"DialCallStatus": "canceled", "QueueSid": queue.sid, "DialCallSid": member.leg.sid}
        began = time.time()
        await leg._bridge_ended.wait()
        seconds = round((time.time() - began) / self.time_scale)
        return {"DialCallStatus": "completed", "DialCallSid": member.leg.sid, "QueueSid": queue.sid,
                "DialCallDuration": str(seconds), "DialBridged": "true"}

    def _bridge_legs(self, a: CallLeg, b: CallLeg) -> asyncio.Event:
        ended = asyncio.Event()
        a._bridge, b._bridge = b, a
        a._bridge_ended = b._bridge_ended = ended
        self._emit("bridged", a, b.sid)
        return ended

    def _unbridge(self, leg: CallLeg) -> None:
        other = leg._bridge
        if other is None:
            return
        leg._bridge = other._bridge = None
        leg._bridge_ended.set()
        if other.direction == "outbound-dial" and other.parent_sid == leg.sid:
            self._terminate(other, "completed")  # the caller leaving hangs up the dialled party

    # -- conferences -------------------------------------------------------------------------------------
    def _room_for(self, name: str) -> Conference:
        room = self.conference_named(name)
        if room is None or room.status == "completed":
            room = Conference(name)
            self.conferences[room.sid] = room
        return room

    async def _in_conference(self, leg: CallLeg, name: str | Conference, options: _JoinOptions) -> Conference:
        """Joins leg to the room and stays until it leaves (kicked, room ended); then returns the room."""
        room = name if isinstance(name, Conference) and name.status != "completed" else self._room_for(
            name if isinstance(name, str) else name.name)
        participant = self._join(leg, room, options)
        try:
            await self._participant_loop(participant)
        finally:
            self._remove_participant(participant, "participant_updated_via_api")
        return room

    def _join(self, leg: CallLeg, room: Conference, options: _JoinOptions) -> Participant:
        if options.status_callback:
            known = room.callbacks.get(options.status_callback)
            events = options.events | (known[1] if known else frozenset())
            room.callbacks[options.status_callback] = (options.status_callback_method, events)
        participant = Participant(leg, room, options)
        room.participants.append(participant)
        room.updated = time.time()
        leg.participant = participant
        self._conference_event(room, "participant-join", participant)
        self._emit("joined", leg, room.name)
        if participant.start_on_enter and room.status == "init":
            room.status = "in-progress"
            self._conference_event(room, "conference-start")
            for other in room.participants:
                other.changed.set()
        return participant

    async def _participant_loop(self, participant: Participant) -> None:
        leg, room = participant.leg, participant.room
        current: tuple[str, str | None, str] | None = None
        audio: asyncio.Task[str] | None = None
        try:
            while not participant.left:
                participant.changed.clear()
                wanted: tuple[str, str | None, str] | None = None
                if participant.hold:
                    wanted = ("hold", participant.hold_url, participant.hold_method)
                elif not room.started:
                    wanted = ("wait", participant.wait_url, participant.wait_method)
                if wanted != current:
                    if audio is not None:
                        audio.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await audio
                        audio = None
                    current = wanted
                    if wanted is not None:
                        audio = asyncio.create_task(self._audio_loop(leg, wanted[1], wanted[2], wanted[0]))
                await participant.changed.wait()
        finally:
            if audio is not None:
                audio.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await audio

    def _remove_participant(self, participant: Participant, reason: str) -> None:
        if participant.left:
            return
        participant.left = True
        participant.changed.set()
        room, leg = participant.room, participant.leg
        room.participants.remove(participant)
        room.updated = time.time()
        if leg.participant is participant:
            leg.participant = None
        self._conference_event(room, "participant-leave", participant,
                               {"ReasonParticipantLeft": reason, "ParticipantCallStatus": leg.status})
        self._emit("left", leg, room.name)
        if room.status == "completed":
            return
        if participant.end_on_exit:
            self._end_room(room, "participant-with-end-conference-on-exit-left", leg.sid)
        elif not room.participants:
            self._end_room(room, "last-participant-left", leg.sid)

    def _end_room(self, room: Conference, reason: str, call_sid: str | None) -> None:
        if room.status == "completed":
            return
        room.status = "completed"
        room.reason_ended = reason
        room.call_sid_ending = call_sid
        for other in list(room.participants):
            self._remove_participant(other, "conference_ended")
        extra = {"ReasonConferenceEnded": reason, "Reason": reason}
        if call_sid:
            extra["CallSidEndingConference"] = call_sid
        self._conference_event(room, "conference-end", None, extra)

    # -- ringing phones -----------------------------------------------------------------------------------
    async def _ring(self, leg: CallLeg, ring_for: float, *, machine_detection: bool) -> str:
        """Rings leg's phone: 'answered', or the final status (busy, no-answer, failed)."""
        phone = self._phones.get(leg.to, _Phone("human", 1.0))
        self._call_event(leg, "initiated")
        if phone.answer == "fail":
            return "failed"
        if phone.answer == "busy":
            await self._sleep(0.5)
            return "busy"
        leg.status = "ringing"
        self._call_event(leg, "ringing")
        self._emit("ringing", leg, leg.to)
        if phone.answer == "no-answer" or phone.ring_seconds >= ring_for:
            await self._sleep(ring_for)
            return "no-answer"
        await self._sleep(phone.ring_seconds)
        self._answer(leg)
        leg._machine = phone.answer == "machine"
        if machine_detection:
            leg.answered_by = "machine_start" if leg._machine else "human"
        self._call_event(leg, "answered")
        self._incoming_queue(leg.to).put_nowait(leg)
        return "answered"

    async def _outbound(self, leg: CallLeg, ring_for: float, form: RecordedRequest,
                        join: tuple[Conference, _JoinOptions] | None) -> None:
        amd = bool(form.get("MachineDetection"))
        async_amd = _flag(form.get("AsyncAmd"), False)
        try:
            status = await self._ring(leg, ring_for, machine_detection=amd and not async_amd)
            if status != "answered":
                self._finish(leg, status)
                return
            if amd and async_amd and form.get("AsyncAmdStatusCallback"):
                answered_by = "machine_start" if leg._machine else "human"
                self._queue_callback(_Callback(
                    "amd", form.get("AsyncAmdStatusCallback") or "",
                    form.get("AsyncAmdStatusCallbackMethod") or "POST",
                    {"AccountSid": self.account_sid, "CallSid": leg.sid, "AnsweredBy": answered_by,
                     "MachineDetectionDuration": "1200"}), repeatable=False)
            if join is not None:
                await self._in_conference(leg, join[0], join[1])
            elif leg._nav is not None:
                await self._execute(leg, leg._nav)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an emulator bug must show, and end the call
            self._error(f"emulator: {type(exc).__name__}: {exc}", leg)
        self._finish(leg, leg._final_status or "completed")

    # -- ending and redirecting legs ---------------------------------------------------------------------
    def _leave_everything(self, leg: CallLeg, reason: str) -> None:
        for task in list(leg._side_tasks):
            task.cancel()
        if leg.participant is not None:
            self._remove_participant(leg.participant, reason)
        self._leave_queue(leg)
        if leg._gathering is not None:
            leg._gathering.future.cancel()
            leg._gathering = None
        self._unbridge(leg)

    def _finish(self, leg: CallLeg, status: str) -> None:
        """The call is over (synchronous, idempotent): leave everything, post completed."""
        if leg.ended:
            return
        was_answered = leg.answered_at is not None
        leg.status = status if was_answered or status != "completed" else "canceled"
        leg.ended_at = time.time()
        leg._ended.set()
        self._leave_everything(leg, "participant_hung_up")
        if leg._hangup_action is not None:
            nav = leg._hangup_action()
            leg._hangup_action = None
            if nav.url:
                self._queue_callback(_Callback("action", nav.url, nav.method, {**leg.fields(), **nav.fields}),
                                     repeatable=False)
        self._call_event(leg, "completed")
        self._emit("ended", leg, leg.status)

    def _terminate(self, leg: CallLeg, status: str) -> None:
        if leg._task is not None and leg._task is not asyncio.current_task():
            leg._task.cancel()
        self._finish(leg, status)

    async def _hang_up(self, leg: CallLeg, status: str) -> None:
        task = leg._task
        self._terminate(leg, status)
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _redirect(self, leg: CallLeg, nav: _Nav) -> None:
        task = leg._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leg._hangup_action = None
        self._leave_everything(leg, "participant_updated_via_api")
        leg._task = asyncio.create_task(self._run_leg(leg, nav))

    # -- the REST API --------------------------------------------------------------------------------
    _ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
        (name, re.compile(pattern)) for name, pattern in (
            ("calls", r"Calls\.json"),
            ("call", r"Calls/(?P<sid>[^/]+)\.json"),
            ("conferences", r"Conferences\.json"),
            ("conference", r"Conferences/(?P<sid>[^/]+)\.json"),
            ("participants", r"Conferences/(?P<sid>[^/]+)/Participants\.json"),
            ("participant", r"Conferences/(?P<sid>[^/]+)/Participants/(?P<who>[^/]+)\.json"),
            ("queues", r"Queues\.json"),
            ("queue", r"Queues/(?P<sid>[^/]+)\.json"),
            ("members", r"Queues/(?P<sid>[^/]+)/Members\.json"),
            ("member", r"Queues/(?P<sid>[^/]+)/Members/(?P<who>[^/]+)\.json"),
            ("messages", r"Messages\.json"),
        ))

    @staticmethod
    def _not_found(path: str) -> web.Response:
        return web.json_response({"code": 20404, "message": f"The requested resource {path} was not found",
                                  "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404},
                                 status=404)

    @staticmethod
    def _bad(code: int, message: str, status: int = 400) -> web.Response:
        more_info = f"https://www.twilio.com/docs/errors/{code}"
        return web.json_response({"code": code, "message": message, "more_info": more_info, "status": status},
                                 status=status)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user == self.account_sid and password == self.auth_token) or user.startswith("SK")

    async def _api(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            pairs = [(k, v) for k, v in request.query.items()]
        else:
            pairs = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
        record = RecordedRequest(request.method, request.path, pairs)
        self.requests.append(record)
        if self.require_auth and not self._authorized(request):
            return self._bad(20003, "Authenticate", 401)
        prefix = f"/{API_VERSION}/Accounts/{self.account_sid}/"
        if not request.path.startswith(prefix):
            return self._not_found(request.path)
        rest = request.path[len(prefix):]
        for name, pattern in self._ROUTES:
            match = pattern.fullmatch(rest)
            if match:
                handler = getattr(self, f"_api_{name}")
                response: web.Response = await handler(request, record, **match.groupdict())
                return response
        return self._not_found(request.path)

    def _uri(self, tail: str) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/{tail}"

    def _page(self, key: str, items: list[dict[str, Any]], tail: str) -> web.Response:
        uri = self._uri(tail)
        return web.json_response({key: items, "end": max(len(items) - 1, 0), "first_page_uri": uri,
                                  "next_page_uri": None, "page": 0, "page_size": 50,
                                  "previous_page_uri": None, "start": 0, "uri": uri})

    def _call_json(self, leg: CallLeg) -> dict[str, Any]:
        return {
            "sid": leg.sid, "account_sid": self.account_sid, "api_version": API_VERSION, "to": leg.to,
            "to_formatted": leg.to, "from": leg.from_, "from_formatted": leg.from_, "status": leg.status,
            "direction": leg.direction, "parent_call_sid": leg.parent_sid, "answered_by": leg.answered_by,
            "date_created": _rfc2822(leg.created), "date_updated": _rfc2822(time.time()),
            "start_time": _rfc2822(leg.answered_at) if leg.answered_at else None,
            "end_time": _rfc2822(leg.ended_at) if leg.ended_at else None,
            "duration": str(leg.duration()) if leg.ended else None, "price": None, "price_unit": "USD",
            "caller_name": None, "forwarded_from": None, "group_sid": None, "phone_number_sid": None,
            "queue_time": "0", "trunk_sid": None, "uri": self._uri(f"Calls/{leg.sid}.json"),
            "subresource_uris": {"notifications": self._uri(f"Calls/{leg.sid}/Notifications.json"),
                                 "recordings": self._uri(f"Calls/{leg.sid}/Recordings.json")},
        }

    def _conference_json(self, room: Conference) -> dict[str, Any]:
        return {
            "sid": room.sid, "account_sid": self.account_sid, "api_version": API_VERSION,
            "friendly_name": room.name, "status": room.status, "region": "us1",
            "date_created": _rfc2822(room.created), "date_updated": _rfc2822(room.updated),
            "reason_conference_ended": room.reason_ended, "call_sid_ending_conference": room.call_sid_ending,
            "uri": self._uri(f"Conferences/{room.sid}.json"),
            "subresource_uris": {"participants": self._uri(f"Conferences/{room.sid}/Participants.json"),
                                 "recordings": self._uri(f"Conferences/{room.sid}/Recordings.json")},
        }

    def _participant_json(self, participant: Participant | None, leg: CallLeg, room: Conference,
                          options: _JoinOptions | None = None) -> dict[str, Any]:
        status = "connected" if participant and not participant.left else (
            "complete" if leg.ended else leg.status if leg.status in ("queued", "ringing") else "connecting")
        source: Participant | _JoinOptions | None = participant or options
        return {
            "account_sid": self.account_sid, "call_sid": leg.sid, "conference_sid": room.sid,
            "label": getattr(source, "label", None), "call_sid_to_coach": None,
            "coaching": bool(getattr(source, "coaching", False)),
            "end_conference_on_exit": bool(getattr(source, "end_on_exit", False)),
            "start_conference_on_enter": bool(getattr(source, "start_on_enter", True)),
            "muted": bool(getattr(source, "muted", False)), "hold": bool(participant and participant.hold),
            "status": status, "date_created": _rfc2822(leg.created), "date_updated": _rfc2822(time.time()),
            "uri": self._uri(f"Conferences/{room.sid}/Participants/{leg.sid}.json"),
        }

    def _queue_json(self, queue: CallQueue) -> dict[str, Any]:
        average = round(sum(queue.waited) / len(queue.waited) / self.time_scale) if queue.waited else 0
        return {"sid": queue.sid, "account_sid": self.account_sid, "friendly_name": queue.name,
                "current_size": len(queue.members), "max_size": queue.max_size, "average_wait_time": average,
                "date_created": _rfc2822(queue.created), "date_updated": _rfc2822(time.time()),
                "uri": self._uri(f"Queues/{queue.sid}.json")}

    def _member_json(self, queue: CallQueue, member: _Member, position: int) -> dict[str, Any]:
        return {"call_sid": member.leg.sid, "queue_sid": queue.sid, "position": position,
                "wait_time": self._queue_seconds(member), "date_enqueued": _rfc2822(member.enqueued),
                "uri": self._uri(f"Queues/{queue.sid}/Members/{member.leg.sid}.json")}

    def _nav_from(self, form: RecordedRequest) -> _Nav | None:
        if form.get("Twiml"):
            return _Nav(None, "POST", {}, form.get("Twiml"))
        if form.get("Url"):
            return _Nav(form.get("Url"), form.get("Method") or "POST")
        return None

    async def _api_calls(self, request: web.Request, form: RecordedRequest) -> web.Response:
        if request.method == "GET":
            legs = [leg for leg in self.calls.values()
                    if all(not form.get(k) or form.get(k) == v for k, v in (
                        ("To", leg.to), ("From", leg.from_), ("Status", leg.status), ("ParentCallSid",
                                                                                     leg.parent_sid)))]
            return self._page("calls", [self._call_json(leg) for leg in reversed(legs)], "Calls.json")
        if request.method != "POST":
            return self._bad(20004, "Method not allowed", 405)
        to, from_ = form.get("To"), form.get("From")
        if not to:
            return self._bad(21201, "No 'To' number is specified")
        if not from_:
            return self._bad(21213, "No 'From' number is specified")
        nav = self._nav_from(form)
        if nav is None and not form.get("ApplicationSid"):
            return self._bad(21205, "Url parameter is required")
        if nav is None:
            return self._bad(21218, "ApplicationSid is not emulated")
        leg = CallLeg(self, from_, to, "outbound-api")
        leg._nav = nav
        self._set_status_callback(leg, form.get("StatusCallback"), form.get("StatusCallbackMethod"),
                                  form.getall("StatusCallbackEvent"))
        self.calls[leg.sid] = leg
        leg._task = asyncio.create_task(self._outbound(leg, _number(form.get("Timeout"), 60), form, None))
        return web.json_response(self._call_json(leg), status=201)

    def _set_status_callback(self, leg: CallLeg, url: str | None, method: str | None,
                             events: list[str]) -> None:
        if not url:
            return
        leg.status_callback = url
        leg.status_callback_method = method or "POST"
        words = [w for value in events for w in value.replace(",", " ").split()]
        leg.status_events = frozenset(words or ["completed"])

    async def _api_call(self, request: web.Request, form: RecordedRequest, sid: str) -> web.Response:
        leg = self.calls.get(sid)
        if leg is None:
            return self._not_found(request.path)
        if request.method == "GET":
            return web.json_response(self._call_json(leg))
        if request.method != "POST":
            return self._bad(20004, "Method not allowed", 405)
        wanted = form.get("Status")
        nav = self._nav_from(form)
        if wanted in ("completed", "canceled"):
            if leg.status in ("queued", "ringing") and leg.answered_at is None:
                await self._hang_up(leg, "canceled")
            elif wanted == "completed" and not leg.ended:
                await self._hang_up(leg, "completed")
        elif nav is not None:
            if leg.ended:
                return self._bad(21220, "Call is not in-progress. Cannot redirect.")
            if leg.answered_at is None and leg.direction != "inbound":
                leg._nav = nav
            else:
                await self._redirect(leg, nav)
        if form.get("StatusCallback"):
            self._set_status_callback(leg, form.get("StatusCallback"), form.get("StatusCallbackMethod"),
                                      form.getall("StatusCallbackEvent"))
        return web.json_response(self._call_json(leg))

    async def _api_conferences(self, request: web.Request, form: RecordedRequest) -> web.Response:
        rooms = [room for room in self.conferences.values()
                 if (not form.get("FriendlyName") or room.name == form.get("FriendlyName"))
                 and (not form.get("Status") or room.status == form.get("Status"))]
        items = [self._conference_json(r) for r in reversed(rooms)]
        return self._page("conferences", items, "Conferences.json")

    def _room(self, sid: str, create: bool = False) -> Conference | None:
        if sid in self.conferences:
            return self.conferences[sid]
        if sid.startswith("CF"):
            return None
        room = self.conference_named(sid)
        if room is not None and room.status != "completed":
            return room
        return self._room_for(sid) if create else room

    async def _api_conference(self, request: web.Request, form: RecordedRequest, sid: str) -> web.Response:
        room = self._room(sid)
        if room is None:
            return self._not_found(request.path)
        if request.method == "POST":
            if form.get("Status") == "completed":
                self._end_room(room, "conference-ended-via-api", None)
            if form.get("AnnounceUrl"):
                url, method = form.get("AnnounceUrl") or "", form.get("AnnounceMethod") or "POST"
                for participant in list(room.participants):
                    self._side_task(participant.leg, self._announce(participant.leg, url, method, room))
        return web.json_response(self._conference_json(room))

    async def _api_participants(self, request: web.Request, form: RecordedRequest, sid: str) -> web.Response:
        room = self._room(sid, create=request.method == "POST")
        if room is None:
            return self._not_found(request.path)
        if request.method == "GET":
            items = [self._participant_json(p, p.leg, room) for p in room.participants]
            return self._page("participants", items, f"Conferences/{room.sid}/Participants.json")
        if not form.get("To"):
            return self._bad(21201, "No 'To' number is specified")
        if not form.get("From"):
            return self._bad(21213, "No 'From' number is specified")
        wait_url = form.get("WaitUrl")
        options = _JoinOptions(
            start_on_enter=_flag(form.get("StartConferenceOnEnter"), True),
            end_on_exit=_flag(form.get("EndConferenceOnExit"), False), muted=_flag(form.get("Muted"), False),
            beep=form.get("Beep") or "true", label=form.get("Label"),
            wait_url=wait_url if wait_url is not None else None, wait_method=form.get("WaitMethod") or "POST",
            status_callback=form.get("ConferenceStatusCallback"),
            status_callback_method=form.get("ConferenceStatusCallbackMethod") or "POST",
            events=frozenset(w for v in form.getall("ConferenceStatusCallbackEvent") for w in v.split()),
            coaching=_flag(form.get("Coaching"), False))
        leg = CallLeg(self, form.get("From") or "", form.get("To") or "", "outbound-api")
        self._set_status_callback(leg, form.get("StatusCallback"), form.get("StatusCallbackMethod"),
                                  form.getall("StatusCallbackEvent"))
        self.calls[leg.sid] = leg
        leg._task = asyncio.create_task(self._outbound(leg, _number(form.get("Timeout"), 60), form,
                                                       (room, options)))
        return web.json_response(self._participant_json(None, leg, room, options), status=201)

    def _find_participant(self, room: Conference, who: str) -> Participant | None:
        return next((p for p in room.participants if who in (p.leg.sid, p.label)), None)

    async def _api_participant(self, request: web.Request, form: RecordedRequest, sid: str,
                               who: str) -> web.Response:
        room = self._room(sid)
        participant = self._find_participant(room, who) if room else None
        if room is None or participant is None:
            return self._not_found(request.path)
        if request.method == "DELETE":
            self._remove_participant(participant, "participant_updated_via_api")
            return web.Response(status=204)
        if request.method == "POST":
            self._update_participant(participant, form)
        return web.json_response(self._participant_json(participant, participant.leg, room))

    def _update_participant(self, participant: Participant, form: RecordedRequest) -> None:
        room, was_held = participant.room, participant.hold
        if form.get("HoldUrl") is not None:
            participant.hold_url = form.get("HoldUrl")
            participant.hold_method = form.get("HoldMethod") or "POST"
        if form.get("Hold") is not None:
            hold = _flag(form.get("Hold"), False)
            if hold != participant.hold:
                participant.hold = hold
                event = "participant-hold" if hold else "participant-unhold"
                self._conference_event(room, event, participant)
                self._emit("hold" if hold else "unhold", participant.leg, room.name)
        if form.get("Muted") is not None:
            muted = _flag(form.get("Muted"), False)
            if muted != participant.muted:
                participant.muted = muted
                event = "participant-mute" if muted else "participant-unmute"
                self._conference_event(room, event, participant)
        if form.get("EndConferenceOnExit") is not None and not was_held:
            participant.end_on_exit = _flag(form.get("EndConferenceOnExit"), False)  # ignored while on hold
        if form.get("Label"):
            participant.label = form.get("Label")
        participant.updated = time.time()
        participant.changed.set()
        if form.get("AnnounceUrl"):
            self._side_task(participant.leg, self._announce(
                participant.leg, form.get("AnnounceUrl") or "", form.get("AnnounceMethod") or "POST", room))

    async def _api_queues(self, request: web.Request, form: RecordedRequest) -> web.Response:
        if request.method == "POST":
            queue = self._queue_for(form.get("FriendlyName") or "")
            queue.max_size = int(_number(form.get("MaxSize"), queue.max_size))
            return web.json_response(self._queue_json(queue), status=201)
        return self._page("queues", [self._queue_json(q) for q in self.queues.values()], "Queues.json")

    async def _api_queue(self, request: web.Request, form: RecordedRequest, sid: str) -> web.Response:
        queue = self.queues.get(sid)
        if queue is None:
            return self._not_found(request.path)
        if request.method == "POST" and form.get("MaxSize"):
            queue.max_size = int(_number(form.get("MaxSize"), queue.max_size))
        return web.json_response(self._queue_json(queue))

    async def _api_members(self, request: web.Request, form: RecordedRequest, sid: str) -> web.Response:
        queue = self.queues.get(sid)
        if queue is None:
            return self._not_found(request.path)
        items = [self._member_json(queue, m, i + 1) for i, m in enumerate(queue.members)]
        return self._page("queue_members", items, f"Queues/{sid}/Members.json")

    async def _api_member(self, request: web.Request, form: RecordedRequest, sid: str,
                          who: str) -> web.Response:
        queue = self.queues.get(sid)
        if queue is None:
            return self._not_found(request.path)
        members = queue.members[:1] if who == "Front" else [m for m in queue.members if m.leg.sid == who]
        if not members:
            return self._not_found(request.path)
        member = members[0]
        position = queue.members.index(member) + 1
        body = self._member_json(queue, member, position)
        if request.method == "POST":
            if not form.get("Url"):
                return self._bad(20001, "Url is required")
            self._leave_queue(member.leg)
            if not member.dequeued.done():
                member.dequeued.set_result(_Nav(form.get("Url"), form.get("Method") or "POST"))
        return web.json_response(body)

    async def _api_messages(self, request: web.Request, form: RecordedRequest) -> web.Response:
        self.messages.append(form)
        if request.method != "POST":
            return self._bad(20004, "Method not allowed", 405)
        for listener in list(self.message_listeners):
            listener(form)
        return web.json_response({
            "sid": _sid("SM"), "account_sid": self.account_sid, "status": "queued", "to": form.get("To"),
            "from": form.get("From"), "body": form.get("Body") or "", "num_segments": "1",
            "direction": "outbound-api", "api_version": API_VERSION, "date_created": _rfc2822(time.time())},
            status=201)
