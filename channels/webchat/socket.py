"""The customer websocket ``/ws/chat``: aiohttp stops here, the pipeline sees ``InboundMessage`` only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from channels.base import InboundSink
from channels.webchat.access import Network, client_address, is_own_origin
from channels.webchat.adapter import WebChatAdapter
from channels.webchat.frames import (
    FrameError,
    MessageFrame,
    TypingFrame,
    ack_frame,
    handoff_frame,
    message_frame,
    parse_client_frame,
    pending_session_frame,
    rate_limited_frame,
    session_frame,
)
from channels.webchat.identity import read_identity
from sessions.customers import CustomerStore
from sessions.limits import Rate, RateLimiter
from sessions.live import LiveFeed, LiveItem, Resync
from sessions.models import Conversation, ConversationEvent, Identity, InboundMessage, Message, StatusUpdate
from sessions.store import ConversationFull, ConversationNotFound, ConversationStore

log = structlog.get_logger(__name__)

# Typing signals are ephemeral; one per interval is enough for "is typing..." on the other side.
TYPING_INTERVAL_SECONDS = 2.0

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_U64_MAX = 2**64 - 1
_RESUME_TOKEN = re.compile(r"^[0-9a-f]{32}\.[A-Za-z0-9_-]{20,100}$")

# The preflight's answer is readable by any page: it only says whether that page's origin may connect.
_CHECK_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}

# Close codes in the private range (4000-4999), so the widget can tell why it was closed.
CLOSE_INVALID_TOKEN = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAVAILABLE = 4503


@dataclass(frozen=True, slots=True)
class WebChatConfig:
    allowed_origins: frozenset[str]
    max_text_chars: int
    identity_secret: str | None
    heartbeat_seconds: float = 25.0
    # PUBLIC_URL's origin: like the Host the gateway is served at, always allowed (its own demo page).
    public_origin: str | None = None
    # Customer messages of one conversation (all its sockets, on any instance), and new conversations
    # opened from one client address: docs/security.md.
    message_rate: Rate = field(default_factory=lambda: Rate.per_minute(30, burst=20))
    new_conversation_rate: Rate = field(default_factory=lambda: Rate.per_hour(20))
    trusted_proxies: tuple[Network, ...] = ()

    def origin_allowed(self, origin: str | None, host: str | None = None) -> bool:
        """Browsers always send Origin; a client without one is not a browser and cannot be hijacked. The
        gateway's own pages (the Host asked for, or PUBLIC_URL) are always allowed."""
        if origin is None:
            return True
        origin = origin.rstrip("/")
        return ("*" in self.allowed_origins or origin in self.allowed_origins
                or is_own_origin(origin, host, self.public_origin))

    @property
    def max_frame_bytes(self) -> int:
        # Room for the JSON around the longest allowed text, even when every character is escaped.
        return self.max_text_chars * 6 + 4096


def stream_id_key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


def valid_stream_id(value: str) -> bool:
    """A Redis stream id (two unsigned 64-bit integers) that another can follow (not the very last)."""
    if not _STREAM_ID.match(value):
        return False
    key = stream_id_key(value)
    return max(key) <= _U64_MAX and key != (_U64_MAX, _U64_MAX)


class WebChatEndpoint:
    def __init__(
        self,
        config: WebChatConfig,
        store: ConversationStore,
        customers: CustomerStore,
        live: LiveFeed,
        sink: InboundSink,
    ) -> None:
        self.config = config
        self.store = store
        self.customers = customers
        self.live = live
        self.sink = sink
        self.limiter = RateLimiter(store.redis, store.batcher)
        self._sockets: set[web.WebSocketResponse] = set()

    async def close_all(self) -> None:
        """On shutdown: 1001 "going away" tells each widget to reconnect, to this or another instance."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    def _refuse_origin(self, request: web.Request) -> web.Response | None:
        origin = request.headers.get("Origin")
        if self.config.origin_allowed(origin, request.headers.get("Host")):
            return None
        log.info("webchat.origin_refused", origin=origin)
        return web.json_response(
            {"code": "origin_not_allowed", "detail": f"Origin {origin} may not open a chat."}, status=403,
            headers=_CHECK_HEADERS,
        )

    async def check(self, request: web.Request) -> web.Response:
        """``GET /ws/chat/check``: whether this page's origin may open the chat. A browser shows a refused
        upgrade to a script only as a failed connection; this answer (readable from any origin) tells the
        widget why, so it can say so instead of retrying."""
        refused = self._refuse_origin(request)
        return refused or web.json_response({"allowed": True}, headers=_CHECK_HEADERS)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse_origin(request)
        if refused is not None:
            return refused
        token = request.query.get("token") or None
        after = request.query.get("after") or None
        if after is not None and not valid_stream_id(after):
            return web.json_response(
                {"code": "invalid_after", "detail": "'after' must be a message id such as 1700000000000-0."},
                status=400,
            )
        ws = web.WebSocketResponse(
            heartbeat=self.config.heartbeat_seconds, max_msg_size=self.config.max_frame_bytes
        )
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async with _ChatSocket(self, request, ws) as chat:
                await chat.serve(token, after)
        except ConnectionResetError:
            log.info("webchat.client_gone")
        except (RedisError, OSError, AttributeError) as exc:
            if isinstance(exc, AttributeError) and not _raised_by_redis_client(exc):
                raise
            log.error("webchat.backend_unavailable", error=str(exc))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "error", "code": "unavailable",
                                    "detail": "The chat is briefly unavailable; reconnecting resumes it."})
                await ws.close(code=CLOSE_UNAVAILABLE)
        finally:
            self._sockets.discard(ws)
        return ws


class _ChatSocket:
    """One customer socket. A new chat has no conversation until its first message: a connection that
    never says anything stores nothing."""

    def __init__(self, endpoint: WebChatEndpoint, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.endpoint = endpoint
        self.config = endpoint.config
        self.request = request
        self.ws = ws
        self.conversation: Conversation | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _ChatSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def serve(self, token: str | None, after: str | None) -> None:
        if token is None:
            await self.ws.send_json(pending_session_frame())
            log.info("webchat.connected", resumed=False, replayed=0)
        elif not await self._resume(token, after):
            return
        await self._read()
        log.info("webchat.disconnected")

    async def _follow(self, conversation_id: str) -> asyncio.Queue[LiveItem]:
        """Follow the conversation's feed until the socket ends. Started before history is read: anything
        appended in between arrives twice and is skipped by id, rather than falling into a gap."""
        structlog.contextvars.bind_contextvars(conversation_id=conversation_id)
        return await self._stack.enter_async_context(self.endpoint.live.follow(conversation_id))

    def _pump(self, feed: asyncio.Queue[LiveItem], conversation_id: str, last_seen: str | None) -> None:
        writer = _LiveWriter(self.ws, self.endpoint.store, conversation_id, last_seen)
        pump = asyncio.create_task(writer.run(feed), name=f"webchat-writer-{conversation_id}")

        async def stop() -> None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

        self._stack.push_async_callback(stop)

    async def _resume(self, token: str, after: str | None) -> bool:
        if not _RESUME_TOKEN.match(token):
            await self._refuse_token()
            return False
        conversation_id = token.partition(".")[0]
        feed = await self._follow(conversation_id)
        try:
            conversation, history = await self.endpoint.store.resume(token, after)
        except ConversationNotFound:
            await self._refuse_token()
            return False
        await self.ws.send_json(session_frame(conversation, token, history))
        log.info("webchat.connected", resumed=True, replayed=len(history))
        self.conversation = conversation
        self._pump(feed, conversation.id, history[-1].id if history else after)
        return True

    async def _refuse_token(self) -> None:
        log.info("webchat.invalid_token")
        await self.ws.send_json({"type": "error", "code": "invalid_token",
                                 "detail": "This conversation has ended or the token is not valid."})
        await self.ws.close(code=CLOSE_INVALID_TOKEN)

    async def _open(self, frame: MessageFrame) -> Conversation | None:
        """The first message of a new chat opens its conversation (and customer), within the client
        address's allowance of new conversations; refused, it stores nothing and says when to try again."""
        config, endpoint = self.config, self.endpoint
        request = self.request
        address = client_address(request.remote, request.headers.getall("X-Forwarded-For", []),
                                 config.trusted_proxies)
        wait = await endpoint.limiter.take(endpoint.store.keys.new_conversation_rate(address),
                                           config.new_conversation_rate)
        if wait:
            log.warning("webchat.rate_limited", limit="new_conversations", address=address)
            await self.ws.send_json(rate_limited_frame(
                "Too many new conversations from this address; try again later.", wait, frame.client_id))
            return None
        claimed = read_identity(request.query.get("identity"), request.query.get("identity_sig"),
                                config.identity_secret)
        external_id = claimed.profile.get("external_id")
        identity = Identity(channel=WebChatAdapter.name, address=external_id) if (
            claimed.verified and external_id
        ) else None
        customer = await endpoint.customers.resolve(identity, claimed.profile, claimed.verified)
        created = await endpoint.store.create(customer, WebChatAdapter.name)
        conversation = created.conversation
        feed = await self._follow(conversation.id)
        await self.ws.send_json(session_frame(conversation, created.resume_token, []))
        log.info("webchat.conversation_opened", customer_id=customer.id, verified=customer.verified)
        self._pump(feed, conversation.id, None)
        return conversation

    async def _read(self) -> None:
        ws = self.ws
        last_typing = 0.0
        async for raw in ws:
            if raw.type == WSMsgType.BINARY:
                await ws.send_json(FrameError("binary_not_supported", "Send JSON text frames.").frame())
                continue
            if raw.type != WSMsgType.TEXT:
                break
            frame = parse_client_frame(raw.data, self.config.max_text_chars)
            if isinstance(frame, FrameError):
                await ws.send_json(frame.frame())
                continue
            if isinstance(frame, MessageFrame):
                if not await self._message(frame):
                    return
            elif isinstance(frame, TypingFrame):
                now = time.monotonic()
                # At most one signal per interval; nobody is there to see it before the first message.
                if self.conversation is not None and now - last_typing >= TYPING_INTERVAL_SECONDS:
                    last_typing = now
                    cid = self.conversation.id
                    await self.endpoint.store.signal(cid, ConversationEvent(
                        type="typing", conversation_id=cid, data={"sender": "customer"}))
            else:
                await ws.send_json({"type": "pong"})

    async def _message(self, frame: MessageFrame) -> bool:
        """Store and answer one message; False when the socket has ended."""
        ws, endpoint = self.ws, self.endpoint
        conversation = self.conversation
        if conversation is None:
            conversation = self.conversation = await self._open(frame)
            if conversation is None:
                return True
        else:  # a new conversation's bucket is full: only later messages need a token
            wait = await endpoint.limiter.take(endpoint.store.keys.message_rate(conversation.id),
                                               self.config.message_rate)
            if wait:
                log.warning("webchat.rate_limited", limit="messages")
                await ws.send_json(rate_limited_frame(
                    "You are sending messages too fast; wait a moment.", wait, frame.client_id))
                return True
        try:
            await self._receive(conversation, frame)
        except ConversationNotFound:  # expired while the socket was open
            await ws.send_json({"type": "error", "code": "conversation_ended", "client_id": frame.client_id,
                                "detail": "This conversation has ended; a new one can be started."})
            await ws.close(code=CLOSE_INVALID_TOKEN)
            return False
        except ConversationFull as full:
            log.warning("webchat.conversation_full", limit=full.limit)
            await ws.send_json(FrameError(
                "conversation_full", f"This conversation has reached its limit of {full.limit} messages; "
                "nothing more can be added to it.", frame.client_id).frame())
        return True

    async def _receive(self, conversation: Conversation, frame: MessageFrame) -> None:
        inbound = InboundMessage(
            conversation_id=conversation.id,
            channel=WebChatAdapter.name,
            text=frame.text,
            external_id=f"ws:{frame.client_id}",
            channel_metadata={"client_id": frame.client_id},
        )
        sink = self.endpoint.sink
        accepted = await sink.accept(inbound)
        await self.ws.send_json(ack_frame(frame.client_id, accepted.message.id))
        await sink.advance(accepted)


class _LiveWriter:
    """Forwards new transcript entries to one socket in id order, each exactly once."""

    def __init__(
        self, ws: web.WebSocketResponse, store: ConversationStore, conversation_id: str, last_seen: str | None
    ) -> None:
        self.ws = ws
        self.store = store
        self.conversation_id = conversation_id
        self.last_seen = stream_id_key(last_seen) if last_seen else (0, 0)

    async def run(self, feed: asyncio.Queue[LiveItem]) -> None:
        while not self.ws.closed:
            item = await feed.get()
            if isinstance(item, Message):
                await self._send(item)
            elif isinstance(item, Resync):
                after = "{}-{}".format(*self.last_seen)
                try:
                    missed = await self.store.transcript(self.conversation_id, after)
                except (RedisError, OSError):
                    # Without the re-read this socket would go on acknowledging and never deliver: close
                    # it as unavailable, and the client resumes after its last message.
                    await self._write({"type": "error", "code": "unavailable",
                                       "detail": "The chat is briefly unavailable; reconnecting resumes it."})
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.ws.close(code=CLOSE_UNAVAILABLE)
                    return
                for message in missed:
                    await self._send(message)
            elif isinstance(item, ConversationEvent):
                await self._send_event(item)

    async def _send(self, message: Message) -> None:
        key = stream_id_key(message.id)
        if key <= self.last_seen:
            return
        self.last_seen = key
        await self._write(message_frame(message))

    async def _send_event(self, event: ConversationEvent) -> None:
        """Events that change what the customer should see (a handoff's status, the agent typing) become
        frames."""
        if event.type == "typing" and event.data.get("sender") == "agent":
            await self._write({"type": "typing", "sender": "agent"})
            return
        update = StatusUpdate.from_event(event, WebChatAdapter.name)
        if update is not None and update.status:
            await self._write(handoff_frame(update.status, update.text))

    async def _write(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(frame))


def _raised_by_redis_client(exc: BaseException) -> bool:
    """redis-py (8.1) can raise AttributeError ('NoneType' object has no attribute 'writelines') instead of a
    ConnectionError when Redis goes away while a command is being sent: that is the same outage, and the
    client must get the same answer (4503), not a protocol error. Only an AttributeError raised inside the
    redis package counts; one of ours is a bug and propagates."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
    return isinstance(module, str) and (module == "redis" or module.startswith("redis."))
