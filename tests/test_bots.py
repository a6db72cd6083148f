"""Both shipped bots: the FAQ bot on the demo knowledge base, and the HTTP connector against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rapidfuzz import process

from gateway.bots.faq import FaqBot, KnowledgeBaseError, _score, load_knowledge_base, normalize
from gateway.bots.http import HttpBot
from gateway.settings import DEMO_KNOWLEDGE_BASE
from sessions.models import Conversation, Customer, Direction, Message, SenderKind
from tests.chat import connect

CONVERSATION = Conversation(id="c" * 32, channel="webchat",
                            customer=Customer(id="cu", tier="gold", verified_fields=["tier"], name="Max"))


def says(text: str) -> Message:
    return Message(id="1-0", conversation_id=CONVERSATION.id, direction=Direction.INBOUND,
                   sender=SenderKind.CUSTOMER, text=text, channel="webchat")


@pytest.fixture(scope="module")
def faq() -> FaqBot:
    return FaqBot.from_file(DEMO_KNOWLEDGE_BASE)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Where is my order?", "order_status"),
        ("can I pay with PayPal", "payment_methods"),
        ("I was charged twice!!", "billing_charge_question"),
        ("i forgot my password", "account_password"),
        ("how long does shipping take", "shipping_times"),
        ("I'd like to talk to a real person", "human_request"),
        ("when do I get my money back", "refund_status"),
    ],
)
async def test_faq_bot_answers_the_demo_questions(faq: FaqBot, text: str, intent: str) -> None:
    turn = await faq.respond(CONVERSATION, says(text))
    assert turn.intent == intent and not turn.fallback
    assert turn.confidence >= faq.kb.min_confidence and turn.text


@pytest.mark.parametrize("text", ["my", "is it", "qwxz plorf", "what's the weather on mars"])
async def test_faq_bot_falls_back_when_unsure(faq: FaqBot, text: str) -> None:
    turn = await faq.respond(CONVERSATION, says(text))
    assert turn.fallback and turn.text == faq.kb.fallback and not turn.resolved
    assert turn.confidence < faq.kb.min_confidence


async def test_faq_bot_collects_fields_and_names_articles(faq: FaqBot) -> None:
    turn = await faq.respond(CONVERSATION, says("where is my order #4815162"))
    assert turn.fields == {"order_number": "4815162"} and turn.articles == ["KB-101"]


def test_faq_bot_classifies_as_extract_one_with_its_scorer(faq: FaqBot) -> None:
    """classify() scores in C; it must pick what rapidfuzz's extractOne picks with ``_score`` (ties and all)."""
    words = [*sorted({w for choice in faq._choices for w in choice.split()}), "parcel", "xq", "refnud"]
    texts = [" ".join(words[(i * 7 + k * 13) % len(words)] for k in range(1 + i % 6)) for i in range(600)]
    texts += [*faq._choices, "a", "qqqqqqqqqqqqqqqqq", "my parcel never came and I am upset", "Thank you."]
    for text in texts:
        query = normalize(text)
        intent, confidence = faq.classify(text)
        if not query:
            assert (intent, confidence) == (None, 0.0)
            continue
        best = process.extractOne(query, faq._choices, scorer=_score, processor=None)
        assert best is not None
        assert (intent, confidence) == (faq._intent_of[best[2]], round(best[1] / 100, 3)), text


def test_broken_knowledge_base_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text("version: '1'\nfallback: sorry\nintents:\n  - id: x\n    family: y\n    examples: []\n"
                    "    answer: z\n")
    with pytest.raises(KnowledgeBaseError, match=r"intents\.0\.examples"):
        load_knowledge_base(path)


BotHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def test_http_bot_sends_the_turn_and_uses_the_reply(bot_server: Any) -> None:
    received: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append({"body": await request.json(), "auth": request.headers.get("Authorization")})
        return web.json_response({"text": "Your refund is on its way.", "intent": "refund_status",
                                  "confidence": 0.92, "resolved": True, "articles": ["KB-9"],
                                  "fields": {"order_number": "123"}, "extra": "ignored"})

    bot = HttpBot(await bot_server(handler), 2.0, "fallback", token="t0k")
    try:
        turn = await bot.respond(CONVERSATION, says("refund?"))
    finally:
        await bot.aclose()
    assert turn.text == "Your refund is on its way." and turn.intent == "refund_status"
    assert turn.resolved and turn.articles == ["KB-9"] and not turn.fallback
    body = received[0]["body"]
    assert received[0]["auth"] == "Bearer t0k"
    assert body["message"]["text"] == "refund?" and body["conversation"]["id"] == CONVERSATION.id
    assert body["customer"]["verified"] == {"tier": "gold"} and body["customer"]["claimed"] == {"name": "Max"}


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.json_response({"text": "too late"})


async def _server_error(request: web.Request) -> web.Response:
    return web.json_response({"error": "boom"}, status=500)


async def _not_json(request: web.Request) -> web.Response:
    return web.Response(text="<html>oops</html>")


async def _missing_text(request: web.Request) -> web.Response:
    return web.json_response({"intent": "x"})


@pytest.mark.parametrize("handler", [_slow, _server_error, _not_json, _missing_text])
async def test_http_bot_failures_become_the_fallback_reply(bot_server: Any, handler: BotHandler) -> None:
    bot = HttpBot(await bot_server(handler), 0.3, "Please try again shortly.")
    try:
        turn = await bot.respond(CONVERSATION, says("hi"))
    finally:
        await bot.aclose()
    assert turn.fallback and turn.text == "Please try again shortly."


async def test_gateway_with_http_bot_end_to_end(
    bot_server: Any, start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"text": "echo: " + body["message"]["text"], "confidence": 0.9})

    base = await start_gateway(bot="http", bot_http_url=await bot_server(echo))
    chat = await connect(http, base)
    assert (await chat.say("ping"))["text"] == "echo: ping"
    assert json.dumps(chat.session)  # the session frame is plain JSON
