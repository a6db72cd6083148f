"""The voice emulator against a small TwiML app written here (not the gateway): it must behave like Twilio."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gateway.embedded_redis import free_port
from gateway.twilio_voice_emulator import APPLICATION_ERROR, CallLeg, VoiceEmulator
from gateway.voice_simulator_cli import run_interactive

PUBLIC = "https://gw.example.test"
TOKEN = "test-token-0123456789"
ACCOUNT = "AC" + "1" * 32
CALLER = "+14155550100"
NUMBER = "+15550100002"
AGENT = "+15550001111"

Answer = str | Callable[[dict[str, str]], str | web.Response]


@dataclass
class Hit:
    method: str
    path: str
    form: dict[str, str]


@dataclass
class TwimlApp:
    """Fixed TwiML by path; every request's signature is checked against the public URL."""

    routes: dict[str, Answer] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)

    def to(self, path: str) -> list[dict[str, str]]:
        return [h.form for h in self.hits if h.path == path]

    def events(self, path: str) -> list[str]:
        return [h.form.get("StatusCallbackEvent") or h.form.get("CallStatus", "") for h in self.hits
                if h.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()} if request.method == "POST" else {}
        url = PUBLIC + request.path_qs
        if not RequestValidator(TOKEN).validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            self.bad_signatures.append(url)
            return web.Response(status=403)
        if request.method == "GET":
            form = dict(request.query)
        self.hits.append(Hit(request.method, request.path, form))
        answer = self.routes.get(request.path)
        if answer is None:
            if "status" in request.path or "events" in request.path:
                return web.Response(status=204)
            return web.Response(status=404)
        result = answer(form) if callable(answer) else answer
        if isinstance(result, web.Response):
            return result
        return web.Response(text=f'<?xml version="1.0" encoding="UTF-8"?><Response>{result}</Response>',
                            content_type="text/xml")


@dataclass
class Rig:
    app: TwimlApp
    emulator: VoiceEmulator
    http: aiohttp.ClientSession

    async def api(self, method: str, tail: str, data: list[tuple[str, str]] | dict[str, str] | None = None,
                  *, status: int = 200) -> Any:
        auth = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        url = f"{self.emulator.api_url}/2010-04-01/Accounts/{ACCOUNT}/{tail}"
        async with self.http.request(method, url, data=data, headers={"Authorization": f"Basic {auth}"}) as reply:
            assert reply.status == status, await reply.text()
            return await reply.json() if reply.status != 204 else None


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    app = TwimlApp()
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    emulator = VoiceEmulator(f"http://127.0.0.1:{port}", PUBLIC, TOKEN, ACCOUNT, free_port(), time_scale=0.01)
    await emulator.start()
    async with aiohttp.ClientSession() as http:
        yield Rig(app, emulator, http)
    await emulator.stop()
    await runner.cleanup()
    assert app.bad_signatures == []


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_inbound_call_gather_speech_signed_fields_and_status_callback(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = (
        "<Say>Welcome to Acme.</Say>"
        '<Gather input="speech" action="voice/gather" speechTimeout="auto" language="en-US" hints="billing">'
        "<Say>How can I help?</Say></Gather><Redirect>/twilio/voice</Redirect>")
    rig.app.routes["/twilio/voice/gather"] = lambda form: f"<Say>You said {form['SpeechResult']}.</Say><Hangup/>"
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    assert leg.sid.startswith("CA") and len(leg.sid) == 34
    assert await leg.next_said() == "Welcome to Acme."
    assert await leg.next_said() == "How can I help?"
    await leg.speak("my bill is wrong", confidence=0.87)
    assert await leg.next_said() == "You said my bill is wrong."
    await leg.wait_ended()
    assert leg.status == "completed"

    first = rig.app.to("/twilio/voice")[0]
    assert first["CallStatus"] == "ringing" and first["Direction"] == "inbound"
    assert first["From"] == first["Caller"] == CALLER and first["To"] == first["Called"] == NUMBER
    assert first["AccountSid"] == ACCOUNT and first["ApiVersion"] == "2010-04-01"
    assert first["FromCountry"] == "US" and "ToCountry" in first and "FromCity" in first
    gathered = rig.app.to("/twilio/voice/gather")[0]
    assert gathered["SpeechResult"] == "my bill is wrong" and float(gathered["Confidence"]) == pytest.approx(0.87)
    assert gathered["CallStatus"] == "in-progress" and gathered["CallSid"] == leg.sid

    await rig.emulator.callbacks_sent()
    [status] = rig.app.to("/twilio/voice/status")
    assert status["CallStatus"] == "completed" and status["CallSid"] == leg.sid
    assert int(status["CallDuration"]) >= 0
    assert rig.emulator.errors == []


async def test_gather_digits_silence_and_redirects(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = (
        '<Gather numDigits="1" action="/menu"><Say>Press 1 for sales.</Say></Gather><Say>unreachable</Say>')
    rig.app.routes["/menu"] = lambda form: (
        f"<Say>Digit {form['Digits']}.</Say>"
        f'<Gather actionOnEmptyResult="true" input="dtmf speech" action="{PUBLIC}/empty"><Say>Anything?</Say>'
        "</Gather>")
    rig.app.routes["/empty"] = lambda form: (
        f"<Say>Empty {'Digits' in form or 'SpeechResult' in form}.</Say>"
        '<Gather input="speech" action="/never"><Say>Last chance.</Say></Gather>'
        "<Say>Fell through.</Say>"
        '<Redirect method="GET">/get-me?step=2</Redirect>')
    rig.app.routes["/get-me"] = "<Say>Got by GET.</Say>"
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    assert await leg.next_said() == "Press 1 for sales."
    await leg.press("12")
    assert await leg.next_said() == "Digit 1."
    assert await leg.next_said() == "Anything?"
    await leg.stay_silent()
    assert await leg.next_said() == "Empty False."
    assert await leg.next_said() == "Last chance."
    await leg.stay_silent()
    assert await leg.next_said() == "Fell through."
    assert await leg.next_said() == "Got by GET."
    await leg.wait_ended()
    assert rig.app.to("/never") == []
    [got] = [h for h in rig.app.hits if h.path == "/get-me"]
    assert got.method == "GET" and got.form["step"] == "2" and got.form["CallSid"] == leg.sid
    assert "unreachable" not in leg.heard


async def test_application_errors_end_the_call(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = lambda form: web.Response(status=500, text="boom")
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_ended()
    assert leg.heard == [APPLICATION_ERROR]
    assert any(e.startswith("11200") for e in rig.emulator.errors)

    rig.app.routes["/twilio/voice"] = lambda form: web.Response(text="<Response><Say>oops", content_type="text/xml")
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_ended()
    assert any(e.startswith("12100") for e in rig.emulator.errors)


async def test_conference_wait_agent_call_bridge_hold_and_end(rig: Rig) -> None:
    conf = ('<Conference startConferenceOnEnter="{start}" endConferenceOnExit="{end}" waitUrl="/wait" '
            'statusCallback="/conf-events" statusCallbackEvent="start end join leave hold">support-1</Conference>')
    rig.app.routes["/twilio/voice"] = (
        "<Say>Connecting you.</Say>"
        f'<Dial action="/after-dial">{conf.format(start="false", end="false")}</Dial>')
    rig.app.routes["/wait"] = '<Say>Please hold.</Say><Pause length="5"/>'
    rig.app.routes["/hold"] = "<Play>https://example.test/music.mp3</Play>"
    rig.app.routes["/agent-brief"] = (
        '<Gather numDigits="1" action="/agent-accept"><Say>Customer waiting about billing. Press 1.</Say></Gather>'
        "<Hangup/>")
    rig.app.routes["/agent-accept"] = f"<Dial>{conf.format(start='true', end='true')}</Dial>"
    rig.app.routes["/after-dial"] = "<Say>Thanks, goodbye.</Say>"

    caller = await rig.emulator.place_call(CALLER, NUMBER)
    await caller.wait_until(lambda: caller.heard.count("Please hold.") >= 2)
    assert caller.in_conference and rig.emulator.hearing(caller) == set()
    [room] = (await rig.api("GET", "Conferences.json", {"FriendlyName": "support-1"}))["conferences"]
    assert room["status"] == "init" and room["sid"].startswith("CF")

    created = await rig.api("POST", "Calls.json", [
        ("To", AGENT), ("From", NUMBER), ("Url", f"{PUBLIC}/agent-brief"),
        ("StatusCallback", f"{PUBLIC}/call-status"), ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"),
        ("StatusCallbackEvent", "completed"), ("Timeout", "20")], status=201)
    assert created["sid"].startswith("CA") and created["status"] == "queued"
    agent = await rig.emulator.next_incoming(AGENT)
    assert agent.sid == created["sid"]
    assert await agent.next_said() == "Customer waiting about billing. Press 1."
    await agent.press("1")
    await agent.wait_until(lambda: rig.emulator.hearing(caller) == {agent})
    assert rig.emulator.hearing(agent) == {caller}
    waited = len(caller.heard)
    await asyncio.sleep(0.2)
    assert len(caller.heard) == waited, "the wait loop stops once the conference starts"

    room_sid = caller.conference.sid if caller.conference else ""
    held = await rig.api("POST", f"Conferences/{room_sid}/Participants/{caller.sid}.json",
                         {"Hold": "true", "HoldUrl": f"{PUBLIC}/hold"})
    assert held["hold"] is True
    await caller.wait_until(lambda: "[play https://example.test/music.mp3]" in caller.heard)
    assert caller.on_hold and rig.emulator.hearing(caller) == set() and rig.emulator.hearing(agent) == set()
    await rig.api("POST", f"Conferences/{room_sid}/Participants/{caller.sid}.json", {"Hold": "false"})
    assert rig.emulator.hearing(caller) == {agent}

    # EndConferenceOnExit cannot be changed while on hold: Twilio ignores it.
    await rig.api("POST", f"Conferences/{room_sid}/Participants/{agent.sid}.json", {"Hold": "true"})
    await rig.api("POST", f"Conferences/{room_sid}/Participants/{agent.sid}.json", {"EndConferenceOnExit": "false"})
    await rig.api("POST", f"Conferences/{room_sid}/Participants/{agent.sid}.json", {"Hold": "false"})
    await agent.hang_up()
    await caller.wait_until(lambda: "Thanks, goodbye." in caller.heard)
    await caller.wait_ended()
    assert not caller.in_conference
    assert rig.app.to("/after-dial")[0]["CallSid"] == caller.sid

    await rig.emulator.callbacks_sent()
    events = rig.app.events("/conf-events")
    assert events.index("participant-join") < events.index("conference-start")
    assert "participant-hold" in events and "participant-unhold" in events
    assert events[-1] == "conference-end"
    end = rig.app.to("/conf-events")[-1]
    assert end["ReasonConferenceEnded"] == "participant-with-end-conference-on-exit-left"
    assert end["CallSidEndingConference"] == agent.sid and end["FriendlyName"] == "support-1"
    assert rig.app.events("/call-status") == ["initiated", "ringing", "in-progress", "completed"]
    assert rig.app.to("/call-status")[0]["CallStatus"] == "initiated"
    assert rig.emulator.errors == []


async def test_participants_api_adds_an_agent_straight_into_the_room(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = (
        '<Dial><Conference startConferenceOnEnter="false" waitUrl="" statusCallback="/conf-events" '
        'statusCallbackEvent="join leave end">room-9</Conference></Dial>')
    caller = await rig.emulator.place_call(CALLER, NUMBER)
    await caller.wait_until(lambda: caller.in_conference)
    added = await rig.api("POST", "Conferences/room-9/Participants.json",
                          {"From": NUMBER, "To": AGENT, "Label": "agent", "EndConferenceOnExit": "true"}, status=201)
    assert added["label"] == "agent" and added["call_sid"].startswith("CA")
    agent = await rig.emulator.next_incoming(AGENT)
    await agent.wait_until(lambda: rig.emulator.hearing(agent) == {caller})
    room = caller.conference
    assert room is not None
    await rig.api("DELETE", f"Conferences/{room.sid}/Participants/agent.json", status=204)
    await caller.wait_ended()
    await agent.wait_ended()
    assert room.status == "completed"


async def test_redirect_a_live_leg_and_dequeue_a_queue_member(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = '<Enqueue waitUrl="/queue-wait" action="/queue-done">support</Enqueue>'
    rig.app.routes["/queue-wait"] = lambda form: f"<Say>You are number {form['QueuePosition']}.</Say>"
    rig.app.routes["/moved"] = "<Say>Moved by the API.</Say>"
    rig.app.routes["/queue-done"] = "<Say>never executed after a REST dequeue</Say>"
    first = await rig.emulator.place_call(CALLER, NUMBER)
    second = await rig.emulator.place_call("+14155550101", NUMBER)
    await first.wait_until(lambda: "You are number 1." in first.heard)
    await second.wait_until(lambda: "You are number 2." in second.heard)
    wait_form = rig.app.to("/queue-wait")[0]
    assert {"QueuePosition", "QueueSid", "QueueTime", "AvgQueueTime", "CurrentQueueSize"} <= wait_form.keys()

    updated = await rig.api("POST", f"Calls/{first.sid}.json", {"Url": f"{PUBLIC}/moved"})
    assert updated["sid"] == first.sid
    await first.wait_until(lambda: "Moved by the API." in first.heard)
    await first.wait_ended()
    await second.wait_until(lambda: "You are number 1." in second.heard)

    queue_sid = wait_form["QueueSid"]
    await rig.api("POST", f"Queues/{queue_sid}/Members/Front.json", {"Url": f"{PUBLIC}/moved"})
    await second.wait_until(lambda: "Moved by the API." in second.heard)
    await rig.emulator.callbacks_sent()
    [done] = rig.app.to("/queue-done")
    assert done["QueueResult"] == "redirected" and done["CallSid"] == second.sid
    assert "never executed after a REST dequeue" not in second.heard
    await rig.api("POST", f"Calls/{first.sid}.json", {"Url": f"{PUBLIC}/moved"}, status=400)


async def test_status_callbacks_repeated_and_out_of_order(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = "<Say>Bye.</Say><Hangup/>"
    rig.emulator.repeat_status_callbacks = True
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_ended()
    await rig.emulator.callbacks_sent()
    assert [f["CallSid"] for f in rig.app.to("/twilio/voice/status")] == [leg.sid, leg.sid]

    rig.emulator.repeat_status_callbacks = False
    rig.emulator.defer_status_callbacks = True
    rig.emulator.phone(AGENT, "human", ring_seconds=1)
    rig.app.routes["/agent"] = "<Say>Hello agent.</Say>"
    await rig.api("POST", "Calls.json", [
        ("To", AGENT), ("From", NUMBER), ("Url", f"{PUBLIC}/agent"), ("StatusCallback", f"{PUBLIC}/cs"),
        ("StatusCallbackEvent", "ringing answered completed")], status=201)
    agent = await rig.emulator.next_incoming(AGENT)
    await agent.wait_ended()
    assert rig.app.to("/cs") == []
    await rig.emulator.flush_status_callbacks(reverse=True)
    assert rig.app.events("/cs") == ["completed", "in-progress", "ringing"]


async def test_no_answer_after_the_timeout_and_busy(rig: Rig) -> None:
    rig.emulator.phone(AGENT, "no-answer")
    rig.emulator.phone("+15550002222", "busy")
    began = time.monotonic()
    await rig.api("POST", "Calls.json", [
        ("To", AGENT), ("From", NUMBER), ("Twiml", "<Response><Say>hi</Say></Response>"), ("Timeout", "20"),
        ("StatusCallback", f"{PUBLIC}/cs"), ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "completed")], status=201)
    await eventually(lambda: len(rig.app.to("/cs")) == 2)
    assert time.monotonic() - began >= 0.2
    assert rig.app.events("/cs") == ["ringing", "no-answer"]
    await rig.api("POST", "Calls.json", {"To": "+15550002222", "From": NUMBER, "Url": f"{PUBLIC}/x",
                                         "StatusCallback": f"{PUBLIC}/cs2"}, status=201)
    await eventually(lambda: rig.app.events("/cs2") == ["busy"])
    assert rig.app.to("/x") == []


async def test_machine_detection_reports_answered_by(rig: Rig) -> None:
    rig.emulator.phone(AGENT, "machine")
    rig.app.routes["/agent"] = '<Gather numDigits="1" timeout="3"><Say>Press 1.</Say></Gather><Say>No one.</Say>'
    await rig.api("POST", "Calls.json", {"To": AGENT, "From": NUMBER, "Url": f"{PUBLIC}/agent",
                                         "MachineDetection": "Enable"}, status=201)
    machine = await rig.emulator.next_incoming(AGENT)
    await machine.wait_ended()
    assert rig.app.to("/agent")[0]["AnsweredBy"] == "machine_start"
    assert machine.heard == ["Press 1.", "No one."]


async def test_gather_in_a_conference_wait_url_is_error_13238(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = ('<Dial><Conference startConferenceOnEnter="false" waitUrl="/bad-wait">'
                                       "lonely</Conference></Dial>")
    rig.app.routes["/bad-wait"] = '<Say>Waiting.</Say><Gather action="/x"><Say>Press a key.</Say></Gather>'
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_until(lambda: any(e.startswith("13238") for e in rig.emulator.errors))
    assert "Waiting." in leg.heard and "Press a key." not in leg.heard
    assert not leg.gathering


async def test_dial_number_with_a_whisper_bridges_after_the_agent_accepts(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = (f'<Dial action="/dial-done" timeout="20"><Number url="/whisper">{AGENT}'
                                       "</Number></Dial>")
    rig.app.routes["/whisper"] = ('<Gather numDigits="1" action="/accepted"><Say>Press 1 to take it.</Say>'
                                  "</Gather><Hangup/>")
    rig.app.routes["/accepted"] = "<Say>Connecting.</Say>"
    rig.app.routes["/dial-done"] = lambda form: f"<Say>Dial {form['DialCallStatus']}.</Say>"
    caller = await rig.emulator.place_call(CALLER, NUMBER)
    agent = await rig.emulator.next_incoming(AGENT)
    assert agent.direction == "outbound-dial" and agent.parent_sid == caller.sid
    assert await agent.next_said() == "Press 1 to take it."
    assert rig.emulator.hearing(caller) == set()
    await agent.press("1")
    await caller.wait_until(lambda: rig.emulator.hearing(caller) == {agent})
    await agent.hang_up()
    await caller.wait_until(lambda: "Dial completed." in caller.heard)
    await caller.wait_ended()


async def test_rest_api_shapes_auth_and_unknown_paths(rig: Rig) -> None:
    await rig.api("GET", "Nothing.json", status=404)
    await rig.api("POST", "Calls.json", {"To": AGENT, "From": NUMBER}, status=400)
    async with rig.http.post(f"{rig.emulator.api_url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json") as reply:
        assert reply.status == 401
    sent = await rig.api("POST", "Messages.json", {"To": CALLER, "From": NUMBER, "Body": "hi"}, status=201)
    assert sent["sid"].startswith("SM")
    assert [r.path.rsplit("/", 1)[-1] for r in rig.emulator.requests] == [
        "Nothing.json", "Calls.json", "Calls.json", "Messages.json"]
    assert rig.emulator.requests[-1].get("Body") == "hi"

    # twilio-python, as the gateway uses it, understands the answers.
    rig.app.routes["/agent"] = "<Say>Hello.</Say>"
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT, TOKEN, http_client=http, environment={})
    client.api.base_url = rig.emulator.api_url
    try:
        call = await client.calls.create_async(to=AGENT, from_=NUMBER, url=f"{PUBLIC}/agent",
                                               status_callback=f"{PUBLIC}/cs",
                                               status_callback_event=["initiated", "completed"])
        assert call.sid and call.sid.startswith("CA") and call.status == "queued"
        agent = await rig.emulator.next_incoming(AGENT)
        assert agent.sid == call.sid
        fetched = await client.calls(call.sid).fetch_async()
        assert fetched.to == AGENT
        rooms = await client.conferences.list_async(friendly_name="none", status="in-progress")
        assert rooms == []
    finally:
        await http.close()
    assert rig.emulator.requests[-3].getall("StatusCallbackEvent") == ["initiated", "completed"]


async def test_hangup_by_the_caller_leaves_the_conference(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = ('<Dial action="/dial-done"><Conference waitUrl="" statusCallback="/ev" '
                                       'statusCallbackEvent="leave end">solo</Conference></Dial>')
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_until(lambda: leg.in_conference)
    await leg.hang_up()
    assert leg.ended and not leg.in_conference
    await rig.emulator.callbacks_sent()
    assert rig.app.events("/ev") == ["participant-leave", "conference-end"]
    [done] = rig.app.to("/dial-done")
    assert done["CallStatus"] == "completed"
    [status] = rig.app.to("/twilio/voice/status")
    assert status["CallStatus"] == "completed"


def test_call_leg_is_hashable() -> None:
    assert CallLeg.__hash__ is not None


async def test_interactive_simulator_plays_caller_and_agent(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = ('<Gather input="speech" action="/need"><Say>What do you need?</Say></Gather>'
                                       "<Redirect>/twilio/voice</Redirect>")
    rig.app.routes["/need"] = ('<Say>Please hold.</Say><Dial action="/after"><Conference '
                               'startConferenceOnEnter="false" waitUrl="">c1</Conference></Dial>')
    rig.app.routes["/agent-brief"] = '<Gather numDigits="1" action="/agent-accept"><Say>Press 1 to accept.</Say></Gather>'
    rig.app.routes["/agent-accept"] = '<Dial><Conference endConferenceOnExit="true">c1</Conference></Dial>'
    rig.app.routes["/after"] = "<Say>Goodbye.</Say>"
    out = io.StringIO()

    async def script() -> AsyncIterator[str]:
        await eventually(lambda: "caller hears: What do you need?" in out.getvalue())
        yield "a refund\n"
        await eventually(lambda: "caller is in conference c1" in out.getvalue())
        await rig.api("POST", "Calls.json", {"To": AGENT, "From": NUMBER, "Url": f"{PUBLIC}/agent-brief"},
                      status=201)
        await eventually(lambda: "agent hears: Press 1 to accept." in out.getvalue())
        yield "agent: #1\n"
        await eventually(lambda: "agent is in conference c1" in out.getvalue())
        yield "agent: hangup\n"
        await asyncio.sleep(30)

    code = await run_interactive(rig.emulator, CALLER, to_number=NUMBER, lines=script(), out=out)
    text = out.getvalue()
    assert code == 0, text
    assert f"  agent phone {AGENT} rings" in text
    assert "  caller hears: Please hold." in text and "  caller hears: Goodbye." in text
    assert rig.app.to("/need")[0]["SpeechResult"] == "a refund"


async def test_dial_queue_bridges_the_front_caller_and_announce_url(rig: Rig) -> None:
    rig.app.routes["/twilio/voice"] = '<Enqueue waitUrl="" action="/left-queue">sales</Enqueue>'
    rig.app.routes["/left-queue"] = lambda form: f"<Say>Queue result {form['QueueResult']}.</Say>"
    rig.app.routes["/agent"] = '<Dial action="/agent-done"><Queue url="/about-to-connect">sales</Queue></Dial>'
    rig.app.routes["/about-to-connect"] = "<Say>Connecting you to an agent.</Say>"
    rig.app.routes["/agent-done"] = lambda form: f"<Say>Agent dial {form['DialCallStatus']}.</Say>"
    caller = await rig.emulator.place_call(CALLER, NUMBER)
    await caller.wait_until(lambda: caller.in_queue)
    await rig.api("POST", "Calls.json", {"To": AGENT, "From": NUMBER, "Url": f"{PUBLIC}/agent"}, status=201)
    agent = await rig.emulator.next_incoming(AGENT)
    await agent.wait_until(lambda: rig.emulator.hearing(agent) == {caller})
    assert "Connecting you to an agent." in caller.heard
    await caller.hang_up()
    await agent.wait_until(lambda: "Agent dial completed." in agent.heard)
    await rig.emulator.callbacks_sent()
    assert rig.app.to("/left-queue")[0]["QueueResult"] == "bridged"

    rig.app.routes["/twilio/voice"] = '<Dial><Conference waitUrl="">talk</Conference></Dial>'
    rig.app.routes["/announce"] = "<Say>This call may be recorded.</Say>"
    leg = await rig.emulator.place_call(CALLER, NUMBER)
    await leg.wait_until(lambda: leg.in_conference)
    room = leg.conference
    assert room is not None
    await rig.api("POST", f"Conferences/{room.sid}/Participants/{leg.sid}.json",
                  {"AnnounceUrl": f"{PUBLIC}/announce"})
    assert await leg.next_said() == "This call may be recorded."
