"""Stoplight Prism serving Twilio's official OpenAPI description of its 2010 API, as a strict stand-in.

Prism answers a request Twilio would accept with an example response, and a request Twilio would reject
(a missing or unknown field, a wrong type) with 422, so the gateway's real outbound calls are checked
against Twilio's own contract. Installed with npm into .venv/prism on first use.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "contracts" / "twilio_api_v2010.json"
PRISM_DIR = ROOT / ".venv" / "prism"
PRISM = PRISM_DIR / "node_modules" / ".bin" / "prism"
VERSION = "@stoplight/prism-cli@5"


def install() -> Path | None:
    if PRISM.exists():
        return PRISM
    if shutil.which("npm") is None:
        return None
    PRISM_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--prefix", str(PRISM_DIR), "--no-audit", "--no-fund", "--silent", VERSION],
                   check=True, timeout=300)
    return PRISM if PRISM.exists() else None


async def serve(port: int) -> AsyncIterator[str]:
    prism = await asyncio.to_thread(install)
    if prism is None:
        if os.environ.get("REQUIRE_PRISM"):
            raise RuntimeError("REQUIRE_PRISM is set but npm is not available to install Prism")
        pytest.skip("Prism tests skipped: npm is not installed")
    process = await asyncio.create_subprocess_exec(
        str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(url) as response:
                        await response.read()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("Prism did not start")
        yield url
    finally:
        process.terminate()
        await process.wait()
