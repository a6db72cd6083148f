"""The context package: what an agent needs to act at once, structured summary first, transcript below.

The summary is built deterministically from the bot's turns and the handoff decision, so it needs no
network and says the same thing every time; a team can plug in its own Summarizer (an LLM, say).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from sessions.models import Conversation, ConversationEvent, HandoffRecord, Message, SenderKind


class Summary(BaseModel):
    goal: str
    attempted: list[str] = Field(default_factory=list)
    collected: dict[str, str] = Field(default_factory=dict)
    blocker: str


class Verification(BaseModel):
    verified: bool
    fields: list[str]
    # The agent must confirm identity before account changes: nothing was vouched for by the website.
    reverify_before_account_changes: bool


class ContextPackage(BaseModel):
    conversation_id: str
    summary: Summary
    intent: str | None
    confidence: float | None
    customer: dict[str, Any]
    channel: str
    verification: Verification
    fields: dict[str, str]
    articles: list[str]
    escalation: HandoffRecord | None
    tags: list[str]
    notes: list[dict[str, Any]]
    transcript: list[dict[str, Any]]


class Summarizer(Protocol):
    def summarize(self, conversation: Conversation, transcript: list[Message]) -> Summary: ...


class BotTurnSummarizer:
    """Goal from the first message the bot understood, steps from its answers, data from what it collected,
    blocker from why it handed off."""

    def summarize(self, conversation: Conversation, transcript: list[Message]) -> Summary:
        customer_said = [m for m in transcript if m.sender is SenderKind.CUSTOMER and m.text.strip()]
        goal = ""
        attempted: list[str] = []
        collected: dict[str, str] = {}
        previous: Message | None = None
        for message in transcript:
            if message.sender is SenderKind.CUSTOMER:
                previous = message
                continue
            turn = message.turn
            if message.sender is not SenderKind.BOT or turn is None:
                continue
            collected.update(turn.fields)
            if turn.intent and not turn.fallback:
                if not goal and previous is not None:
                    goal = f'{turn.intent}: "{_clip(previous.text)}"'
                articles = f" ({', '.join(turn.articles)})" if turn.articles else ""
                attempted.append(f"bot answered {turn.intent}{articles}")
            elif turn.fallback:
                attempted.append(
                    "bot did not understand" + (f': "{_clip(previous.text)}"' if previous else "")
                )
        if not goal:
            goal = f'"{_clip(customer_said[0].text)}"' if customer_said else "(the customer has not said yet)"
        handoff = conversation.handoff
        blocker = handoff.explanation if handoff else "handed over"
        if customer_said:
            blocker += f'; last said: "{_clip(customer_said[-1].text)}"'
        return Summary(goal=goal, attempted=attempted, collected=collected, blocker=blocker)


DELIVERY_EVENTS = {"delivery.sent": "sent", "delivery.retrying": "retrying", "delivery.failed": "failed"}


def delivery_states(events: list[ConversationEvent]) -> dict[str, dict[str, Any]]:
    """Per outbound message, the latest word on its delivery (sent, retrying, delivered, failed, ...)."""
    states: dict[str, dict[str, Any]] = {}
    for event in events:
        message_id = event.data.get("message_id")
        if not isinstance(message_id, str):
            continue
        if event.type in DELIVERY_EVENTS:
            states[message_id] = {"status": DELIVERY_EVENTS[event.type], "detail": event.data.get("detail")}
        elif event.type == "delivery.status":
            states[message_id] = {"status": event.data.get("status"), "detail": event.data.get("error_code")}
    return states


def build_package(
    conversation: Conversation, transcript: list[Message], summarizer: Summarizer,
    events: list[ConversationEvent] | None = None,
) -> ContextPackage:
    delivery = delivery_states(events or [])
    customer = conversation.customer
    turns = [
        m.turn for m in transcript if m.turn is not None and m.sender in (SenderKind.BOT, SenderKind.SYSTEM)
    ]
    fields: dict[str, str] = {}
    articles: list[str] = []
    for turn in turns:
        fields.update(turn.fields)
        articles.extend(a for a in turn.articles if a not in articles)
    last = next((t for t in reversed(turns) if t.intent), None)
    return ContextPackage(
        conversation_id=conversation.id,
        summary=summarizer.summarize(conversation, transcript),
        intent=last.intent if last else None,
        confidence=last.confidence if last else None,
        customer={
            "id": customer.id,
            "name": customer.name,
            "email": customer.email,
            "tier": customer.tier,
            "language": customer.language,
            "country": customer.country,
            "external_id": customer.external_id,
            "identities": [i.model_dump() for i in customer.identities],
        },
        channel=conversation.channel,
        verification=Verification(
            verified=customer.verified,
            fields=list(customer.verified_fields),
            reverify_before_account_changes=not customer.verified,
        ),
        fields=fields,
        articles=articles,
        escalation=conversation.handoff,
        tags=list(conversation.tags),
        notes=list(conversation.notes),
        transcript=[
            {
                "id": m.id,
                "sender": m.sender.value,
                "text": m.text,
                "ts": m.ts.isoformat(),
                "attachments": [a.model_dump(exclude_none=True) for a in m.attachments],
                # On SMS and WhatsApp: whether the customer's phone got it (absent on web chat).
                **({"delivery": delivery[m.id]} if m.id in delivery else {}),
            }
            for m in transcript
        ],
    )


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
