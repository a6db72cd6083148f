"""``/ws/agent``: live events for an agent's console (offers, their conversations' messages and status).

The first frame must be ``{"type": "auth", "token": "hga_..."}`` (a browser cannot set headers on a
websocket, and a token in the URL would end up in access logs). While the socket is open the agent's
presence heartbeat is renewed, so closing the laptop lets presence expire and the desk hands their
conversations back. Redis stays the record: a console that reconnects re-reads state through the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from channels.webchat.frames import message_frame
from gateway import appkeys
from gateway.agent_api import queue_overview
from handoff.agents import HEARTBEAT_SECONDS, Agent, Presence
from handoff.desk import DeskError
from sessions.models import ConversationEvent, Message, utcnow

log = structlog.get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
QUEUES_SECONDS = 3.0
AUTH_SECONDS = 10.0
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
    if (
        origin is not None
        and "*" not in settings.allowed_origins
        and origin.rstrip("/") not in (settings.allowed_origins)
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
    agent = await _authenticate(app, ws)
    if agent is None:
        return
    structlog.contextvars.bind_contextvars(agent_id=agent.id)
    session = _AgentSession(app, ws, agent)
    try:
        await session.run()
    except (RedisError, OSError) as exc:
        log.warning("agent_socket.backend_unavailable", error=type(exc).__name__)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=4503, message=b"unavailable")
    finally:
        await session.stop()


async def _authenticate(app: web.Application, ws: web.WebSocketResponse) -> Agent | None:
    agent = None
    with contextlib.suppress(TimeoutError, ValueError, TypeError):
        raw = await ws.receive(timeout=AUTH_SECONDS)
        if raw.type is WSMsgType.TEXT:
            frame = json.loads(raw.data)
            if (
                isinstance(frame, dict)
                and frame.get("type") == "auth"
                and isinstance(frame.get("token"), str)
            ):
                agent = await app[appkeys.AGENTS].authenticate(frame["token"])
    if agent is None:
        await ws.send_json(
            {
                "type": "error",
                "code": "unauthorized",
                "detail": 'Send {"type": "auth", "token": "<your agent token>"} first.',
            }
        )
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
    return agent


class _AgentSession:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, agent: Agent) -> None:
        self.app = app
        self.ws = ws
        self.agent = agent
        self.tasks: set[asyncio.Task[None]] = set()
        self.following: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        agents = self.app[appkeys.AGENTS]
        state = await agents.state(self.agent.id)
        await self._write(
            {
                "type": "hello",
                "agent": self.agent.model_dump(mode="json"),
                "presence": state.model_dump(mode="json"),
            }
        )
        self._spawn(self._inbox())
        self._spawn(self._heartbeat())
        self._spawn(self._queues())
        desk = self.app[appkeys.DESK]
        held = await desk.redis.smembers(desk.keys.agent_conversations(desk.desk, self.agent.id))
        for member in held:
            self._follow(member.decode() if isinstance(member, bytes) else str(member))
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
            elif kind in ("follow", "typing") and isinstance(cid, str):
                await self._on_conversation_frame(kind, cid)
            else:
                await self._write({"type": "error", "code": "unknown_type",
                                   "detail": "Frames are ping, follow or typing; actions use the REST API."})

    async def _on_conversation_frame(self, kind: str, conversation_id: str) -> None:
        """Follow a conversation the agent may see; signal typing in one they hold."""
        desk = self.app[appkeys.DESK]
        try:
            conversation = await desk.conversation(conversation_id)
            desk.check_access(self.agent, conversation)
        except DeskError as exc:
            await self._write({"type": "error", "code": exc.code, "detail": exc.detail,
                               "conversation_id": conversation_id})
            return
        if kind == "follow":
            self._follow(conversation_id)
        elif conversation.agent == self.agent.id:
            await self.app[appkeys.STORE].signal(conversation_id, ConversationEvent(
                type="typing", conversation_id=conversation_id, data={"sender": "agent"}))

    async def stop(self) -> None:
        for task in [*self.tasks, *self.following.values()]:
            task.cancel()
        for task in [*self.tasks, *self.following.values()]:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self.tasks.add(task)

    def _follow(self, conversation_id: str) -> None:
        if conversation_id not in self.following:
            self.following[conversation_id] = asyncio.create_task(self._conversation(conversation_id))

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
                    task := self.following.pop(item.conversation_id, None)
                ):
                    task.cancel()

    async def _conversation(self, conversation_id: str) -> None:
        async with self.app[appkeys.LIVE].follow(conversation_id) as queue:
            while True:
                item = await queue.get()
                if isinstance(item, Message):
                    await self._write({**message_frame(item), "conversation_id": conversation_id})
                elif isinstance(item, ConversationEvent) and item.type == "delivery.failed":
                    await self._write({"type": "delivery_failed", "conversation_id": conversation_id,
                                       "message_id": item.data.get("message_id"),
                                       "detail": item.data.get("detail")})
                elif isinstance(item, ConversationEvent) and item.type == "typing":
                    if item.data.get("sender") == "customer":
                        await self._write({"type": "typing", "conversation_id": conversation_id,
                                           "sender": "customer"})
                elif isinstance(item, ConversationEvent) and isinstance(item.data.get("status"), dict):
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

    async def _queues(self) -> None:
        """Queue figures, pushed when they change (checked every few seconds)."""
        last: list[dict[str, Any]] | None = None
        while True:
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
