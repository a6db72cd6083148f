"""Waiting for a gateway started in another process to answer /readyz."""

from __future__ import annotations

import asyncio

import aiohttp


async def wait_until_ready(http: aiohttp.ClientSession, base: str, seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return True
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    return False
