"""What every part of a running voice channel shares, built once at start."""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from channels.base import InboundSink
from channels.twilio.callbacks import StatusCallbacks
from channels.twilio.replies import ReplyCollector
from channels.twilio.rest import RestResult, TwilioRest
from channels.voice.calls import CallStore
from channels.voice.config import VoiceConfig
from channels.voice.desk import VoiceDesk
from channels.voice.twiml import Speech
from channels.voice.urls import VoiceUrls
from sessions.customers import CustomerStore
from sessions.models import Conversation, ConversationEvent
from sessions.store import ConversationStore

log = structlog.get_logger(__name__)

CHANNEL = "voice"


@dataclass(slots=True)
class VoiceRuntime:
    config: VoiceConfig
    urls: VoiceUrls
    store: ConversationStore
    customers: CustomerStore
    calls: CallStore
    callbacks: StatusCallbacks
    sink: InboundSink
    desk: VoiceDesk
    rest: TwilioRest | None  # None: no account configured, nobody can be dialled
    collector: ReplyCollector = field(default_factory=ReplyCollector)
    # REST calls made for a status change, and slow bots' turns, outliving the request that started them
    # (asyncio keeps only weak references to tasks).
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary)

    def speech(self, conversation: Conversation | None) -> Speech:
        language = None
        if conversation is not None:
            handoff = conversation.handoff
            language = (handoff.language if handoff else None) or conversation.signals.language \
                or conversation.customer.language
        return Speech(self.config.locale(language), self.config.voice)

    async def checked(self, conversation_id: str, what: str, result: RestResult) -> RestResult:
        """A REST call's outcome: a failure is recorded on the conversation (agents and reviews see that
        the phone side did not do what it should), never raised."""
        if not result.ok:
            log.warning("voice.rest_failed", conversation_id=conversation_id, what=what, status=result.status,
                        ambiguous=result.ambiguous)
            await self.store.record(conversation_id, ConversationEvent(
                type="voice.rest_failed", conversation_id=conversation_id,
                data={"what": what, "status": result.status, "ambiguous": result.ambiguous,
                      "detail": result.error}))
        return result

    def spawn(self, work: Coroutine[Any, Any, Any], name: str, *, after: str | None = None) -> None:
        """Run ``work`` in the background; with ``after`` (a conversation id), only once the work started
        before it for that conversation has finished, so one call's steps never interleave."""
        if after is not None:
            lock = self._locks.setdefault(after, asyncio.Lock())
            work = _holding(lock, work)
        # A fresh log context: the request that set this off has its own ids, which are not this work's.
        context = contextvars.Context()
        context.run(structlog.contextvars.bind_contextvars, **({"conversation_id": after} if after else {}))
        task = asyncio.create_task(work, name=name, context=context)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("voice.background_failed", task=task.get_name(), error=repr(task.exception()))


async def _holding(lock: asyncio.Lock, work: Coroutine[Any, Any, Any]) -> Any:
    async with lock:
        return await work
