"""The one interface every channel implements, and the registry the pipeline looks adapters up in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sessions.models import Conversation, InboundMessage, Message
from sessions.store import AppendResult


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can carry, so outbound messages can fall back (buttons to text, no images on voice)."""

    max_text_chars: int
    attachments: bool
    # The channel can reach the customer unprompted (web chat, SMS); voice answers only inside a call.
    push: bool
    # Status changes can be shown quietly as they happen (web chat's status line). Where not (SMS,
    # WhatsApp), only the first queue update is sent, as a message: every later one would be a text.
    live_updates: bool = True


class ChannelAdapter(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        """Carry an outbound message, already stored in the transcript, to the customer."""


class InboundSink(Protocol):
    """The pipeline as a channel sees it: store a customer's message, then let the conversation move on.

    Two steps so a channel can acknowledge (a websocket ack, a webhook's 200) as soon as the message is
    durable, before the bot or an agent answers.
    """

    async def accept(self, inbound: InboundMessage) -> AppendResult: ...

    async def advance(self, accepted: AppendResult) -> None: ...

    @property
    def turns_wait_on_io(self) -> bool:
        """Whether ``advance`` may wait on a remote bot: a channel with a deadline bounds it only then."""
        ...


class ChannelRegistry:
    def __init__(self) -> None:
        self._adapters: dict[str, ChannelAdapter] = {}

    def register(self, adapter: ChannelAdapter) -> None:
        if adapter.name in self._adapters:
            raise ValueError(f"channel {adapter.name!r} is registered twice")
        self._adapters[adapter.name] = adapter

    def get(self, name: str) -> ChannelAdapter:
        try:
            return self._adapters[name]
        except KeyError:
            raise LookupError(f"no channel adapter named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._adapters)
