"""Inbound SMS and WhatsApp webhooks, signed exactly as Twilio signs them, against a real gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from channels.twilio.webhooks import TwilioWebhooks
from channels.twilio_messaging.outbound import OutboundConfig, TwilioSender
from channels.twilio_messaging.rules import keyword, split_message
from gateway.embedded_redis import free_port
from handoff.agents import AgentStore
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.test_desk import AgentClient

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://gateway.example.test"  # Twilio calls this; a proxy forwards to the gateway
ACCOUNT = "AC" + "1" * 32
FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def sms_form(body: str, sender: str = "+14155550123", **extra: str) -> dict[str, str]:
    """Every field Twilio posts for an inbound SMS, including those the gateway ignores."""
    sid = "SM" + uuid.uuid4().hex
    return {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "SAN FRANCISCO",
        "FromZip": "94105", "SmsSid": sid, "FromState": "CA", "SmsStatus": "received", "FromCity": "SAN FRANCISCO",
        "Body": body, "FromCountry": "US", "To": "+14155550100", "ToZip": "94105", "NumSegments": "1",
        "ReferralNumMedia": "0", "MessageSid": sid, "AccountSid": ACCOUNT, "From": sender, "ApiVersion": "2010-04-01",
        **extra,
    }


async def post(http: aiohttp.ClientSession, base: str, form: dict[str, str], signature: str | None = "sign"):
    headers = {}
    if signature == "sign":
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            f"{PUBLIC}/twilio/messaging", form)
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with http.post(f"{base}/twilio/messaging", data=form, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def start(start_gateway: Any) -> str:
    # Nothing here sends through the REST API (replies travel in TwiML), so its address is a closed port.
    return str(await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                                   twilio_account_sid=ACCOUNT, twilio_sms_from="+14155550100",
                                   twilio_api_base_url=f"http://127.0.0.1:{free_port()}"))


async def test_a_signed_sms_is_answered_in_twiml_and_a_retry_is_stored_once(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    form = sms_form("where is my order #12345")
    status, content_type, body = await post(http, base, form)
    assert status == 200 and content_type.startswith("application/xml")
    assert "<Response><Message>" in body and "Account &gt; Orders" in body

    status, _, retried = await post(http, base, form)  # Twilio retries the same MessageSid
    assert status == 200 and retried.endswith("<Response />")
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    transcript = await store.transcript(cid)
    assert [m.sender.value for m in transcript] == ["customer", "bot"]
    conversation = await store.get(cid)
    assert conversation.channel == "sms" and conversation.customer.identities[0].address == "+14155550123"


@pytest.mark.parametrize("public", [PUBLIC, PUBLIC + "/", "http://gateway.example.test:8080"])
def test_the_signature_check_computes_what_twilios_validator_computes(public: str) -> None:
    """The check's own HMAC (PUBLIC_URL hashed in once) signs exactly what RequestValidator signs: repeated
    fields, values out of order, repeated pairs, names differing in case, text beyond ASCII."""
    webhooks = TwilioWebhooks(public, AUTH_TOKEN)
    validator = RequestValidator(AUTH_TOKEN)
    raw_path = "/twilio/voice/turn?c=" + "a" * 32 + "&n=7&s=%20x"
    forms = [
        sms_form("hello"), {}, {"Body": "Grüße, 東京 👋", "From": "+4930123"},
        MultiDictProxy(MultiDict([("MediaUrl", "b"), ("a", "2"), ("MediaUrl", "a"), ("a", "2"), ("A", "z")])),
    ]
    for form in forms:
        expected = validator.compute_signature(public.rstrip("/") + raw_path, form)
        assert webhooks._signature(raw_path, form) == expected


async def test_bad_or_missing_signatures_are_refused_and_store_nothing(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    form = sms_form("hello")
    for signature in (None, "bm90IGEgc2lnbmF0dXJl"):
        status, _, body = await post(http, base, form, signature)
        assert status == 403 and "invalid_signature" in body
    tampered = dict(form)
    headers = {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
        f"{PUBLIC}/twilio/messaging", form)}
    tampered["Body"] = "something else"
    async with http.post(f"{base}/twilio/messaging", data=tampered, headers=headers) as response:
        assert response.status == 403
    assert await ConversationStore(redis, Keys(namespace), 60).recent() == []


async def test_a_whatsapp_photo_without_text_is_kept_with_the_profile_name(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    form = sms_form("", sender="whatsapp:+34612345678", To="whatsapp:+14155550100", NumMedia="1",
                    MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
                    MediaContentType0="image/jpeg", ProfileName="Lucía", WaId="34612345678")
    form["MessageSid"] = form["SmsMessageSid"] = "MM" + uuid.uuid4().hex
    status, _, _ = await post(http, base, form)
    assert status == 200
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    conversation = await store.get(cid)
    first = (await store.transcript(cid))[0]
    assert conversation.channel == "whatsapp" and conversation.customer.name == "Lucía"
    assert first.attachments[0].content_type == "image/jpeg" and first.text == ""
    assert first.channel_metadata == {"profile_name": "Lucía", "wa_id": "34612345678"}


async def test_malformed_webhooks_get_a_clear_error(start_gateway: Any, http: aiohttp.ClientSession) -> None:
    base = await start(start_gateway)
    for content_type in ("application/x-www-form-urlencoded; charset=bogus", "multipart/form-data"):
        async with http.post(f"{base}/twilio/messaging", data=b"Body=hi",
                             headers={"Content-Type": content_type}) as response:
            assert response.status == 400 and (await response.json())["code"] == "invalid_form"
    status, _, body = await post(http, base, sms_form("hi", sender="not-a-number"))
    assert status == 400 and "invalid_number" in body
    empty = sms_form("")
    status, _, body = await post(http, base, empty)
    assert status == 400 and "empty_message" in body


async def test_a_handoff_by_sms_is_worded_for_messaging(start_gateway: Any, http: aiohttp.ClientSession) -> None:
    base = await start(start_gateway)
    status, _, body = await post(http, base, sms_form("I want to dispute a charge on my card"))
    assert status == 200 and "A person will reply to this number" in body


async def test_without_twilio_settings_the_webhook_is_refused(gateway: str, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, gateway, sms_form("hello"))
    assert status == 403 and "twilio_not_configured" in body


class TwilioStandIn:
    """A local stand-in for Twilio's Messages API that records what the gateway sends it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.refuse: tuple[int, int, str] | None = None  # (HTTP status, Twilio code, message)
        self.url = ""
        self.sids: list[str] = []
        self.fail_once_after: int | None = None  # answer 500 once, after this many messages went through
        self.drop_next = False  # close the connection, unanswered, on the next request
        self.hang_next = False  # answer the next request only after a second
        self.problem_details = False  # refuse in RFC 9457 form (type, title, status, code), as newer APIs do

    async def messages(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.sent.append({"path": request.path, **form})
        if self.drop_next:
            self.drop_next = False
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if self.hang_next:
            self.hang_next = False
            await asyncio.sleep(1)
        if self.refuse is not None:
            status, code, message = self.refuse
            if self.problem_details:
                problem = {"type": f"https://www.twilio.com/docs/errors/{code}", "title": message,
                           "status": status, "code": code}
                return web.json_response(problem, status=status, content_type="application/problem+json")
            return web.json_response({"code": code, "message": message, "status": status}, status=status)
        if self.fail_once_after is not None and len(self.sids) >= self.fail_once_after:
            self.fail_once_after = None
            self.sent.pop()
            return web.json_response({"code": 20500, "message": "Internal error", "status": 500}, status=500)
        sid = "SM" + uuid.uuid4().hex
        self.sids.append(sid)
        return web.json_response({"sid": sid, "status": "queued", "to": form["To"],
                                  "from": form["From"], "body": form.get("Body", ""), "account_sid": ACCOUNT},
                                 status=201)


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioStandIn]:
    stand_in = TwilioStandIn()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", stand_in.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stand_in.url = f"http://127.0.0.1:{port}"
    yield stand_in
    await runner.cleanup()


async def with_agent(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn,
    first_words: str, sender: str = "+14155550123", **settings: Any,
) -> tuple[str, str, AgentClient]:
    """A gateway pointed at the stand-in, a customer handed off by text, and the agent who claimed it."""
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                               twilio_account_sid=ACCOUNT, twilio_api_base_url=twilio_api.url,
                               twilio_sms_from="+14155550100", twilio_whatsapp_from="+14155550199", **settings)
    form = sms_form(first_words, sender=sender)
    if sender.startswith("whatsapp:"):
        form["To"] = "whatsapp:+14155550199"
    await post(http, base, form)
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    agent = AgentClient(http, base, token)
    await agent.online()
    for _ in range(100):
        if (await agent.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200:
            break
        await asyncio.sleep(0.05)
    return base, cid, agent


async def test_a_slow_bot_does_not_hold_the_webhook_its_answer_goes_by_rest(
    start_gateway: Any, bot_server: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str,
    twilio_api: TwilioStandIn,
) -> None:
    async def slow_bot(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.json_response({"text": "Your order left our warehouse today.", "intent": "order_status",
                                  "confidence": 0.95})

    base = await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                               twilio_account_sid=ACCOUNT, twilio_api_base_url=twilio_api.url,
                               twilio_sms_from="+14155550100", twilio_reply_budget_seconds=0.2,
                               bot="http", bot_http_url=await bot_server(slow_bot))
    started = asyncio.get_running_loop().time()
    status, _, body = await post(http, base, sms_form("where is my order", sender="+14155550182"))
    answered_in = asyncio.get_running_loop().time() - started
    assert status == 200 and body.endswith("<Response />") and answered_in < 0.55  # not held for the bot

    for _ in range(50):
        if twilio_api.sent:
            break
        await asyncio.sleep(0.05)
    [sent] = twilio_api.sent
    assert sent["Body"] == "Your order left our warehouse today." and sent["To"] == "+14155550182"
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    assert "delivery.sent" in [e.type for e in await store.events(cid)]


async def test_an_agent_reply_by_sms_goes_through_twilios_rest_api(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card")
    status, _ = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Hi, Alex here."})
    assert status == 201
    reply = next(m for m in twilio_api.sent if m["Body"] == "Hi, Alex here.")
    assert reply["To"] == "+14155550123" and reply["From"] == "+14155550100"
    assert reply["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    store = ConversationStore(redis, Keys(namespace), 60)
    assert "delivery.sent" in [e.type for e in await store.events(cid)]
    # The number's key lives on with what is sent to it: twice the conversation's lifetime (7 days).
    number_key = f"{Keys(namespace).identity('sms', '+14155550123')}:conversation"
    await redis.expire(number_key, 60)
    await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Still with you."})
    assert await redis.ttl(number_key) > 13 * 24 * 3600

    twilio_api.refuse = (400, 21610, "Attempt to send to unsubscribed recipient")
    await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Are you still there?"})
    failed = [e for e in await store.events(cid) if e.type == "delivery.failed"]
    assert failed and "unsubscribed recipient" in failed[-1].data["detail"] and failed[-1].data["status"] == 400


@pytest.mark.parametrize(("variable", "value"), [("TWILIO_REGION", "au1"), ("TWILIO_EDGE", "sydney")])
async def test_twilio_region_or_edge_in_the_environment_does_not_move_an_agents_reply(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn,
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
) -> None:
    # The twilio package reads these whenever its Client is given no environment of its own, and would then
    # rewrite TWILIO_API_BASE_URL's host (127.0.0.1 becomes 127.au1.0.1): the reply would never arrive.
    monkeypatch.setenv(variable, value)
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card")
    _, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Hi, Alex here."})
    assert [m["To"] for m in twilio_api.sent if m.get("Body") == "Hi, Alex here."] == ["+14155550123"]
    store = ConversationStore(redis, Keys(namespace), 60)
    outcome = [e.type for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]
    assert outcome == ["delivery.sent"]


async def test_a_dropped_connection_is_retried_not_failed(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    # aiohttp's ServerDisconnectedError is no OSError: it must still count as Twilio being unreachable.
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card")
    store = ConversationStore(redis, Keys(namespace), 60)
    twilio_api.drop_next = True
    _, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Checking your charge now."})

    async def outcomes() -> list[str]:
        return [e.type for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]

    assert await outcomes() == ["delivery.retrying"]
    for _ in range(200):  # the gateway's own sweeper runs the durable retry when it is due (2 s)
        if "delivery.sent" in await outcomes():
            break
        await asyncio.sleep(0.05)
    assert await outcomes() == ["delivery.retrying", "delivery.sent"]
    assert [m["Body"] for m in twilio_api.sent].count("Checking your charge now.") == 2


async def test_a_refusal_in_problem_details_form_is_classified_like_any_other(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    # The twilio package raises TwilioServiceException, no TwilioRestException, for an RFC 9457 answer.
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card")
    store = ConversationStore(redis, Keys(namespace), 60)
    twilio_api.problem_details = True

    async def outcome(refusal: tuple[int, int, str]) -> tuple[str, dict[str, Any]]:
        twilio_api.refuse = refusal
        _, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Checking now."})
        [event] = [e for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]
        return event.type, event.data

    kind, data = await outcome((503, 20503, "Service Unavailable"))
    assert kind == "delivery.retrying" and data["status"] == 503
    kind, data = await outcome((400, 21610, "Attempt to send to unsubscribed recipient"))
    assert kind == "delivery.failed" and data["status"] == 400 and "unsubscribed recipient" in data["detail"]


async def test_a_send_twilio_never_answers_gives_up_in_time_and_is_retryable(twilio_api: TwilioStandIn) -> None:
    sender = TwilioSender(OutboundConfig(ACCOUNT, AUTH_TOKEN, twilio_api.url, "+14155550100", None,
                                         request_timeout=0.3))
    twilio_api.hang_next = True
    try:
        result = await asyncio.wait_for(sender.send("sms", "+14155550123", "Hello?"), 0.9)
    finally:
        await sender.aclose()
    assert (result.ok, result.retryable) == (False, True)


async def test_stop_opts_a_number_out_until_start_and_help_answers(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    base, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                        "I want to dispute a charge on my card")
    status, _, body = await post(http, base, sms_form("HELP"))
    assert "Reply STOP to opt out" in body
    status, _, body = await post(http, base, sms_form("please stop sending me ads"))  # not a keyword
    assert status == 200
    photo = sms_form(" Stop ", NumMedia="1", MediaUrl0="https://api.twilio.com/m.jpg", MediaContentType0="image/jpeg")
    status, _, body = await post(http, base, photo)  # a keyword with a photo is still the keyword
    assert status == 200 and body.endswith("<Response />")
    sent_before = len(twilio_api.sent)

    status, _ = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Hello?"})
    assert status == 201
    assert len(twilio_api.sent) == sent_before  # nothing went out
    store = ConversationStore(redis, Keys(namespace), 60)
    failed = [e for e in await store.events(cid) if e.type == "delivery.failed"]
    assert failed[-1].data["reason"] == "opted_out" and "texted STOP" in failed[-1].data["detail"]
    transcript = [m.text for m in await store.transcript(cid)]
    assert " Stop " in transcript  # the agent sees what the customer sent

    status, _, body = await post(http, base, sms_form("HELP"))  # opted out: not even the help text
    assert status == 200 and body.endswith("<Response />")

    await post(http, base, sms_form("START"))
    await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Welcome back."})
    assert twilio_api.sent[-1]["Body"] == "Welcome back."
    status, _, body = await post(http, base, sms_form("HELP"))
    assert "Reply STOP to opt out" in body


async def test_an_opted_out_number_gets_no_bot_answer_in_a_new_conversation_either(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    number = "+14155550179"
    status, _, body = await post(http, base, sms_form("where is my order", sender=number))
    assert "Account &gt; Orders" in body
    await post(http, base, sms_form("STOP", sender=number))
    status, _, body = await post(http, base, sms_form("where is my order", sender=number))
    assert status == 200 and body.endswith("<Response />")  # stored for the agents, never answered

    store, keys = ConversationStore(redis, Keys(namespace), 60), Keys(namespace)
    [old] = await store.recent()
    await redis.delete(keys.conversation(old), keys.transcript(old))  # as if it had expired
    status, _, body = await post(http, base, sms_form("how much is shipping", sender=number))
    assert status == 200 and body.endswith("<Response />")
    newest = (await store.recent(1))[0]
    assert newest != old

    await post(http, base, sms_form("START", sender=number))
    status, _, body = await post(http, base, sms_form("how much is shipping", sender=number))
    assert "shipping" in body.lower()


async def test_an_opt_out_made_elsewhere_is_honoured_at_once(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """STOP handled by another instance (which this one's memory of the number knows nothing about): the
    very next text gets no answer here either."""
    base = await start(start_gateway)
    number = "+14155550183"
    status, _, body = await post(http, base, sms_form("where is my order", sender=number))
    assert "Account &gt; Orders" in body
    await redis.set(f"{Keys(namespace).identity('sms', number)}:opted-out", "2026-11-26T10:00:00+00:00")
    status, _, body = await post(http, base, sms_form("where is my order", sender=number))
    assert status == 200 and body.endswith("<Response />")


async def test_every_delivery_of_a_stop_applies_it_twilios_retries_included(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """If the first delivery of a STOP was stored but its opt-out did not stick (the process died right
    after, say), Twilio's retry of that same message still opts the number out."""
    base = await start(start_gateway)
    number = "+14155550185"
    await post(http, base, sms_form("hi", sender=number))
    stop = sms_form("STOP", sender=number)
    await post(http, base, stop)
    opted_out_key = f"{Keys(namespace).identity('sms', number)}:opted-out"
    assert await redis.exists(opted_out_key)
    await redis.delete(opted_out_key)  # as if it had been lost

    status, _, body = await post(http, base, stop)  # Twilio retries the same MessageSid
    assert status == 200 and body.endswith("<Response />")
    assert await redis.exists(opted_out_key)
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    assert [m.text for m in await store.transcript(cid)].count("STOP") == 1  # still stored once
    status, _, body = await post(http, base, sms_form("where is my order", sender=number))
    assert body.endswith("<Response />")


async def test_texts_arriving_together_after_the_conversation_expired_open_one_new_one(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    number = "+14155550184"
    await post(http, base, sms_form("hi", sender=number))
    store, keys = ConversationStore(redis, Keys(namespace), 60), Keys(namespace)
    [old] = await store.recent()
    await redis.delete(keys.conversation(old), keys.transcript(old))  # as if it had expired
    texts = ["where is my order", "how much is shipping", "thanks", "can I return an item"]
    results = await asyncio.gather(*(post(http, base, sms_form(t, sender=number)) for t in texts))
    assert all(status == 200 for status, _, _ in results)
    ids = await store.recent()
    assert len(ids) == 2 and old in ids  # the expired one (still indexed) and exactly one new one
    [new] = [cid for cid in ids if cid != old]
    assert sorted(m.text for m in await store.transcript(new) if m.sender.value == "customer") == sorted(texts)


async def test_whatsapp_outside_the_24_hour_window_uses_the_template_or_refuses(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card", sender="whatsapp:+34612345678")
    store = ConversationStore(redis, Keys(namespace), 60)
    await redis.hset(Keys(namespace).conversation(cid), "last_inbound_at",
                     (datetime.now(UTC) - timedelta(hours=25)).isoformat())
    await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Any news?"})
    assert not [m for m in twilio_api.sent if m.get("Body") == "Any news?"]
    failed = [e for e in await store.events(cid) if e.type == "delivery.failed"]
    assert failed[-1].data["reason"] == "outside_whatsapp_window"


async def test_whatsapp_template_goes_without_body(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    template = "HX" + "a" * 32
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card", sender="whatsapp:+34612345678",
                                     twilio_whatsapp_template_sid=template)
    await redis.hset(Keys(namespace).conversation(cid), "last_inbound_at",
                     (datetime.now(UTC) - timedelta(hours=25)).isoformat())
    await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Your refund was approved."})
    sent = twilio_api.sent[-1]
    assert sent["ContentSid"] == template and "Body" not in sent
    assert json.loads(sent["ContentVariables"]) == {"1": "Your refund was approved."}
    assert sent["To"] == "whatsapp:+34612345678" and sent["From"] == "whatsapp:+14155550199"


def test_long_replies_split_at_sentence_ends_below_twilios_limit() -> None:
    sentence = "This sentence is exactly fifty characters long ok. "
    text = sentence * 70  # 3,500 characters
    parts = split_message(text)
    assert all(len(p) <= 1600 for p in parts) and len(parts) == 3
    assert all(p.endswith("ok.") for p in parts)
    assert " ".join(parts) == text.strip()
    assert split_message("x" * 3300) == ["x" * 1600, "x" * 1600, "x" * 100]
    assert keyword("stop") == "STOP" and keyword("stop it please") is None and keyword("Info.") == "INFO"


async def test_a_twilio_500_is_retried_until_it_goes_through_and_status_reports_are_recorded(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    base, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                        "I want to dispute a charge on my card")
    store = ConversationStore(redis, Keys(namespace), 60)
    twilio_api.refuse = (500, 20500, "Internal Server Error")
    _, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Checking your charge now."})

    async def outcomes() -> list[str]:
        return [e.type for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]

    assert await outcomes() == ["delivery.retrying"]
    twilio_api.refuse = None
    for _ in range(200):  # the gateway's own sweeper runs the durable retry when it is due (2 s)
        if "delivery.sent" in await outcomes():
            break
        await asyncio.sleep(0.05)
    assert await outcomes() == ["delivery.retrying", "delivery.sent"]
    assert [m["Body"] for m in twilio_api.sent].count("Checking your charge now.") == 2

    # Twilio's delivery report for that message, as Twilio posts it (twice: it retries too).
    report = {"MessageSid": twilio_api.sids[-1], "MessageStatus": "undelivered", "ErrorCode": "30003",
              "AccountSid": ACCOUNT, "From": "+14155550100", "To": "+14155550123", "ApiVersion": "2010-04-01",
              "SmsSid": twilio_api.sids[-1], "SmsStatus": "undelivered"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/twilio/messaging/status", report)
    for _ in range(2):
        async with http.post(f"{base}/twilio/messaging/status", data=report,
                             headers={"X-Twilio-Signature": signature}) as response:
            assert response.status == 204
    async with http.post(f"{base}/twilio/messaging/status", data=report,
                         headers={"X-Twilio-Signature": "forged"}) as response:
        assert response.status == 403
    events = await store.events(cid)
    statuses = [e for e in events if e.type == "delivery.status"]
    assert len(statuses) == 1 and statuses[0].data["status"] == "undelivered"
    assert statuses[0].data["error_code"] == "30003"
    assert [e for e in events if e.type == "delivery.failed"][-1].data["reason"] == "undelivered"
    _, shown = await agent.call("GET", f"/api/conversations/{cid}")  # what the agent sees on the message
    marked = next(m for m in shown["context"]["transcript"] if m["id"] == sent["id"])
    assert marked["delivery"]["status"] == "failed" and "undelivered" in marked["delivery"]["detail"]


async def test_sms_and_whatsapp_from_one_number_are_one_customer_when_linked(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                               twilio_account_sid=ACCOUNT, twilio_sms_from="+14155550100",
                               twilio_api_base_url=f"http://127.0.0.1:{free_port()}", link_sms_and_whatsapp=True)
    await post(http, base, sms_form("where is my order", sender="+34612345678"))
    whatsapp = sms_form("and shipping?", sender="whatsapp:+34612345678", To="whatsapp:+14155550100")
    await post(http, base, whatsapp)
    store = ConversationStore(redis, Keys(namespace), 60)
    conversations = [await store.get(cid) for cid in await store.recent()]
    assert sorted(c.channel for c in conversations) == ["sms", "whatsapp"]
    assert len({c.customer.id for c in conversations}) == 1


async def test_texts_arriving_together_from_a_new_number_open_one_conversation(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    forms = [sms_form(text, sender="+14155550177") for text in ("hi", "where is my order", "thanks", "hello")]
    results = await asyncio.gather(*(post(http, base, form) for form in forms))
    assert all(status == 200 for status, _, _ in results)
    store = ConversationStore(redis, Keys(namespace), 60)
    conversations = await store.recent()
    assert len(conversations) == 1
    transcript = await store.transcript(conversations[0])
    assert sorted(m.text for m in transcript if m.sender.value == "customer") == sorted(f["Body"] for f in forms)


async def test_a_number_whose_conversation_expired_starts_a_new_one(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start(start_gateway)
    await post(http, base, sms_form("hi", sender="+14155550178"))
    store = ConversationStore(redis, Keys(namespace), 60)
    [old] = await store.recent()
    keys = Keys(namespace)
    await redis.delete(keys.conversation(old), keys.transcript(old))  # as if it had expired
    status, _, body = await post(http, base, sms_form("where is my order", sender="+14155550178"))
    assert status == 200 and "Account &gt; Orders" in body
    newest = (await store.recent(1))[0]
    assert newest != old and (await store.get(newest)).channel == "sms"


async def test_an_instance_follows_a_number_to_the_conversation_another_instance_opened(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """Each instance remembers which conversation a number writes to; once that one has expired and another
    instance has opened the next, the first writes to that one too, rather than opening a third."""
    first, second = await start(start_gateway), await start(start_gateway)
    number = "+14155550181"
    await post(http, first, sms_form("hi", sender=number))
    store, keys = ConversationStore(redis, Keys(namespace), 60), Keys(namespace)
    [old] = await store.recent()
    await redis.delete(keys.conversation(old), keys.transcript(old))  # as if it had expired
    await post(http, second, sms_form("where is my order", sender=number))
    status, _, body = await post(http, first, sms_form("how much is shipping", sender=number))
    assert status == 200 and "shipping" in body.lower()

    ids = await store.recent()
    assert len(ids) == 2 and old in ids  # the expired one (still indexed) and exactly one new one
    [new] = [cid for cid in ids if cid != old]
    texts = [m.text for m in await store.transcript(new) if m.sender.value == "customer"]
    assert texts == ["where is my order", "how much is shipping"]


async def test_a_customer_waiting_by_sms_gets_one_text_about_the_queue_not_a_stream(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                               twilio_account_sid=ACCOUNT, twilio_api_base_url=twilio_api.url,
                               twilio_sms_from="+14155550100")
    _, _, body = await post(http, base, sms_form("I want to dispute a charge on my card"))
    assert "A person will reply to this number" in body
    for _ in range(100):  # the desk's next round tells the customer where they stand, by text
        if twilio_api.sent:
            break
        await asyncio.sleep(0.05)
    assert len(twilio_api.sent) == 1
    assert "Nobody from the team is free right now" in twilio_api.sent[0]["Body"]  # nobody online: no ETA
    await asyncio.sleep(2.5)  # another round: nothing changed, nothing more is texted
    assert len(twilio_api.sent) == 1


async def test_a_long_reply_interrupted_by_a_twilio_error_goes_out_whole_and_in_order(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, twilio_api: TwilioStandIn
) -> None:
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, twilio_api,
                                     "I want to dispute a charge on my card")
    before = len(twilio_api.sids)
    sentences = [f"Part {n} of the explanation is here and it is quite long, on purpose." for n in range(50)]
    twilio_api.fail_once_after = before + 1  # the first part goes through, the second gets a 500
    status, _ = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": " ".join(sentences)})
    assert status == 201
    whole = " ".join(sentences)

    def parts() -> list[str]:
        return [m.get("Body", "") for m in twilio_api.sent if m.get("Body", "").startswith("Part ")]

    for _ in range(200):  # the second part waits for the durable retry (2 s)
        if " ".join(parts()) == whole:
            break
        await asyncio.sleep(0.05)
    assert all(len(p) <= 1600 for p in parts()) and " ".join(parts()) == whole
    assert len(parts()) == 3
