"""The interface between the pipeline and any bot: a conversation and a message in, a BotTurn out."""

from __future__ import annotations

from typing import Protocol

from sessions.models import BotTurn, Conversation, Message


class Bot(Protocol):
    name: str

    async def respond(self, conversation: Conversation, message: Message) -> BotTurn:
        """Answer one customer message. Must not raise for a bad answer: return a fallback turn instead."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the gateway stops."""
        ...
