"""Shared fixtures: a real Redis (REDIS_URL, or a throwaway server on a free port) and real gateways.

Each test gets its own key namespace and deletes only its own keys, so a shared REDIS_URL is never flushed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from gateway import appkeys
from gateway.app import create_app
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.settings import Settings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_settings(redis_url: str, namespace: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "data_dir": tmp_path,
        "log_format": "json",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


GatewayFactory = Callable[..., Awaitable[str]]
# The voice channel's rig: a gateway with Twilio's voice side played by the emulator.
pytest_plugins = ["tests.voice_rig"]


@pytest.fixture
async def start_gateway(
    redis_url: str, namespace: str, tmp_path: Path, redis: Redis
) -> AsyncIterator[GatewayFactory]:
    """Starts real gateways on free ports (settings overridable per call); returns their base URL."""
    runners: list[web.AppRunner] = []

    async def start(clock: Callable[[], datetime] | None = None, **overrides: Any) -> str:
        """``clock`` fixes the time the handoff policy sees (business hours), as a deployment's clock would."""
        port = free_port()
        settings = make_settings(redis_url, namespace, tmp_path, port=port, **overrides)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if clock is not None:
            app[appkeys.PIPELINE].clock = clock
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> str:
    return await start_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


BotHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def bot_server() -> AsyncIterator[Callable[[BotHandler], Awaitable[str]]]:
    """A team's own bot service: a real HTTP server on loopback, recording what it receives."""
    runners: list[web.AppRunner] = []

    async def serve(handler: BotHandler) -> str:
        app = web.Application()
        app.router.add_post("/turn", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}/turn"

    yield serve
    for runner in runners:
        await runner.cleanup()
