"""Signing out: removing an agent (or revoking their token) closes their open sockets on every instance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis.asyncio import Redis

from handoff.agents import AgentStore, hash_token
from sessions.keys import Keys
from tests.test_agent_socket import agent_socket

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


async def closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """The frames before the server closed the socket; fails unless it closes within ``seconds``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        while True:
            raw = await ws.receive()
            if raw.type is aiohttp.WSMsgType.TEXT:
                seen.append(raw.json())
            elif raw.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return seen


async def test_removing_an_agent_closes_their_sockets_on_every_instance(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    first = await start_gateway(clock=lambda: FRIDAY_MORNING)
    second = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    alex, token = await agents.add("Alex", ["billing"], ["en"], [])
    sockets = [await agent_socket(http, base, token) for base in (first, second, second)]

    await agents.remove(alex)
    for ws in sockets:
        before_close = await closed_within(ws, 1.0)
        assert ws.close_code == 4401
        signed_out = [f for f in before_close if f["type"] == "signed_out"]
        assert [f["code"] for f in signed_out] == ["agent_removed"], before_close


async def test_a_revoked_token_is_caught_by_the_sockets_own_checks_when_no_one_says_so(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """The publish can be missed (a dropped subscription): each socket's periodic work checks its token too."""
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    _, token = await agents.add("Alex", ["billing"], ["en"], [])
    ws = await agent_socket(http, base, token)

    await redis.hdel(Keys(namespace).agent_tokens("main"), hash_token(token))  # revoked, nobody told
    before_close = await closed_within(ws, 5.0)
    assert ws.close_code == 4401
    assert [f["code"] for f in before_close if f["type"] == "signed_out"] == ["token_revoked"]
