"""The pipeline: stores what customers say, lets the bot answer while the conversation is the bot's, and
hands replies to the conversation's channel. It knows conversation states, never channel names.
"""

from __future__ import annotations

import asyncio
import time
import weakref

import structlog

from channels.base import ChannelRegistry
from gateway.bots.base import Bot
from sessions.models import (
    BotTurn,
    ConversationState,
    Direction,
    InboundMessage,
    Message,
    SenderKind,
)
from sessions.store import AppendResult, ConversationStore

log = structlog.get_logger(__name__)


class Pipeline:
    def __init__(self, store: ConversationStore, bot: Bot, channels: ChannelRegistry) -> None:
        self.store = store
        self.bot = bot
        self.channels = channels
        # One bot turn at a time per conversation, so replies follow the messages they answer.
        self._turn_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def accept(self, inbound: InboundMessage) -> AppendResult:
        """Store a customer's message once per external id; one Redis round trip."""
        message = Message(
            conversation_id=inbound.conversation_id,
            direction=Direction.INBOUND,
            sender=SenderKind.CUSTOMER,
            text=inbound.text,
            attachments=inbound.attachments,
            channel=inbound.channel,
            channel_metadata=inbound.channel_metadata,
            provider_message_id=inbound.external_id,
            client_id=inbound.channel_metadata.get("client_id"),
        )
        accepted = await self.store.append(message, external_id=inbound.external_id)
        log.info("message.accepted", message_id=accepted.message.id, duplicate=accepted.duplicate)
        return accepted

    async def advance(self, accepted: AppendResult) -> None:
        """Move the conversation on after a customer's message: today, the bot's turn while it owns it."""
        if accepted.duplicate:
            return
        lock = self._turn_locks.setdefault(accepted.conversation.id, asyncio.Lock())
        async with lock:
            if accepted.conversation.state is ConversationState.BOT:
                await self._bot_turn(accepted)

    async def _bot_turn(self, accepted: AppendResult) -> None:
        conversation = accepted.conversation
        started = time.perf_counter()
        try:
            turn = await self.bot.respond(conversation, accepted.message)
        except Exception:  # a bot bug must not cost the customer an answer
            log.exception("bot.crashed", bot=self.bot.name)
            turn = BotTurn(text="Sorry, something went wrong on my side. Please try again.", fallback=True)
        failed = turn.fallback or (not turn.resolved and turn.confidence < 0.5)
        reply = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            sender=SenderKind.BOT,
            text=turn.text,
            channel=conversation.channel,
            turn=turn.meta(),
        )
        stored = await self.store.append(
            reply,
            updates={
                "last_intent": turn.intent or "",
                "last_confidence": turn.confidence,
                "failed_bot_turns": conversation.failed_bot_turns + 1 if failed else 0,
            },
        )
        log.info("bot.replied", bot=self.bot.name, intent=turn.intent, confidence=turn.confidence,
                 fallback=turn.fallback, ms=round((time.perf_counter() - started) * 1000, 2))
        await self.channels.get(conversation.channel).deliver(stored.conversation, stored.message)
