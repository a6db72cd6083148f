"""A web chat customer that keeps talking through faults, as the widget does: one message at a time, each
with its own client id, resent with the same id after a reconnect until it is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from typing import Any

import aiohttp

DROPPED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class Dropped(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            while (message := await ws.receive()).type not in DROPPED:
                pass
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data)
    return ws.close_code


class ChaosChat:
    def __init__(self, http: aiohttp.ClientSession, base: str, name: str) -> None:
        self.http = http
        self.base = base
        self.name = name
        self.token: str | None = None
        self.acked: dict[str, str] = {}  # client id -> message id
        self.pending: str | None = None  # sent, not acknowledged
        self.close_codes: list[int | None] = []
        self.errors: list[str] = []  # error frames' codes
        self.failures: list[str] = []  # client-side exceptions (a send on a socket the server closed)
        self.sessions = 0
        self._count = 0

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        params = {"token": self.token} if self.token else {}
        ws = await self.http.ws_connect(f"{self.base}/ws/chat", params=params, heartbeat=None)
        first = await self._receive(ws, 10)
        if first.get("type") != "session":  # refused (an error frame): the close with its code follows
            try:
                while True:
                    await self._receive(ws, 10)
            finally:
                await ws.close()
        if first.get("token"):  # a new chat has none until its first message (a later session frame)
            self.token = str(first["token"])
        self.sessions += 1
        return ws

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
        while True:
            message = await ws.receive(timeout=timeout)
            if message.type in DROPPED:
                code = message.data if message.type is aiohttp.WSMsgType.CLOSE else ws.close_code
                raise Dropped(code)
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame: dict[str, Any] = message.json()
            if frame.get("type") == "error":
                self.errors.append(str(frame.get("code")))
            if frame.get("type") == "session" and frame.get("token"):
                self.token = str(frame["token"])  # the first message opened the conversation
            return frame

    async def _send_one(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        if self.pending is None:
            self._count += 1
            self.pending = f"{self.name}-{self._count}-{uuid.uuid4().hex[:8]}"
        client_id = self.pending
        await ws.send_json({"type": "message", "text": f"how much is shipping ({self._count})",
                            "client_id": client_id})
        while True:
            frame = await self._receive(ws, timeout)
            if frame.get("type") == "ack" and frame.get("client_id") == client_id:
                self.acked[client_id] = str(frame["id"])
                self.pending = None
                return

    async def talk(self, stop: asyncio.Event, *, reconnect: bool, pause: float = 0.02,
                   ack_timeout: float = 20.0) -> None:
        """Send messages until ``stop``; with ``reconnect``, come back after every drop (0.1 s apart)."""
        while not stop.is_set():
            ws = None
            try:
                ws = await self._connect()
                while not stop.is_set():
                    await self._send_one(ws, ack_timeout)
                    await asyncio.sleep(pause)
            except Dropped as exc:
                self.close_codes.append(exc.code)
            except (aiohttp.ClientError, ConnectionError) as exc:
                # A send can fail on a socket the server just closed: its close frame says why.
                self.close_codes.append(None if ws is None else await _close_code(ws))
                self.failures.append(type(exc).__name__)
            finally:
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()
            if not reconnect:
                return
            await asyncio.sleep(0.1)

    async def finish(self) -> None:
        """Reconnect with the token and resend the unacknowledged message, if any, with its client id."""
        if self.pending is None:
            return
        ws = await self._connect()
        try:
            await self._send_one(ws, 20)
        finally:
            await ws.close()

    async def converse(self) -> None:
        """Resumed, the socket delivers live again: the echo of a new message comes through the live feed
        (the bot may answer too, or be silent once the conversation was handed off)."""
        if self.token is None:  # never got a session before the fault: it has nothing to resume
            return
        ws = await self.http.ws_connect(f"{self.base}/ws/chat", params={"token": str(self.token)})
        try:
            first = await self._receive(ws, 10)
            assert first["type"] == "session", first
            client_id = f"{self.name}-after"
            await ws.send_json({"type": "message", "text": "how much is shipping", "client_id": client_id})
            while True:
                frame = await self._receive(ws, 10)
                if frame.get("type") == "message" and frame.get("client_id") == client_id:
                    assert frame["sender"] == "customer"
                    return
        finally:
            await ws.close()

    async def history(self) -> list[dict[str, Any]]:
        if self.token is None:  # no conversation was confirmed before the fault: nothing was acknowledged
            assert not self.acked
            return []
        ws = await self.http.ws_connect(f"{self.base}/ws/chat", params={"token": str(self.token)})
        try:
            first: dict[str, Any] = await ws.receive_json(timeout=10)
        finally:
            await ws.close()
        assert first["type"] == "session", first
        return list(first["history"])

    async def stored_client_ids(self) -> Counter[str]:
        return Counter(m["client_id"] for m in await self.history() if m.get("client_id"))
