"""Health, readiness, pages and JSON errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.embedded_redis import free_port
from tests.conftest import make_settings


async def test_health_and_readiness(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(f"{gateway}/readyz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"


async def test_not_ready_without_redis_but_alive(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    runner = web.AppRunner(create_app(make_settings(dead, "tdead", tmp_path, port=port)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200
        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
            body = await r.json()
            assert r.status == 503 and body["code"] == "redis_unreachable"
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws/chat")
        pending = await ws.receive_json(timeout=5)  # a new chat needs no Redis until its first message
        assert pending["type"] == "session" and pending["token"] is None
        await ws.send_json({"type": "message", "text": "hello", "client_id": "c-1"})
        error = await ws.receive_json(timeout=5)
        assert error["code"] == "unavailable"
        await ws.close()
    finally:
        await runner.cleanup()


async def test_demo_page_embeds_the_widget(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/") as r:
        page = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
    assert 'src="/widget.js"' in page
    async with http.get(f"{gateway}/widget.js") as r:
        assert r.content_type == "application/javascript" and "HandoffWidget" in await r.text()


async def test_signed_in_demo_page_signs_its_customer(start_gateway: Any, http: aiohttp.ClientSession) -> None:
    base = await start_gateway(identity_secret="demo-secret")
    async with http.get(f"{base}/?signed_in=1") as r:
        page = await r.text()
    assert "identitySignature" in page and "cust-1001" in page


async def test_unknown_path_and_method_are_json_errors(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/nope") as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"
    async with http.post(f"{gateway}/healthz") as r:
        assert r.status == 405 and (await r.json())["code"] == "method_not_allowed"
        assert "GET" in r.headers["Allow"]
