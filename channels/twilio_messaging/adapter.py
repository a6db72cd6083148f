"""The SMS and WhatsApp channel adapters.

While Twilio's webhook request for a customer's message is open, replies to that conversation are
collected and returned in the request's TwiML (no REST call, no extra cost). Any other message (an agent's
reply, a reply too slow for the webhook's time budget) goes through Twilio's REST API; the outcome is
recorded on the conversation, so a failed delivery is visible to agents and reviews, never silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import ClassVar

import structlog

from channels.base import Capabilities
from channels.twilio_messaging.outbound import SendResult, TwilioSender
from sessions.models import Conversation, ConversationEvent, Message
from sessions.store import ConversationStore

log = structlog.get_logger(__name__)


class ReplyCollector:
    """Outbound messages of conversations whose inbound webhook is still waiting for its TwiML answer."""

    def __init__(self) -> None:
        self._open: dict[str, list[Message]] = {}

    @contextlib.asynccontextmanager
    async def collecting(self, conversation_id: str) -> AsyncIterator[list[Message]]:
        replies: list[Message] = []
        self._open[conversation_id] = replies
        try:
            yield replies
        finally:
            if self._open.get(conversation_id) is replies:
                del self._open[conversation_id]

    def take(self, conversation_id: str, message: Message) -> bool:
        replies = self._open.get(conversation_id)
        if replies is None:
            return False
        replies.append(message)
        return True


class MessagingAdapter:
    capabilities: ClassVar[Capabilities] = Capabilities(max_text_chars=1600, attachments=True, push=True)

    def __init__(
        self, name: str, collector: ReplyCollector, store: ConversationStore, sender: TwilioSender | None
    ) -> None:
        self._name = name
        self.collector = collector
        self.store = store
        self.sender = sender

    @property
    def name(self) -> str:
        return self._name

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        if self.collector.take(conversation.id, message):
            return
        address = next((i.address for i in conversation.customer.identities if i.channel == self._name), None)
        if self.sender is None or address is None:
            result = SendResult(None, "Twilio sending is not configured (TWILIO_ACCOUNT_SID, sending number)")
        else:
            result = await self.sender.send(self._name, address, message.text)
        if result.ok:
            log.info("messaging.sent", channel=self._name, message_id=message.id, sid=result.sid)
            event = ConversationEvent(type="delivery.sent", conversation_id=conversation.id,
                                      data={"message_id": message.id, "sid": result.sid})
        else:
            log.warning("messaging.undelivered", channel=self._name, message_id=message.id,
                        error=result.error)
            event = ConversationEvent(type="delivery.failed", conversation_id=conversation.id,
                                      data={"message_id": message.id, "detail": result.error,
                                            "status": result.status})
        await self.store.record(conversation.id, event)
