"""The customer websocket ``/ws/chat``: aiohttp stops here, the pipeline sees ``InboundMessage`` only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from channels.base import InboundSink
from channels.webchat.adapter import WebChatAdapter
from channels.webchat.frames import (
    FrameError,
    MessageFrame,
    TypingFrame,
    ack_frame,
    handoff_frame,
    message_frame,
    parse_client_frame,
    session_frame,
)
from channels.webchat.identity import read_identity
from sessions.customers import CustomerStore
from sessions.live import LiveFeed, LiveItem, Resync
from sessions.models import Conversation, ConversationEvent, Identity, InboundMessage, Message, StatusUpdate
from sessions.store import ConversationNotFound, ConversationStore

log = structlog.get_logger(__name__)

# Typing signals are ephemeral; one per interval is enough for "is typing..." on the other side.
TYPING_INTERVAL_SECONDS = 2.0

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_RESUME_TOKEN = re.compile(r"^[0-9a-f]{32}\.[A-Za-z0-9_-]{20,100}$")

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

    def origin_allowed(self, origin: str | None) -> bool:
        """Browsers always send Origin; a client without one is not a browser and cannot be hijacked."""
        if origin is None:
            return True
        return "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins

    @property
    def max_frame_bytes(self) -> int:
        # Room for the JSON around the longest allowed text, even when every character is escaped.
        return self.max_text_chars * 6 + 4096


def stream_id_key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


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
        self._sockets: set[web.WebSocketResponse] = set()

    async def close_all(self) -> None:
        """On shutdown: 1001 "going away" tells each widget to reconnect, to this or another instance."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not self.config.origin_allowed(origin):
            log.info("webchat.origin_refused", origin=origin)
            return web.json_response(
                {"code": "origin_not_allowed", "detail": f"Origin {origin} may not open a chat."}, status=403
            )
        token = request.query.get("token") or None
        after = request.query.get("after") or None
        if after is not None and not _STREAM_ID.match(after):
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
            await self._serve(request, ws, token, after)
        except ConnectionResetError:
            log.info("webchat.client_gone")
        except (RedisError, OSError) as exc:
            log.error("webchat.backend_unavailable", error=str(exc))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "error", "code": "unavailable",
                                    "detail": "The chat is briefly unavailable; reconnecting resumes it."})
                await ws.close(code=CLOSE_UNAVAILABLE)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _serve(
        self, request: web.Request, ws: web.WebSocketResponse, token: str | None, after: str | None
    ) -> None:
        if token is not None and not _RESUME_TOKEN.match(token):
            await self._refuse_token(ws)
            return
        resumed = token is not None
        new: Conversation | None = None
        if token is None:
            new, token = await self._open(request)
        conversation_id = token.partition(".")[0]
        structlog.contextvars.bind_contextvars(conversation_id=conversation_id)
        # Follow before reading history: anything appended in between arrives twice and is skipped by id,
        # rather than falling into a gap.
        async with self.live.follow(conversation_id) as feed:
            history: list[Message] = []
            if new is not None:
                conversation = new  # just created: nothing to read back
            else:
                try:
                    conversation, history = await self.store.resume(token, after)
                except ConversationNotFound:
                    await self._refuse_token(ws)
                    return
            await ws.send_json(session_frame(conversation, token, history))
            last_seen = history[-1].id if history else after
            log.info("webchat.connected", resumed=resumed, replayed=len(history))
            writer = _LiveWriter(ws, self.store, conversation.id, last_seen)
            pump = asyncio.create_task(writer.run(feed), name=f"webchat-writer-{conversation.id}")
            try:
                await self._read(ws, conversation)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        log.info("webchat.disconnected")

    async def _refuse_token(self, ws: web.WebSocketResponse) -> None:
        log.info("webchat.invalid_token")
        await ws.send_json({"type": "error", "code": "invalid_token",
                            "detail": "This conversation has ended or the token is not valid."})
        await ws.close(code=CLOSE_INVALID_TOKEN)

    async def _open(self, request: web.Request) -> tuple[Conversation, str]:
        claimed = read_identity(
            request.query.get("identity"), request.query.get("identity_sig"), self.config.identity_secret
        )
        external_id = claimed.profile.get("external_id")
        identity = Identity(channel=WebChatAdapter.name, address=external_id) if (
            claimed.verified and external_id
        ) else None
        customer = await self.customers.resolve(identity, claimed.profile, claimed.verified)
        created = await self.store.create(customer, WebChatAdapter.name)
        log.info("webchat.conversation_opened", customer_id=customer.id, verified=customer.verified)
        return created.conversation, created.resume_token

    async def _read(self, ws: web.WebSocketResponse, conversation: Conversation) -> None:
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
                try:
                    await self._receive(ws, conversation, frame)
                except ConversationNotFound:  # expired while the socket was open
                    await ws.send_json({"type": "error", "code": "conversation_ended",
                                        "client_id": frame.client_id,
                                        "detail": "This conversation has ended; a new one can be started."})
                    await ws.close(code=CLOSE_INVALID_TOKEN)
                    return
            elif isinstance(frame, TypingFrame):
                now = time.monotonic()
                if now - last_typing >= TYPING_INTERVAL_SECONDS:  # at most one signal per interval
                    last_typing = now
                    await self.store.signal(conversation.id, ConversationEvent(
                        type="typing", conversation_id=conversation.id, data={"sender": "customer"}))
            else:
                await ws.send_json({"type": "pong"})

    async def _receive(
        self, ws: web.WebSocketResponse, conversation: Conversation, frame: MessageFrame
    ) -> None:
        inbound = InboundMessage(
            conversation_id=conversation.id,
            channel=WebChatAdapter.name,
            text=frame.text,
            external_id=f"ws:{frame.client_id}",
            channel_metadata={"client_id": frame.client_id},
        )
        accepted = await self.sink.accept(inbound)
        await ws.send_json(ack_frame(frame.client_id, accepted.message.id))
        await self.sink.advance(accepted)


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
