"""The interfaces every channel implements, and the registry the gateway wires them from.

A channel is two-sided (as Rasa's input/output channel pairs and aiogram's ``register(app, path)``): a
``Channel`` is a transport that registers its own routes and turns requests into ``InboundMessage``s, and
the ``ChannelAdapter``s it starts carry outbound messages and act on typed conversation status (queued, a
wait update, offered, assigned, transferred, resolved ...). The gateway never branches on a channel's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from redis.asyncio import Redis

from sessions.customers import CustomerStore
from sessions.jobs import JobRunner
from sessions.keys import Keys
from sessions.live import LiveFeed
from sessions.models import Conversation, InboundMessage, Message, StatusUpdate
from sessions.store import AppendResult, ConversationStore


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
    # A transfer keeps the customer connected to the first agent until the colleague takes over (a call).
    warm_transfer: bool = False
    # Agents take these conversations on their phone: a claim needs a number to call them on.
    agents_by_phone: bool = False
    # The customer can answer the menu of callback times: in writing, or with keys on a call. Where not, a
    # callback is arranged on the number they use, as soon as the team can.
    callback_menu: bool = True
    # This channel places the calls that keep callbacks (agent first, then the customer), whatever channel
    # the customer asked on: it is told of every callback attempt an agent takes.
    places_callbacks: bool = False


class ChannelAdapter(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        """Carry an outbound message, already stored in the transcript, to the customer."""

    async def on_status(self, update: StatusUpdate) -> None:
        """Act on a handoff step of one of this channel's conversations, once, on the instance that made it
        (text the first wait update, dial the offered agent, bridge a call ...). Nothing to do is fine."""

    async def agent_view(self, conversation_id: str) -> dict[str, Any]:
        """What the channel can tell an agent about the conversation right now, beside its context package
        (a call: who is on the line, on hold, ringing; the spoken brief). Empty when nothing."""


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


def _unheard(channel: str, action: str, kind: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What the gateway hands every channel when it starts."""

    redis: Redis
    keys: Keys
    store: ConversationStore
    customers: CustomerStore
    live: LiveFeed
    sink: InboundSink
    jobs: JobRunner
    registry: ChannelRegistry
    # Told of each failed request to a provider's API: (the channel's name, the action, how it failed).
    send_failed: Callable[[str, str, str], None] = _unheard


class Channel(Protocol):
    """A transport (web chat, Twilio messaging, Twilio voice): its routes, and the adapters it starts.

    Routes are added when the app is built; requests only arrive after ``start``, which opens what the
    channel needs and registers its adapters."""

    @property
    def name(self) -> str: ...

    def add_routes(self, router: web.UrlDispatcher) -> None: ...

    async def start(self, context: ChannelContext) -> None: ...

    async def shutdown(self) -> None:
        """The server is stopping: close client connections, let work in flight finish (Redis still up)."""
        ...

    async def aclose(self) -> None:
        """Release what ``start`` opened (HTTP clients)."""
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

    def __iter__(self) -> Iterator[ChannelAdapter]:
        return iter(self._adapters.values())

    async def on_status(self, update: StatusUpdate) -> None:
        """The store's status listener: the step goes to its conversation's channel, and a callback attempt
        an agent took also to the channel that places the calls."""
        adapter = self._adapters.get(update.channel)
        if adapter is not None:
            await adapter.on_status(update)
        if "callback_attempt" in update.data:
            for caller in self._adapters.values():
                if caller is not adapter and caller.capabilities.places_callbacks:
                    await caller.on_status(update)
