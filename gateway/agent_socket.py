"""``/ws/agent``: live events for an agent's console (offers, their conversations' messages and status).

The first frame must be ``{"type": "auth", "token": "hga_..."}`` (a browser cannot set headers on a
websocket, and a token in the URL would end up in access logs). While the socket is open the agent's
presence heartbeat is renewed, so closing the laptop lets presence expire and the desk hands their
conversations back. Redis stays the record: a console that reconnects re-reads state through the REST API,
and ``{"type": "follow", "conversation_id": ..., "after": <last message id seen>}`` replays what it missed.

Every frame about a conversation passes the same rule as ``GET /api/conversations/{id}``
(``Desk.check_access``) when it is sent. The rule is re-checked when the conversation's state can have
changed, which its own live stream says (a stored event, a system notice written in the same step, a
resync), not on every frame; a follower who loses access gets ``unfollowed`` and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from channels.webchat.access import is_own_origin
from channels.webchat.frames import message_frame
from gateway import appkeys
from gateway.agent_api import queue_overview
from handoff.agents import HEARTBEAT_SECONDS, SIGNED_OUT_EVENT, Agent, Presence, hash_token
from handoff.desk import DeskError
from sessions.live import Resync
from sessions.models import ConversationEvent, Message, SenderKind, utcnow

log = structlog.get_logger(__name__)

# Private close codes (4000-4999) the console acts on: 4401 means signed out (a bad token at "auth", or the
# agent removed or their token revoked while connected): do not reconnect with the same token.
CLOSE_UNAUTHORIZED = 4401
_SIGNED_OUT = {
    "agent_removed": "Signed out: this agent was removed.",
    "token_revoked": "Signed out: this agent's token was revoked.",
}
QUEUES_SECONDS = 3.0
AUTH_SECONDS = 10.0
# Held conversations are followed before "hello", so nothing appended after it is missed; a slow Redis
# must not hold the socket up for longer than this.
READY_SECONDS = 5.0
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Live-only events: passed on as they are; any other event on a conversation's stream is a stored step
# that may have changed who can see it.
_EPHEMERAL = frozenset({"typing", "delivery.failed"})
_INBOX_FRAMES = {
    "desk.offered": "offer",
    "desk.offer_withdrawn": "offer_withdrawn",
    "desk.assigned": "assigned",
    "desk.released": "released",
}


async def handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    origin = request.headers.get("Origin")
    public = str(settings.public_url).rstrip("/") if settings.public_url else None
    if (
        origin is not None
        and "*" not in settings.allowed_origins
        and origin.rstrip("/") not in settings.allowed_origins
        # The console is the gateway's own page: its origin is allowed on whatever port it is served.
        and not is_own_origin(origin.rstrip("/"), request.host, public)
    ):
        return web.json_response(
            {"code": "origin_not_allowed", "detail": f"Origin {origin} may not connect."}, status=403
        )
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
    await ws.prepare(request)
    sockets = app[appkeys.AGENT_SOCKETS]
    sockets.add(ws)
    try:
        await _serve(app, ws)
    finally:
        sockets.discard(ws)
    return ws


async def close_all(app: web.Application) -> None:
    """On shutdown: 1001 "going away" tells consoles to reconnect, to this or another instance."""
    sockets = app[appkeys.AGENT_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


async def _serve(app: web.Application, ws: web.WebSocketResponse) -> None:
    signed_in = await _authenticate(app, ws)
    if signed_in is None:
        return
    agent, token_hash = signed_in
    structlog.contextvars.bind_contextvars(agent_id=agent.id)
    session = _AgentSession(app, ws, agent, token_hash)
    try:
        await session.run()
    except (RedisError, OSError) as exc:
        log.warning("agent_socket.backend_unavailable", error=type(exc).__name__)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=4503, message=b"unavailable")
    finally:
        await session.stop()


async def _authenticate(app: web.Application, ws: web.WebSocketResponse) -> tuple[Agent, str] | None:
    """The agent and their token's hash (kept to re-check the sign-in, never the token itself)."""
    agent = None
    token = ""
    with contextlib.suppress(TimeoutError, ValueError, TypeError):
        raw = await ws.receive(timeout=AUTH_SECONDS)
        if raw.type is WSMsgType.TEXT:
            frame = json.loads(raw.data)
            if (
                isinstance(frame, dict)
                and frame.get("type") == "auth"
                and isinstance(frame.get("token"), str)
            ):
                token = frame["token"]
                agent = await app[appkeys.AGENTS].authenticate(token)
    if agent is None:
        await ws.send_json(
            {
                "type": "error",
                "code": "unauthorized",
                "detail": 'Send {"type": "auth", "token": "<your agent token>"} first.',
            }
        )
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
        return None
    return agent, hash_token(token)


def _id_key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A follow that failed (Redis went away) ends quietly here; the console's resync catches up."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("agent_socket.follow_failed", error=type(exc).__name__)


@dataclass(eq=False, slots=True)
class _Following:
    """One conversation followed on one socket: the last message id it sent, so each is sent once."""

    task: asyncio.Task[None] | None = None
    last_seen: str | None = None
    ready: asyncio.Event | None = None


class _AgentSession:
    def __init__(
        self, app: web.Application, ws: web.WebSocketResponse, agent: Agent, token_hash: str
    ) -> None:
        self.app = app
        self.ws = ws
        self.agent = agent
        self.token_hash = token_hash
        # Set (with the reason) when the sign-in ends; run() then stops reading and closes the socket itself:
        # aiohttp drops the connection without the closing handshake when another task closes it mid-read.
        self.signed_out = asyncio.Event()
        self.signed_out_reason = ""
        self.tasks: set[asyncio.Task[None]] = set()
        self.following: dict[str, _Following] = {}

    async def run(self) -> None:
        agents = self.app[appkeys.AGENTS]
        desk = self.app[appkeys.DESK]
        self._spawn(self._control())
        held = await desk.redis.smembers(desk.keys.agent_conversations(desk.desk, self.agent.id))
        held_ids = sorted(member.decode() if isinstance(member, bytes) else str(member) for member in held)
        # Follow what the agent holds before saying hello: a message appended after "hello" cannot be missed.
        ready = [self._follow(cid) for cid in held_ids]
        if ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_SECONDS):
                    await asyncio.gather(*(event.wait() for event in ready))
        state = await agents.state(self.agent.id)
        await self._write(
            {
                "type": "hello",
                "agent": self.agent.model_dump(mode="json"),
                "presence": state.model_dump(mode="json"),
                "following": [cid for cid in held_ids if cid in self.following],
            }
        )
        self._spawn(self._inbox())
        self._spawn(self._heartbeat())
        self._spawn(self._queues())
        reader = asyncio.create_task(self._read())
        signed_out = asyncio.create_task(self.signed_out.wait())
        try:
            await asyncio.wait({reader, signed_out}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, signed_out):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signed_out
        if not self.signed_out.is_set():
            await reader  # the client left, or reading failed: raise what it raised
            return
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=CLOSE_UNAUTHORIZED, message=self.signed_out_reason.encode())

    async def _read(self) -> None:
        async for raw in self.ws:
            if raw.type is not WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(raw.data)
            except ValueError:
                frame = None
            kind = frame.get("type") if isinstance(frame, dict) else None
            cid = frame.get("conversation_id") if isinstance(frame, dict) else None
            if kind == "ping":
                await self._write({"type": "pong"})
            elif kind == "follow" and isinstance(cid, str):
                assert isinstance(frame, dict)
                await self._on_follow(cid, frame.get("after"))
            elif kind == "typing" and isinstance(cid, str):
                await self._on_typing(cid)
            else:
                await self._write({"type": "error", "code": "unknown_type",
                                   "detail": "Frames are ping, follow or typing; actions use the REST API."})

    async def _on_follow(self, conversation_id: str, after: Any) -> None:
        """Follow a conversation the agent may see, from ``after`` (a message id) when given, else from now.

        Following one already followed starts over from ``after`` (or from what this socket last sent), so a
        console that reconnects gets what it missed."""
        if after is not None and not (isinstance(after, str) and _STREAM_ID.match(after)):
            await self._write({"type": "error", "code": "invalid_after", "conversation_id": conversation_id,
                               "detail": "'after' must be a message id such as 1700000000000-0."})
            return
        previous = self.following.pop(conversation_id, None)
        if previous is not None and previous.task is not None:
            previous.task.cancel()
            after = after or previous.last_seen
        self._follow(conversation_id, after, explicit=True)

    async def _on_typing(self, conversation_id: str) -> None:
        """Tell the customer the agent is typing, in a conversation the agent holds."""
        desk = self.app[appkeys.DESK]
        try:
            conversation = await desk.conversation(conversation_id)
            desk.check_access(self.agent, conversation)
        except DeskError as exc:
            await self._write({"type": "error", "code": exc.code, "detail": exc.detail,
                               "conversation_id": conversation_id})
            return
        if conversation.agent == self.agent.id:
            await self.app[appkeys.STORE].signal(conversation_id, ConversationEvent(
                type="typing", conversation_id=conversation_id, data={"sender": "agent"}))

    async def stop(self) -> None:
        tasks = [*self.tasks, *(f.task for f in self.following.values() if f.task is not None)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self.tasks.add(task)

    def _follow(
        self, conversation_id: str, after: str | None = None, *, explicit: bool = False
    ) -> asyncio.Event:
        """Start following (unless already); the event is set once the follow is live (or has failed)."""
        current = self.following.get(conversation_id)
        if current is not None and current.ready is not None:
            return current.ready
        following = _Following(last_seen=after, ready=asyncio.Event())
        following.task = asyncio.create_task(self._conversation(conversation_id, following, explicit))
        following.task.add_done_callback(_log_failure)
        self.following[conversation_id] = following
        assert following.ready is not None
        return following.ready

    def _unfollow(self, conversation_id: str, following: _Following) -> None:
        if self.following.get(conversation_id) is following:
            del self.following[conversation_id]

    async def _inbox(self) -> None:
        desk = self.app[appkeys.DESK]
        async with self.app[appkeys.LIVE].follow_channel(
            desk.keys.agent_inbox(desk.desk, self.agent.id)
        ) as queue:
            while True:
                item = await queue.get()
                if not isinstance(item, ConversationEvent) or item.type not in _INBOX_FRAMES:
                    continue
                await self._write(
                    {"type": _INBOX_FRAMES[item.type], "conversation_id": item.conversation_id, **item.data}
                )
                if item.type == "desk.assigned":
                    self._follow(item.conversation_id)
                elif item.type == "desk.released" and (
                    following := self.following.pop(item.conversation_id, None)
                ) and following.task is not None:
                    following.task.cancel()

    async def _conversation(self, conversation_id: str, following: _Following, explicit: bool) -> None:
        """Subscribe first, then read: whatever is appended in between arrives twice and is skipped by id,
        rather than falling into a gap (the web chat socket's guarantee)."""
        assert following.ready is not None
        try:
            async with self.app[appkeys.LIVE].follow(conversation_id) as queue:
                backlog = await self._catch_up(conversation_id, following, refused="error")
                following.ready.set()
                if backlog is None:
                    return
                if explicit:
                    await self._write({"type": "following", "conversation_id": conversation_id,
                                       "last_id": following.last_seen})
                for message in backlog:
                    await self._send_message(conversation_id, following, message)
                await self._pump(conversation_id, following, queue)
        finally:
            following.ready.set()
            self._unfollow(conversation_id, following)

    async def _catch_up(
        self, conversation_id: str, following: _Following, *, refused: str
    ) -> list[Message] | None:
        """Check access and read what came after the last id sent; None (and a frame saying why) when the
        agent may no longer see the conversation. A first follow that is refused answers ``error``."""
        desk = self.app[appkeys.DESK]
        after = following.last_seen
        try:
            conversation, backlog, newest = await desk.follow_view(conversation_id, after)
            desk.check_access(self.agent, conversation)
        except DeskError as exc:
            await self._write({"type": refused, "conversation_id": conversation_id, "code": exc.code,
                               "detail": exc.detail})
            return None
        if after is None:
            following.last_seen = newest  # from now: nothing older is sent
        return backlog

    async def _pump(
        self, conversation_id: str, following: _Following, queue: asyncio.Queue[Any]
    ) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Message):
                # A system notice is written in the same step as a state change (an agent joined, a
                # transfer) and published just before its event: check who may see it first.
                if item.sender is SenderKind.SYSTEM and not await self._still_allowed(conversation_id):
                    return
                await self._send_message(conversation_id, following, item)
            elif isinstance(item, Resync):
                backlog = await self._catch_up(conversation_id, following, refused="unfollowed")
                if backlog is None:
                    return
                for message in backlog:
                    await self._send_message(conversation_id, following, message)
                await self._write({"type": "resync", "conversation_id": conversation_id})
            elif isinstance(item, ConversationEvent):
                if item.type not in _EPHEMERAL and not await self._still_allowed(conversation_id):
                    return
                await self._send_event(conversation_id, item)

    async def _still_allowed(self, conversation_id: str) -> bool:
        desk = self.app[appkeys.DESK]
        try:
            desk.check_access(self.agent, await desk.conversation(conversation_id))
        except DeskError as exc:
            await self._write({"type": "unfollowed", "conversation_id": conversation_id, "code": exc.code,
                               "detail": exc.detail})
            return False
        return True

    async def _send_message(self, conversation_id: str, following: _Following, message: Message) -> None:
        if following.last_seen is not None and _id_key(message.id) <= _id_key(following.last_seen):
            return
        following.last_seen = message.id
        await self._write({**message_frame(message), "conversation_id": conversation_id})

    async def _send_event(self, conversation_id: str, item: ConversationEvent) -> None:
        if item.type == "delivery.failed":
            await self._write({"type": "delivery_failed", "conversation_id": conversation_id,
                               "message_id": item.data.get("message_id"),
                               "detail": item.data.get("detail")})
        elif item.type == "typing":
            if item.data.get("sender") == "customer":
                await self._write({"type": "typing", "conversation_id": conversation_id,
                                   "sender": "customer"})
        elif isinstance(item.data.get("status"), dict):
            await self._write(
                {
                    "type": "status",
                    "conversation_id": conversation_id,
                    "event": item.type,
                    **item.data["status"],
                }
            )
        else:
            await self._write({"type": "resync", "conversation_id": conversation_id})

    async def _control(self) -> None:
        """Sign-in changes published by any instance (an agent removed): re-check this socket's own."""
        desk = self.app[appkeys.DESK]
        async with self.app[appkeys.LIVE].follow_channel(desk.keys.agent_control(desk.desk)) as queue:
            while True:
                item = await queue.get()
                concerns_us = isinstance(item, Resync) or (
                    isinstance(item, ConversationEvent)
                    and item.type == SIGNED_OUT_EVENT
                    and item.data.get("agent_id") == self.agent.id
                )
                if concerns_us and not await self._check_sign_in():
                    return

    async def _check_sign_in(self) -> bool:
        """Close the socket (4401, after a ``signed_out`` frame) once its token no longer signs anyone in."""
        reason = await self.app[appkeys.AGENTS].sign_in_ended(self.agent.id, self.token_hash)
        if reason is None:
            return True
        log.info("agent_socket.signed_out", reason=reason)
        if not self.signed_out.is_set():
            await self._write({"type": "signed_out", "code": reason, "detail": _SIGNED_OUT[reason]})
            self.signed_out_reason = reason
            self.signed_out.set()
        return False

    async def _queues(self) -> None:
        """Queue figures, pushed when they change (checked every few seconds). The same beat re-checks the
        sign-in, so a removal whose publish was missed still closes the socket within seconds."""
        last: list[dict[str, Any]] | None = None
        while True:
            if not await self._check_sign_in():
                return
            overview = await queue_overview(self.app, self.agent)
            comparable = [{k: v for k, v in q.items() if k != "oldest_wait_seconds"} for q in overview]
            if comparable != last:
                last = comparable
                await self._write({"type": "queues", "queues": overview})
            await asyncio.sleep(QUEUES_SECONDS)

    async def _heartbeat(self) -> None:
        """An open console keeps the agent's presence alive; it never changes the status itself."""
        agents = self.app[appkeys.AGENTS]
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS / 3)
            state = await agents.state(self.agent.id)
            if state.status is not Presence.OFFLINE:
                await agents.set_presence(self.agent.id, state.status, None, utcnow())

    async def _write(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(frame))
