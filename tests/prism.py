"""Stoplight Prism serving Twilio's official OpenAPI description of its 2010 API, as a strict stand-in.

Prism answers a request Twilio would accept with an example response, and a request Twilio would reject
(a missing or unknown field, a wrong type) with 422, so the gateway's real outbound calls are checked
against Twilio's own contract. Installed with npm into .venv/prism on first use.

Prism is given a patched copy of the spec, written to a temporary file at start-up (see `patched_spec`).
The committed spec stays byte for byte what Twilio publishes, so refreshing it is a plain copy and the
one change we make lives here as reviewable code that is applied again to every new copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


FORM = "application/x-www-form-urlencoded"


def patched_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Declare every array-typed form field as repeated keys (`StatusCallbackEvent=a&StatusCallbackEvent=b`).

    Twilio's spec gives those request bodies no `encoding`, and Prism then answers 422 "must be array"
    however the field is sent, even though repeated keys are what Twilio itself expects and what the twilio
    package sends. `style: form, explode: true` is OpenAPI's name for exactly that.
    """
    for item in spec["paths"].values():
        for operation in item.values():
            media = (operation.get("requestBody", {}).get("content", {}).get(FORM)
                     if isinstance(operation, dict) else None)
            if not media:
                continue
            arrays = [name for name, field in media.get("schema", {}).get("properties", {}).items()
                      if field.get("type") == "array"]
            for name in arrays:
                media.setdefault("encoding", {}).setdefault(name, {"style": "form", "explode": True})
    return spec


def write_patched_spec(directory: Path) -> Path:
    path = directory / SPEC.name
    path.write_text(json.dumps(patched_spec(json.loads(SPEC.read_text()))))
    return path


async def serve(port: int) -> AsyncIterator[str]:
    prism = await asyncio.to_thread(install)
    if prism is None:
        if os.environ.get("REQUIRE_PRISM"):
            raise RuntimeError("REQUIRE_PRISM is set but npm is not available to install Prism")
        pytest.skip("Prism tests skipped: npm is not installed")
    with tempfile.TemporaryDirectory(prefix="prism-spec-") as workdir:
        spec = await asyncio.to_thread(write_patched_spec, Path(workdir))
        process = await asyncio.create_subprocess_exec(
            str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec),
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
