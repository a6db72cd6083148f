"""The interface between the pipeline and any bot: a conversation and a message in, a BotTurn out."""

from __future__ import annotations

from typing import Protocol

from sessions.models import BotTurn, Conversation, Message


class Bot(Protocol):
    name: str
    # True when respond() waits on the network (a team's bot service): callers with a deadline (a Twilio
    # webhook) bound the turn then. An in-process bot answers at once, and bounding it would only cost time.
    waits_on_io: bool

    async def respond(self, conversation: Conversation, message: Message) -> BotTurn:
        """Answer one customer message. Must not raise for a bad answer: return a fallback turn instead."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the gateway stops."""
        ...
