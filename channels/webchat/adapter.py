"""The web chat channel adapter."""

from __future__ import annotations

from typing import Any, ClassVar

from channels.base import Capabilities
from sessions.models import Conversation, Message, StatusUpdate


class WebChatAdapter:
    name: ClassVar[str] = "webchat"
    capabilities: ClassVar[Capabilities] = Capabilities(max_text_chars=4000, attachments=True, push=True)

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        """Nothing to push: every socket of the conversation follows its transcript stream.

        Appending the message published it, and a socket that missed the notification replays from the
        stream, so delivery here is the durable write itself.
        """

    async def on_status(self, update: StatusUpdate) -> None:
        """Nothing to do here either: every socket of the conversation follows its events, on whichever
        instance it is connected to, and shows each status as a ``handoff`` frame (socket.py)."""

    async def agent_view(self, conversation_id: str) -> dict[str, Any]:
        return {}
