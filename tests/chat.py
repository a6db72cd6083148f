"""A small web chat client for tests: real websockets, frames as dicts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp


class ChatClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_frame: dict[str, Any]) -> None:
        self.ws = ws
        self.session = session_frame

    @property
    def token(self) -> str:
        return str(self.session["token"])

    @property
    def conversation_id(self) -> str:
        return str(self.session["conversation_id"])

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame; a later ``session`` frame (a new chat's first message opened its conversation)
        updates ``session``, as the widget does, and is not returned."""
        while True:
            frame: dict[str, Any] = await self.ws.receive_json(timeout=timeout)
            if frame.get("type") != "session":
                return frame
            self.session = frame

    async def recv_until(self, predicate: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Frames up to and including the first that matches."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                seen.append(frame)
                if predicate(frame):
                    return seen

    async def open(self, text: str, client_id: str | None = None) -> str:
        """A new chat's first message, which opens its conversation: returns the token as soon as the
        session frame carrying it arrives (the ack, echo and answer follow)."""
        assert self.session["token"] is None, "already open"
        await self.ws.send_json({"type": "message", "text": text, "client_id": client_id or uuid.uuid4().hex})
        while True:
            frame: dict[str, Any] = await self.ws.receive_json(timeout=5)
            if frame.get("type") == "session":
                self.session = frame
                return self.token
            raise AssertionError(f"expected the session frame first, got {frame}")

    async def say(self, text: str, client_id: str | None = None) -> dict[str, Any]:
        """Send a message; returns the bot's reply frame (frames before it are in ``last_frames``)."""
        client_id = client_id or uuid.uuid4().hex
        await self.ws.send_json({"type": "message", "text": text, "client_id": client_id})
        self.last_frames = await self.recv_until(lambda f: f.get("sender") == "bot")
        return self.last_frames[-1]

    async def send(self, text: str, client_id: str | None = None) -> list[dict[str, Any]]:
        """Send a message; returns the frames up to its ack and its echo (the bot may answer later, or never)."""
        client_id = client_id or uuid.uuid4().hex
        await self.ws.send_json({"type": "message", "text": text, "client_id": client_id})
        seen: set[str] = set()

        def done(frame: dict[str, Any]) -> bool:
            if frame.get("client_id") == client_id:
                seen.add(str(frame.get("type")))
            return seen == {"ack", "message"}

        return await self.recv_until(done)

    async def say_until_handoff(self, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send a message that should hand the conversation off; returns (system message, handoff frame)."""
        await self.ws.send_json({"type": "message", "text": text, "client_id": uuid.uuid4().hex})
        frames = await self.recv_until(lambda f: f.get("type") == "handoff")
        assert not [f for f in frames if f.get("sender") == "bot"], f"the bot answered a handoff: {frames}"
        notices = [f for f in frames if f.get("sender") == "system"]
        assert len(notices) == 1, frames
        return notices[0], frames[-1]

    async def assert_silent(self, seconds: float = 0.3, *, ignoring: Any = None) -> None:
        """No frame for ``seconds``, except those ``ignoring(frame)`` accepts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await self.ws.receive_json(timeout=left)
            except TimeoutError:
                return
            if ignoring is None or not ignoring(frame):
                raise AssertionError(f"unexpected frame {frame}")


async def connect(
    http: aiohttp.ClientSession, base: str, *, token: str | None = None, after: str | None = None,
    headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
) -> ChatClient:
    query = dict(params or {})
    if token:
        query["token"] = token
    if after:
        query["after"] = after
    ws = await http.ws_connect(f"{base}/ws/chat", params=query, headers=headers or {})
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "session", first
    return ChatClient(ws, first)
