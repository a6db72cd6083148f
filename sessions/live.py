"""Live delivery of new transcript entries to the readers of a conversation in this process.

Pub/sub only makes delivery fast. A reader that may have missed a notification (the subscription dropped,
or it fell behind) receives ``RESYNC`` and re-reads the transcript after the last id it delivered, so the
stream stays the record and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from sessions.keys import Keys
from sessions.models import ConversationEvent, Message
from sessions.store import message_from_entry

log = structlog.get_logger(__name__)


class Resync:
    """Marker: re-read the transcript, a notification may have been missed."""


RESYNC: Final = Resync()
LiveItem = Message | ConversationEvent | Resync

_QUEUE_LIMIT = 512
_CONFIRM_SECONDS = 2.0


class LiveFeed:
    """One pub/sub connection per process, fanned out to every local follower of a conversation."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._followers: dict[str, set[asyncio.Queue[LiveItem]]] = defaultdict(set)
        self._channel_to_conversation: dict[str, str] = {}
        # Set when Redis confirms a subscription: only then is every later publish certain to arrive.
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Returns at once: the gateway starts (and reports not ready) even while Redis is down."""
        self._pubsub = self._redis.pubsub()
        self._task = asyncio.create_task(self._pump(), name="live-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def follow(self, conversation_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[LiveItem]]:
        """A queue of what is appended to the conversation from now on, while the context is open."""
        return self._follow(conversation_id, self._keys.live_channel(conversation_id))

    def follow_channel(self, channel: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[LiveItem]]:
        """Events published on any channel in the "event\n<json>" form (an agent's desk inbox, say)."""
        return self._follow(f"channel:{channel}", channel)

    @contextlib.asynccontextmanager
    async def _follow(self, conversation_id: str, channel: str) -> AsyncIterator[asyncio.Queue[LiveItem]]:
        queue: asyncio.Queue[LiveItem] = asyncio.Queue(_QUEUE_LIMIT)
        async with self._lock:
            first = not self._followers[conversation_id]
            self._followers[conversation_id].add(queue)
            confirmed = self._confirmed.setdefault(channel, asyncio.Event())
            if first:
                self._channel_to_conversation[channel] = conversation_id
                assert self._pubsub is not None, "LiveFeed.start() was not called"
                await self._pubsub.subscribe(channel)
        # A publish that Redis handles before the SUBSCRIBE would be missed with nothing to tell the reader,
        # so wait for the confirmation (one round trip, once per channel and process).
        try:
            async with asyncio.timeout(_CONFIRM_SECONDS):
                await confirmed.wait()
        except TimeoutError:
            log.warning("live_feed.subscribe_unconfirmed", channel=channel)
            _offer(queue, RESYNC)
        try:
            yield queue
        finally:
            async with self._lock:
                followers = self._followers.get(conversation_id)
                if followers is not None:
                    followers.discard(queue)
                    if not followers:
                        del self._followers[conversation_id]
                        self._channel_to_conversation.pop(channel, None)
                        self._confirmed.pop(channel, None)
                        if self._pubsub is not None:
                            with contextlib.suppress(RedisError):
                                await self._pubsub.unsubscribe(channel)

    async def _pump(self) -> None:
        assert self._pubsub is not None
        backoff = 0.1
        standing = False
        reconnected = False
        while True:
            try:
                if not standing:
                    # A standing subscription keeps the connection open before any conversation is followed.
                    await self._pubsub.subscribe(self._keys.live_control())
                    standing = True
                raw = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log.warning("live_feed.disconnected", error=str(exc), retry_in=backoff)
                self._broadcast_resync()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                reconnected = True
                continue
            if reconnected:
                # Subscribed again: what was published while the connection was down (to followers who
                # joined then too) is only in the transcripts.
                reconnected = False
                log.info("live_feed.reconnected")
                self._broadcast_resync()
            if raw is None:
                continue
            if raw.get("type") == "subscribe":
                if (event := self._confirmed.get(raw["channel"].decode())) is not None:
                    event.set()
                continue
            if raw.get("type") != "message":
                continue
            self._dispatch(raw["channel"].decode(), raw["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        conversation_id = self._channel_to_conversation.get(channel)
        if conversation_id is None:
            return
        head, _, body = data.partition(b"\n")
        item: LiveItem
        if head == b"event":
            item = ConversationEvent.model_validate_json(body)
        else:
            item = message_from_entry(head, body)
        for queue in self._followers.get(conversation_id, ()):
            _offer(queue, item)

    def _broadcast_resync(self) -> None:
        for followers in self._followers.values():
            for queue in followers:
                _offer(queue, RESYNC)


def _offer(queue: asyncio.Queue[LiveItem], item: LiveItem) -> None:
    """Never block the pump on a slow reader: drop its backlog and make it re-read instead."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)
