"""The gateway's edge against hostile or careless clients and hosts: real gateway processes and raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis

from gateway.demo_twilio import DEMO_AUTH_TOKEN
from gateway.embedded_redis import EmbeddedRedis, free_port
from tests.test_process import cli_env, run_gateway  # noqa: F401 - the fixture

SLOW_CLIENTS = 150


async def _open(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    return await asyncio.open_connection(url.hostname, url.port)


async def test_clients_that_never_finish_their_headers_are_closed(
    tmp_path: Path, run_gateway: Any, http: aiohttp.ClientSession  # noqa: F811
) -> None:
    running = await run_gateway(tmp_path, HTTP_HEADER_TIMEOUT_SECONDS="1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    clients = [await _open(running.base) for _ in range(SLOW_CLIENTS)]
    for _, writer in clients:
        writer.write(b"GET /healthz HTT")
        await writer.drain()

    async with http.get(f"{running.base}/healthz") as r:  # the gateway still answers meanwhile
        assert r.status == 200

    async def closed_after(reader: asyncio.StreamReader) -> float:
        assert await reader.read() == b""  # EOF: the server closed it, without a response
        return loop.time() - started

    try:
        waited = await asyncio.wait_for(asyncio.gather(*(closed_after(r) for r, _ in clients)), 10)
    finally:
        for _, writer in clients:
            writer.close()
    assert min(waited) >= 0.9 and max(waited) <= 4
    async with http.get(f"{running.base}/healthz") as r:
        assert r.status == 200


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive(
    tmp_path: Path, run_gateway: Any  # noqa: F811
) -> None:
    running = await run_gateway(tmp_path, HTTP_KEEPALIVE_SECONDS="1", HTTP_HEADER_TIMEOUT_SECONDS="30")
    reader, writer = await _open(running.base)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    # A connection that spoke once is no longer the header deadline's: only the keep-alive closes it.
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


def _modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in [root, *root.rglob("*")]}


def test_the_embedded_redis_keeps_its_data_dir_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_umask = os.umask(0o022)  # a common default: new files 0644, directories 0755
    try:
        data.mkdir()
        (data / "redis.log").write_text("an earlier run's log\n")  # 0644, as an earlier version left it
        with EmbeddedRedis(data, persistent=True) as server, redis.Redis.from_url(server.url) as client:
            client.rpush("transcript", "my card number is 4111 1111 1111 1111")
            client.bgrewriteaof()  # the rewrite creates new files too
            for _ in range(100):
                if client.info("persistence")["aof_rewrite_in_progress"] == 0:
                    break
                time.sleep(0.05)
            modes = _modes(data)
    finally:
        os.umask(old_umask)
    assert {"appendonly.aof", "redis.json", "redis.log"} <= set(modes)
    assert modes.pop(".") == "0o700"
    assert modes == dict.fromkeys(modes, "0o600")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([], {"HOST": "0.0.0.0"}),
        (["--host", "0.0.0.0"], {}),
        (["--host", "::"], {}),
        (["--host", "gateway.example.com"], {}),
        ([], {"HOST": "0.0.0.0", "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN, "DEMO_TWILIO": "0"}),
    ],
)
def test_the_demo_twilio_token_is_refused_off_loopback(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    run_env = cli_env(tmp_path, **{"DEMO_TWILIO": "1", "PORT": str(free_port()), **env})
    result = subprocess.run([sys.executable, "-m", "gateway", "run", *args], env=run_env,
                            capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("handoff-gateway: DEMO_TWILIO=1 " if env.get("DEMO_TWILIO") != "0" else
                           "handoff-gateway: TWILIO_AUTH_TOKEN (the simulator's demo token) ")
    assert "signs Twilio webhooks with a published token, so it only listens on loopback" in line
    assert "HOST=127.0.0.1" in line and "TWILIO_AUTH_TOKEN and PUBLIC_URL" in line
    assert not (tmp_path / "redis.json").exists()  # refused before anything started


GOOD_ID = "req-2026.11_30-abc"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
HOSTILE_IDS = [
    'x" onmouseover="alert(1)" data-x="y',
    "a" * 500,
    "short",
    "id with spaces and 'quotes'",
    "\x1b[31mred-terminal\x1b[0m",
]


async def _request_id_answered(base: str, raw_value: bytes) -> bytes | None:
    """GET /healthz with ``raw_value`` sent as the X-Request-Id header's bytes, as is."""
    reader, writer = await _open(base)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Request-Id: " + raw_value
                     + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    found = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
             if line.lower().startswith(b"x-request-id:")]
    return found[0] if found else None


async def test_a_client_request_id_is_kept_only_when_it_is_plainly_an_id(
    tmp_path: Path, run_gateway: Any, http: aiohttp.ClientSession  # noqa: F811
) -> None:
    running = await run_gateway(tmp_path)
    assert await _request_id_answered(running.base, GOOD_ID.encode()) == GOOD_ID.encode()
    for hostile in [*(value.encode() for value in HOSTILE_IDS),
                    b"evil-request-id\r\n injected: folded",  # an obsolete folded header line
                    b"evil-request-id\nX-Injected: 1"]:
        answered = await _request_id_answered(running.base, hostile)
        assert answered is None or GENERATED_ID.fullmatch(answered.decode()), (hostile, answered)

    # A websocket's log lines (message.accepted, bot.replied) carry the request id of its upgrade request.
    for value in [GOOD_ID, *HOSTILE_IDS[:4]]:
        async with http.ws_connect(f"{running.base}/ws/chat", headers={"X-Request-Id": value}) as ws:
            await ws.receive_json(timeout=5)
            await ws.send_json({"type": "message", "text": "where is my order", "client_id": "c1"})
            while (await ws.receive_json(timeout=5)).get("sender") != "bot":
                pass

    logs = await running.stop()
    # aiohttp itself answers 400 to the values its parser refuses (control characters, folded lines), and logs
    # them in its own plain-text lines; the gateway's lines are JSON.
    ids = {json.loads(line).get("request_id") for line in logs.splitlines() if line.startswith("{")} - {None}
    assert GOOD_ID in ids
    assert all(i == GOOD_ID or GENERATED_ID.fullmatch(i) for i in ids), ids
    for hostile in HOSTILE_IDS:
        assert hostile[:16] not in logs


async def test_pages_and_scripts_carry_security_headers(gateway: str, http: aiohttp.ClientSession) -> None:
    for path in ["/", "/?signed_in=1", "/console"]:
        async with http.get(f"{gateway}{path}") as r:
            page, headers = await r.text(), r.headers
        policy = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'", path
        assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'", path
        assert "unsafe" not in headers["Content-Security-Policy"], path
        assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        # Nothing inline that the policy would block.
        assert not re.search(r"<style|\sstyle=|<script>|\son[a-z]+=", page), path

    async with http.get(f"{gateway}/widget.js", headers={"Origin": "https://shop.example"}) as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Access-Control-Allow-Origin"] == "*"  # loaded by other sites' pages
        assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        assert "X-Frame-Options" not in r.headers and "Content-Security-Policy" not in r.headers
    for path, kind in [("/console.js", "application/javascript"), ("/console.css", "text/css"),
                       ("/shop.css", "text/css")]:
        async with http.get(f"{gateway}{path}") as r:
            assert r.status == 200 and r.content_type == kind, path
            assert r.headers["X-Content-Type-Options"] == "nosniff", path
