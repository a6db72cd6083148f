"""TwilioRest against a local stand-in for Twilio that records every request it receives.

Prism (tests/test_twilio_rest_contract.py) says whether a request is one Twilio accepts; this stand-in shows
what exactly went over the wire, and how failures Prism cannot produce (a 503, a dropped connection, no
answer at all) come back: a call create is never retried, and its outcome is marked ambiguous.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from channels.twilio import rest as rest_module
from channels.twilio.rest import FRONT, RestResult, TwilioRest
from gateway.embedded_redis import free_port

ACCOUNT = "AC" + "a" * 32
CONFERENCE = "CF" + "b" * 32
CALL = "CA" + "c" * 32
QUEUE = "QU" + "d" * 32
CUSTOMER = "+15558675310"
OUR_NUMBER = "+15005550006"
TWIML_URL = "https://gateway.example/twilio/voice/agent"
CALLBACK = "https://gateway.example/twilio/voice/status"


class Recorder:
    """Answers like Twilio (or fails as told) and keeps (method, path, fields) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[tuple[str, str]]]] = []
        # "ok", an HTTP status to fail with, "drop" (close the connection) or "hang" (never answer).
        self.answer: str | int = "ok"
        self.message = "Internal error"
        self.release = asyncio.Event()
        self.url = ""

    def fields(self, index: int = -1) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for key, value in self.seen[index][2]:
            grouped.setdefault(key, []).append(value)
        return grouped

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = request.query if request.method == "GET" else await request.post()
        self.seen.append((request.method, request.path, [(k, str(v)) for k, v in form.items()]))
        if self.answer == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if self.answer == "hang":
            await self.release.wait()
        if isinstance(self.answer, int):
            return web.json_response({"code": 20001, "message": self.message, "status": self.answer},
                                     status=self.answer)
        return web.json_response(self.body(request.path), status=201 if request.method == "POST" else 200)

    @staticmethod
    def body(path: str) -> dict[str, Any]:
        fresh = uuid.uuid4().hex
        if path.endswith("/Conferences.json"):
            return {"conferences": [{"sid": CONFERENCE, "status": "in-progress"}], "next_page_uri": None,
                    "page": 0, "page_size": 1, "start": 0, "end": 0}
        if "/Participants" in path or "/Members/" in path:
            return {"call_sid": "CA" + fresh, "account_sid": ACCOUNT}
        if path.endswith("/Messages.json"):
            return {"sid": "SM" + fresh, "account_sid": ACCOUNT}
        return {"sid": "CA" + fresh, "account_sid": ACCOUNT}


@pytest.fixture
async def twilio() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    recorder.url = f"http://127.0.0.1:{port}"
    yield recorder
    recorder.release.set()
    await runner.cleanup()


@pytest.fixture
async def rest(twilio: Recorder) -> AsyncIterator[TwilioRest]:
    client = TwilioRest(ACCOUNT, "token", twilio.url, request_timeout=0.5)
    yield client
    await client.aclose()


def path(tail: str) -> str:
    return f"/2010-04-01/Accounts/{ACCOUNT}/{tail}"


async def test_a_call_create_asks_for_every_progress_event_as_repeated_fields(
    rest: TwilioRest, twilio: Recorder
) -> None:
    result = await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=CALLBACK, timeout_seconds=25,
                                    machine_detection="DetectMessageEnd",
                                    async_amd_status_callback=CALLBACK + "/amd")
    assert result.ok and result.sid is not None and result.sid.startswith("CA")
    assert twilio.seen[0][:2] == ("POST", path("Calls.json"))
    assert twilio.fields() == {
        "To": [CUSTOMER], "From": [OUR_NUMBER], "Url": [TWIML_URL], "StatusCallback": [CALLBACK],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"], "Timeout": ["25"],
        "MachineDetection": ["DetectMessageEnd"], "AsyncAmd": ["true"], "AsyncAmdStatusCallback": [CALLBACK + "/amd"],
    }


async def test_without_a_status_callback_no_events_are_asked_for(rest: TwilioRest, twilio: Recorder) -> None:
    assert (await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=None)).ok
    assert twilio.fields() == {"To": [CUSTOMER], "From": [OUR_NUMBER], "Url": [TWIML_URL]}


async def test_a_participant_is_dialled_into_a_named_room_with_its_label(rest: TwilioRest, twilio: Recorder) -> None:
    result = await rest.create_participant(
        "conv-42", OUR_NUMBER, "+15558675311", label="agent", start_conference_on_enter=True,
        end_conference_on_exit=False, status_callback=CALLBACK, status_callback_events=("ringing", "answered"),
        timeout_seconds=20, early_media=True,
    )
    assert result.ok and result.sid is not None and result.sid.startswith("CA")  # the participant's CallSid
    assert twilio.seen[0][:2] == ("POST", path("Conferences/conv-42/Participants.json"))
    assert twilio.fields() == {
        "From": [OUR_NUMBER], "To": ["+15558675311"], "Label": ["agent"], "StartConferenceOnEnter": ["true"],
        "EndConferenceOnExit": ["false"], "StatusCallback": [CALLBACK],
        "StatusCallbackEvent": ["ringing", "answered"], "Timeout": ["20"], "EarlyMedia": ["true"],
    }


async def test_holding_a_participant_by_label_sends_only_what_changes(rest: TwilioRest, twilio: Recorder) -> None:
    assert (await rest.update_participant(CONFERENCE, "customer", hold=True, hold_url=TWIML_URL + "/hold")).ok
    assert twilio.seen[0][:2] == ("POST", path(f"Conferences/{CONFERENCE}/Participants/customer.json"))
    assert twilio.fields() == {"Hold": ["true"], "HoldUrl": [TWIML_URL + "/hold"]}
    assert (await rest.update_participant(CONFERENCE, CALL, muted=False, end_conference_on_exit=True)).ok
    assert twilio.fields() == {"Muted": ["false"], "EndConferenceOnExit": ["true"]}


async def test_calls_are_redirected_or_ended(rest: TwilioRest, twilio: Recorder) -> None:
    assert (await rest.update_call(CALL, twiml="<Response><Hangup/></Response>")).ok
    assert (await rest.update_call(CALL, status="completed")).ok
    assert [s[1] for s in twilio.seen] == [path(f"Calls/{CALL}.json")] * 2
    assert twilio.fields(0) == {"Twiml": ["<Response><Hangup/></Response>"]}
    assert twilio.fields(1) == {"Status": ["completed"]}


async def test_a_conference_is_found_by_name_among_those_in_progress(rest: TwilioRest, twilio: Recorder) -> None:
    assert await rest.find_conference("conv-42") == RestResult(CONFERENCE)
    assert twilio.seen[0][:2] == ("GET", path("Conferences.json"))
    assert twilio.fields() == {"FriendlyName": ["conv-42"], "Status": ["in-progress"], "PageSize": ["1"]}


async def test_the_caller_at_the_front_is_dequeued_and_a_message_sent(rest: TwilioRest, twilio: Recorder) -> None:
    assert (await rest.update_queue_member(QUEUE, FRONT, TWIML_URL)).ok
    assert twilio.seen[0][1] == path(f"Queues/{QUEUE}/Members/Front.json")
    assert twilio.fields() == {"Url": [TWIML_URL]}
    sent = await rest.send_message(CUSTOMER, OUR_NUMBER, "Hello", status_callback=CALLBACK)
    assert sent.ok and sent.sid is not None and sent.sid.startswith("SM")
    assert twilio.fields() == {"To": [CUSTOMER], "From": [OUR_NUMBER], "Body": ["Hello"], "StatusCallback": [CALLBACK]}


async def test_a_template_goes_with_its_variables_as_json_and_no_body(rest: TwilioRest, twilio: Recorder) -> None:
    template = "HX" + "e" * 32
    sent = await rest.send_template(f"whatsapp:{CUSTOMER}", f"whatsapp:{OUR_NUMBER}", template,
                                    {"1": "Your refund is approved."})
    assert sent.ok and sent.sid is not None and sent.sid.startswith("SM")
    assert twilio.seen[0][:2] == ("POST", path("Messages.json"))
    assert twilio.fields() == {"To": [f"whatsapp:{CUSTOMER}"], "From": [f"whatsapp:{OUR_NUMBER}"],
                               "ContentSid": [template], "ContentVariables": ['{"1": "Your refund is approved."}']}
    assert (await rest.send_template(CUSTOMER, OUR_NUMBER, template, {}, status_callback=CALLBACK)).ok
    assert twilio.fields() == {"To": [CUSTOMER], "From": [OUR_NUMBER], "ContentSid": [template],
                               "ContentVariables": ["{}"], "StatusCallback": [CALLBACK]}


@pytest.mark.parametrize("answer", [503, "drop", "hang"])
async def test_a_call_create_that_may_have_dialled_is_ambiguous_and_never_retried(
    rest: TwilioRest, twilio: Recorder, answer: str | int
) -> None:
    twilio.answer = answer
    result = await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=CALLBACK)
    assert not result.ok
    assert result.ambiguous and not result.retryable
    assert result.status == (503 if answer == 503 else None)
    await asyncio.sleep(0.2)  # room for a retry to arrive, were there one
    assert len(twilio.seen) == 1


async def test_a_participant_create_that_may_have_dialled_is_ambiguous_too(
    rest: TwilioRest, twilio: Recorder
) -> None:
    twilio.answer = "drop"
    result = await rest.create_participant("conv-42", OUR_NUMBER, CUSTOMER, label="customer",
                                           start_conference_on_enter=True, end_conference_on_exit=True,
                                           status_callback=None)
    assert (result.ok, result.ambiguous, result.retryable, len(twilio.seen)) == (False, True, False, 1)


@pytest.mark.parametrize(("answer", "retryable"), [(429, True), (400, False)])
async def test_a_refused_call_create_is_not_ambiguous(
    rest: TwilioRest, twilio: Recorder, answer: int, retryable: bool
) -> None:
    twilio.answer = answer
    result = await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=None)
    assert (result.ok, result.status, result.ambiguous, result.retryable) == (False, answer, False, retryable)
    assert len(twilio.seen) == 1


async def test_a_call_create_that_never_connected_can_be_tried_again() -> None:
    rest = TwilioRest(ACCOUNT, "token", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    try:
        result = await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=None)
    finally:
        await rest.aclose()
    assert (result.ok, result.ambiguous, result.retryable) == (False, False, True)


@pytest.mark.parametrize("answer", [503, "drop"])
async def test_other_requests_that_failed_are_worth_retrying(
    rest: TwilioRest, twilio: Recorder, answer: str | int
) -> None:
    twilio.answer = answer
    results = [await rest.update_call(CALL, status="completed"),
               await rest.update_participant(CONFERENCE, "agent", hold=False),
               await rest.send_message(CUSTOMER, OUR_NUMBER, "Hello"),
               await rest.send_template(CUSTOMER, OUR_NUMBER, "HX" + "e" * 32, {"1": "Hello"})]
    assert [(r.ok, r.retryable, r.ambiguous) for r in results] == [(False, True, False)] * 4


async def test_no_conference_in_progress_is_not_ok_with_twilios_200(rest: TwilioRest, twilio: Recorder) -> None:
    twilio.body = lambda path: {"conferences": [], "next_page_uri": None}  # type: ignore[method-assign]
    assert await rest.find_conference("conv-42") == RestResult(None, "no conference in progress with that name", 200)


@pytest.mark.parametrize("misuse", [
    lambda r: r.update_call(CALL),
    lambda r: r.update_call(CALL, url=TWIML_URL, twiml="<Response/>"),
    lambda r: r.update_call(CALL, status="in-progress"),
    lambda r: r.update_participant(CONFERENCE, "agent"),
    lambda r: r.update_participant(CONFERENCE, "agent", hold=True, end_conference_on_exit=False),
    lambda r: r.update_participant("conv-42", "agent", hold=True),
    lambda r: r.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=None, async_amd_status_callback=CALLBACK),
], ids=["update-nothing", "url-and-twiml", "status-not-an-end", "participant-nothing",
        "end-on-exit-with-hold", "participant-by-room-name", "async-amd-without-detection"])
async def test_misuse_raises_before_anything_is_sent(rest: TwilioRest, twilio: Recorder, misuse: Any) -> None:
    with pytest.raises(ValueError):
        await misuse(rest)
    assert twilio.seen == []


async def test_twilio_region_and_edge_in_the_environment_do_not_move_the_host(
    twilio: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    rest = TwilioRest(ACCOUNT, "token", twilio.url)
    try:
        assert (await rest.update_call(CALL, status="completed")).ok
    finally:
        await rest.aclose()


async def test_phone_numbers_stay_out_of_the_logs(
    rest: TwilioRest, twilio: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs:
        # A fresh logger: the module's may have been cached by the gateway's structlog configuration.
        monkeypatch.setattr(rest_module, "log", structlog.get_logger("channels.twilio.rest"))
        assert (await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=CALLBACK)).ok
        twilio.answer, twilio.message = 400, f"The 'To' number {CUSTOMER} is not a valid phone number."
        refused = await rest.create_call(CUSTOMER, OUR_NUMBER, TWIML_URL, status_callback=CALLBACK)
        await rest.send_message(CUSTOMER, OUR_NUMBER, "Hello")
    assert [e["event"] for e in logs] == ["twilio.rest", "twilio.rest_failed", "twilio.rest_failed"]
    assert refused.error is not None and CUSTOMER in refused.error  # the caller still gets Twilio's reason
    assert not any(number in repr(logs) for number in (CUSTOMER, OUR_NUMBER))
