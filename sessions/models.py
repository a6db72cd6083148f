"""The one session model every channel is normalized into.

Channels are named by plain strings (``"webchat"``, ``"sms"``, ...) registered by their adapters, so adding a
channel never means touching these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


class ConversationState(StrEnum):
    BOT = "bot"
    ESCALATING = "escalating"
    QUEUED = "queued"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    ASYNC = "async"
    ABANDONED = "abandoned"
    # The customer chose to be called back: nobody waits in a queue until the slot they chose begins.
    CALLBACK = "callback"


# Which states a conversation may move to from each state (ARCHITECTURE.md, "Conversation states").
ALLOWED_TRANSITIONS: dict[ConversationState, frozenset[ConversationState]] = {
    ConversationState.BOT: frozenset({ConversationState.ESCALATING, ConversationState.RESOLVED}),
    ConversationState.ESCALATING: frozenset({ConversationState.QUEUED, ConversationState.ASYNC}),
    ConversationState.QUEUED: frozenset(
        {ConversationState.OFFERED, ConversationState.ASSIGNED, ConversationState.ASYNC,
         ConversationState.ABANDONED, ConversationState.CALLBACK}
    ),
    ConversationState.OFFERED: frozenset(
        {ConversationState.ASSIGNED, ConversationState.QUEUED, ConversationState.ABANDONED,
         ConversationState.CALLBACK}
    ),
    # A callback attempt that failed goes back to waiting for the next one.
    ConversationState.ASSIGNED: frozenset(
        {ConversationState.RESOLVED, ConversationState.QUEUED, ConversationState.BOT,
         ConversationState.CALLBACK}
    ),
    # An agent picks up an asynchronous follow-up (assigned), or it goes back to a live queue.
    ConversationState.ASYNC: frozenset(
        {ConversationState.ASSIGNED, ConversationState.RESOLVED, ConversationState.QUEUED,
         ConversationState.CALLBACK}
    ),
    # At its slot a callback joins its queue (ahead of newer arrivals); cancelled, it is resolved; after the
    # last failed attempt it becomes a written follow-up.
    ConversationState.CALLBACK: frozenset(
        {ConversationState.QUEUED, ConversationState.RESOLVED, ConversationState.ASYNC}
    ),
    ConversationState.ABANDONED: frozenset({ConversationState.BOT, ConversationState.QUEUED}),
    # Reopened: back to the bot, or, soon after an agent resolved it, back to their queue.
    ConversationState.RESOLVED: frozenset({ConversationState.BOT, ConversationState.QUEUED}),
}


class SenderKind(StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Identity(BaseModel):
    """One address of a customer on one channel (a phone number, a WhatsApp id, a site's user id)."""

    model_config = ConfigDict(frozen=True)

    channel: str
    address: str


# Attributes a host site may assert about its signed-in customer. Only these travel into routing.
PROFILE_FIELDS: tuple[str, ...] = ("external_id", "name", "email", "tier", "language", "country", "phone")


class Customer(BaseModel):
    id: str
    identities: list[Identity] = Field(default_factory=list)
    external_id: str | None = None
    name: str | None = None
    email: str | None = None
    tier: str | None = None
    language: str | None = None
    country: str | None = None
    # A number the host site vouches for (E.164): what a web chat customer is offered for a callback.
    phone: str | None = None
    # Which profile fields were vouched for by the host site's HMAC; the rest are what the customer claims.
    verified_fields: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    def trusted(self, field: str) -> str | None:
        """The field's value only when it was verified, so routing never acts on a claim."""
        if field not in self.verified_fields:
            return None
        value = getattr(self, field, None)
        return value if isinstance(value, str) else None

    @property
    def verified(self) -> bool:
        return bool(self.verified_fields)


class Attachment(BaseModel):
    url: str
    content_type: str | None = None
    name: str | None = None


class TurnMeta(BaseModel):
    """What the bot knew about its own reply, kept on the bot's message for review and handoff context."""

    intent: str | None = None
    # The intent's family (orders, billing, ...): what escalation and routing rules are written against.
    family: str | None = None
    confidence: float = 0.0
    resolved: bool = False
    fallback: bool = False
    articles: list[str] = Field(default_factory=list)
    fields: dict[str, str] = Field(default_factory=dict)


class Message(BaseModel):
    """A normalized message. ``id`` is the transcript stream id, so ids order messages in time."""

    id: str = ""
    conversation_id: str
    direction: Direction
    sender: SenderKind
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    channel: str
    channel_metadata: dict[str, Any] = Field(default_factory=dict)
    provider_message_id: str | None = None
    client_id: str | None = None
    turn: TurnMeta | None = None
    ts: datetime = Field(default_factory=utcnow)

    @classmethod
    def notice(cls, conversation: Conversation, text: str) -> Message:
        """What the system tells the customer about their conversation (a handoff step), in its channel."""
        return cls(conversation_id=conversation.id, direction=Direction.OUTBOUND, sender=SenderKind.SYSTEM,
                   text=text, channel=conversation.channel)


class PolicySignals(BaseModel):
    """What the handoff policy remembers between turns, so each decision is a function of one snapshot."""

    explicit_requests: int = 0
    failed_turns: int = 0
    low_confidence_turns: int = 0
    # How often a request for a person was declined here (channel or time), so the bot never argues twice.
    declined: int = 0
    # Sentiment scores (-1..1) of the latest customer messages, newest last.
    sentiment: list[float] = Field(default_factory=list)
    # Language detected from the customer's own words (ISO 639-1), when a detector was sure enough.
    language: str | None = None
    last_intent: str | None = None
    last_family: str | None = None


class HandoffRecord(BaseModel):
    """Why and where a conversation left the bot: stored on the conversation and in its event stream."""

    reason: str
    trigger_rule: str
    explanation: str
    priority: int
    # Other triggers that fired on the same turn, for review.
    also: list[str] = Field(default_factory=list)
    queue: str
    queue_name: str = ""
    skills: list[str] = Field(default_factory=list)
    # live | async | callback | voicemail: what the customer was told would happen.
    mode: str
    route_rule: str
    route_explanation: str
    overflow_from: str | None = None
    back_at: datetime | None = None
    language: str | None = None
    rules_version: str
    decided_at: datetime

    def status(self, state: ConversationState) -> dict[str, Any]:
        """Where the handed-off conversation stands, as a channel shows it to the customer."""
        return {
            "status": state.value,
            "queue": self.queue,
            "queue_name": self.queue_name or self.queue,
            "mode": self.mode,
            "reason": self.reason,
            "priority": self.priority,
            "back_at": self.back_at.isoformat() if self.back_at else None,
        }


class CallbackSlot(BaseModel):
    """When the customer may be called: ``start`` to ``end`` (UTC); ``asap`` from the start, no end."""

    start: datetime
    end: datetime | None = None
    asap: bool = False


class CallbackAttempt(BaseModel):
    """One try at keeping a callback: offered to an agent, the agent's leg, then the customer's."""

    n: int
    # offering | dialling | connected | failed | completed | cancelled
    state: str = "offering"
    started_at: datetime
    ended_at: datetime | None = None
    agent: str | None = None
    agent_call: str | None = None
    customer_call: str | None = None
    # busy | no-answer | failed | machine | agent_declined | no_agent | unknown (never heard back)
    outcome: str | None = None


class CallbackRequest(BaseModel):
    """A callback promised to a customer, kept on the conversation itself (its state is ``callback`` while
    it waits for its slot). ``state`` is the promise's own step."""

    # choosing (the customer is picking a number or a slot) | declined (they said no: not offered unasked
    # again) | scheduled | offering | dialling | failed | completed | cancelled
    state: str = "choosing"
    queue: str
    number: str | None = None
    slot: CallbackSlot | None = None
    # The slots the customer was shown, so "2" means the slot they saw as 2.
    choices: list[CallbackSlot] = Field(default_factory=list)
    # The customer's time zone (IANA), when known; otherwise the team's is used for the times they are told.
    timezone: str | None = None
    requested_at: datetime
    # Why it was offered: asked | after_hours | unstaffed | wait_over
    why: str = "asked"
    confirmed_at: datetime | None = None
    # When the next attempt is due (the slot's start, then after each failure ``retry_minutes`` later).
    due_at: datetime | None = None
    max_attempts: int = 3
    retry_minutes: int = 30
    attempts: list[CallbackAttempt] = Field(default_factory=list)
    note: str = ""

    @property
    def current(self) -> CallbackAttempt | None:
        return self.attempts[-1] if self.attempts else None


class Conversation(BaseModel):
    id: str
    state: ConversationState = ConversationState.BOT
    channel: str
    customer: Customer
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    queue: str | None = None
    agent: str | None = None
    assigned_at: datetime | None = None
    # Who resolved it and when: a customer writing again soon goes back to them (RETURN_WINDOW_SECONDS).
    last_agent: str | None = None
    resolved_at: datetime | None = None
    # When the customer last wrote: WhatsApp only allows free-form replies for 24 hours after it.
    last_inbound_at: datetime | None = None
    priority: int = 0
    tags: list[str] = Field(default_factory=list)
    # The bot's view of the latest turn, so policies can read it without replaying the transcript.
    last_intent: str | None = None
    last_confidence: float | None = None
    signals: PolicySignals = Field(default_factory=PolicySignals)
    handoff: HandoffRecord | None = None
    # Notes agents leave for each other (transfers, hand-backs), oldest first.
    notes: list[dict[str, Any]] = Field(default_factory=list)
    # A callback the customer asked for or is choosing (state ``callback`` while it waits for its slot).
    callback: CallbackRequest | None = None

    @field_validator(
        "last_intent", "queue", "agent", "assigned_at", "last_agent", "resolved_at", "last_inbound_at",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class ConversationEvent(BaseModel):
    """A fact about a conversation, appended to its event stream for review and replay."""

    type: str
    conversation_id: str
    ts: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)


class StatusKind(StrEnum):
    """A step of a handed-off conversation that its channel may act on (speak it, text it, dial someone)."""

    QUEUED = "queued"
    ASYNC = "async"
    WAIT_UPDATE = "wait_update"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    TRANSFERRED = "transferred"
    # A warm transfer on a call started: the agent keeps the conversation until the colleague takes over.
    TRANSFERRING = "transferring"
    TRANSFER_FAILED = "transfer_failed"
    REQUEUED = "requeued"
    RESOLVED = "resolved"
    BACK_TO_BOT = "back_to_bot"
    ABANDONED = "abandoned"
    # A callback was scheduled, rescheduled, cancelled or given up on: the customer is told in their channel.
    CALLBACK = "callback"


# The event each desk or pipeline step records, and the status it means for the customer's channel.
_STATUS_OF_EVENT: dict[str, StatusKind] = {
    "handoff.queued": StatusKind.QUEUED,
    "handoff.async": StatusKind.ASYNC,
    "handoff.sla": StatusKind.WAIT_UPDATE,
    "handoff.offered": StatusKind.OFFERED,
    "handoff.assigned": StatusKind.ASSIGNED,
    "handoff.transferred": StatusKind.TRANSFERRED,
    "handoff.transferring": StatusKind.TRANSFERRING,
    "handoff.transfer_failed": StatusKind.TRANSFER_FAILED,
    "handoff.requeued": StatusKind.REQUEUED,
    "handoff.resolved": StatusKind.RESOLVED,
    "handoff.abandoned": StatusKind.ABANDONED,
    "handoff.callback": StatusKind.CALLBACK,
}


class StatusUpdate(BaseModel):
    """A typed conversation status, handed to the conversation's channel by whoever made the step.

    Built from the event the step recorded, so the record and what channels act on never disagree. ``status``
    is what the customer-facing frame shows (queue, position, eta_seconds, agent_name ...); ``data`` the
    rest of the event (the agent's id, a transfer's note ...).
    """

    model_config = ConfigDict(frozen=True)

    kind: StatusKind
    conversation_id: str
    channel: str
    text: str | None = None
    status: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_event(cls, event: ConversationEvent, channel: str) -> StatusUpdate | None:
        """The status an event stands for, or None for events that are not a handoff step."""
        kind = _STATUS_OF_EVENT.get(event.type)
        if kind is None:
            return None
        if kind is StatusKind.RESOLVED and event.data.get("back_to_bot"):
            kind = StatusKind.BACK_TO_BOT
        status = event.data.get("status")
        text = event.data.get("text")
        return cls(
            kind=kind, conversation_id=event.conversation_id, channel=channel,
            text=text if isinstance(text, str) else None,
            status=status if isinstance(status, dict) else {},
            data={k: v for k, v in event.data.items() if k not in ("status", "text")},
        )

    @property
    def agent_id(self) -> str | None:
        value = self.data.get("agent_id")
        return value if isinstance(value, str) else None


class InboundMessage(BaseModel):
    """What every channel adapter turns its transport's input into."""

    conversation_id: str
    channel: str
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    # The transport's own id for this message (client_id, MessageSid): claimed once, so retries store once.
    external_id: str | None = None
    channel_metadata: dict[str, Any] = Field(default_factory=dict)


class BotTurn(TurnMeta):
    """What a bot answers for one customer message: the reply and what it knew about it."""

    text: str

    def meta(self) -> TurnMeta:
        # Field by field, not dumped and parsed again. Validated (in Rust, lists copied): model_construct, in
        # Python, costs several times as much. The fields as they are (TurnMeta ignores ``text``), rather than
        # a filtered copy passed as keywords: a third cheaper.
        return TurnMeta.model_validate(self.__dict__)
