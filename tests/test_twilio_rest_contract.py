"""Every TwilioRest request, checked by Prism against Twilio's OpenAPI description (tests/prism.py).

Prism answers 422 to a request Twilio would reject and a fixed example otherwise, so these tests assert
that each request was accepted and what kind of sid came back, never the values echoed. One Prism serves
the whole module: it takes seconds to start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from channels.twilio.rest import FRONT, TwilioRest
from gateway.embedded_redis import free_port
from tests import prism

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACCOUNT = "AC" + "a" * 32
CONFERENCE = "CF" + "b" * 32
CALL = "CA" + "c" * 32
QUEUE = "QU" + "d" * 32
CUSTOMER = "+15558675310"
AGENT = "+15558675311"
OUR_NUMBER = "+15005550006"
BASE = "https://gateway.example/twilio/voice"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prism_url() -> AsyncIterator[str]:
    async for url in prism.serve(free_port()):
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def rest(prism_url: str) -> AsyncIterator[TwilioRest]:
    client = TwilioRest(ACCOUNT, "token", prism_url)
    yield client
    await client.aclose()


def has_prefix(sid: str | None, prefix: str) -> bool:
    return sid is not None and sid.startswith(prefix)


async def test_a_call_with_progress_events_and_answering_machine_detection(rest: TwilioRest) -> None:
    result = await rest.create_call(CUSTOMER, OUR_NUMBER, f"{BASE}/outbound", status_callback=f"{BASE}/status",
                                    timeout_seconds=25, machine_detection="Enable",
                                    async_amd_status_callback=f"{BASE}/amd")
    assert result.ok, result
    assert has_prefix(result.sid, "CA")


async def test_a_call_twilio_would_refuse_is_not_ok_and_not_worth_retrying(rest: TwilioRest) -> None:
    result = await rest.create_call(CUSTOMER, OUR_NUMBER, "/twilio/voice/outbound", status_callback=None)
    assert (result.ok, result.status, result.retryable, result.ambiguous) == (False, 422, False, False)


async def test_a_live_call_is_redirected_or_ended(rest: TwilioRest) -> None:
    for change in ({"url": f"{BASE}/back-to-bot"}, {"twiml": "<Response><Hangup/></Response>"},
                   {"status": "completed"}, {"status": "canceled"}):
        result = await rest.update_call(CALL, **change)
        assert result.ok, (change, result)
        assert has_prefix(result.sid, "CA")


async def test_finding_a_conference_asks_for_rooms_in_progress(rest: TwilioRest) -> None:
    # Prism's first example is the empty page: Twilio accepted the query and found no such room.
    result = await rest.find_conference("conv-42")
    assert (result.ok, result.status, result.retryable) == (False, 200, False)


async def test_a_conference_in_progress_is_found_by_name(rest: TwilioRest) -> None:
    # Prism's "readNext" example lists conferences; the header is Prism's own way to choose an example.
    await rest._http.session.close()
    rest._http.session = aiohttp.ClientSession(headers={"Prefer": "example=readNext"})
    result = await rest.find_conference("conv-42")
    assert result.ok, result
    assert has_prefix(result.sid, "CF")


async def test_participants_are_dialled_into_a_room_by_name_or_sid(rest: TwilioRest) -> None:
    for conference in ("conv-42", CONFERENCE):
        result = await rest.create_participant(
            conference, OUR_NUMBER, AGENT, label="agent", start_conference_on_enter=True,
            end_conference_on_exit=False, status_callback=f"{BASE}/participant",
            status_callback_events=("initiated", "ringing", "answered", "completed"), timeout_seconds=20,
            early_media=True,
        )
        assert result.ok, (conference, result)
        assert has_prefix(result.sid, "CA")


async def test_a_participant_is_held_muted_and_briefed_by_label_or_call_sid(rest: TwilioRest) -> None:
    for participant, change in (
        ("customer", {"end_conference_on_exit": False}),
        ("customer", {"hold": True, "hold_url": f"{BASE}/hold"}),
        (CALL, {"muted": True}),
        ("agent", {"announce_url": f"{BASE}/announce"}),
        ("customer", {"hold": False}),
    ):
        result = await rest.update_participant(CONFERENCE, participant, **change)
        assert result.ok, (participant, change, result)
        assert has_prefix(result.sid, "CA")


async def test_a_queued_caller_is_dequeued_by_call_sid_or_from_the_front(rest: TwilioRest) -> None:
    for member in (CALL, FRONT):
        result = await rest.update_queue_member(QUEUE, member, f"{BASE}/bridge")
        assert result.ok, (member, result)
        assert has_prefix(result.sid, "CA")


async def test_sms_and_whatsapp_messages(rest: TwilioRest) -> None:
    for to, from_ in ((CUSTOMER, OUR_NUMBER), (f"whatsapp:{CUSTOMER}", f"whatsapp:{OUR_NUMBER}")):
        result = await rest.send_message(to, from_, "Hello", status_callback="https://gateway.example/s")
        assert result.ok, result
        assert has_prefix(result.sid, "SM")


async def test_whatsapp_and_sms_templates(rest: TwilioRest) -> None:
    for to, from_ in ((f"whatsapp:{CUSTOMER}", f"whatsapp:{OUR_NUMBER}"), (CUSTOMER, OUR_NUMBER)):
        result = await rest.send_template(to, from_, "HX" + "e" * 32, {"1": "Your refund is approved."},
                                          status_callback="https://gateway.example/s")
        assert result.ok, result
        assert has_prefix(result.sid, "SM")
