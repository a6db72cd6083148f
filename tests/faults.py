"""Real processes to break on purpose: a redis-server of the test's own, and gateways run by the CLI.

A test that kills or pauses Redis starts its own server (never the session's shared one), with an
append-only file fsynced on every write, so a restart keeps everything Redis acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.embedded_redis import find_redis_server, free_port
from tests.readiness import wait_until_ready


class RedisProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(  # same port and directory on every (re)start
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    async def started(self) -> None:
        self.start()
        await self.ping_until_up()

    async def ping_until_up(self, seconds: float = 10.0) -> None:
        client = Redis.from_url(self.url, socket_timeout=0.5)
        try:
            async with asyncio.timeout(seconds):
                while True:
                    try:
                        await client.ping()
                        return
                    except (RedisError, OSError):
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def gateway_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PORT", "HOST"}}
    # Every simulated customer connects from this one address: the per-address limit on new chats would
    # refuse all but the first few.
    env.update(DATA_DIR=str(data_dir), LOG_FORMAT="json", LOG_LEVEL="info",
               CHAT_NEW_CONVERSATIONS_PER_HOUR_PER_ADDRESS="100000", **extra)
    return env


class GatewayProcess:
    """``python -m gateway run`` on a fixed port (a restart comes back on the same one); its log to a file."""

    def __init__(self, data_dir: Path, log_name: str = "gateway", **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = gateway_env(data_dir, **env)
        self.log_path = data_dir / f"{log_name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, http: aiohttp.ClientSession, ready: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--port", str(self.port), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=self._log,
        )
        if ready and not await wait_until_ready(http, self.base, 20):
            raise AssertionError(f"gateway did not become ready:\n{self.log_path.read_text()[-3000:]}")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 20)
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode or 0)

    async def cleanup(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._log is not None:
            self._log.close()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def errors(self, allowed: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """ERROR lines (and anything logged with a traceback), except the events named in ``allowed``."""
        return [line for line in self.log_lines()
                if (line.get("level") in {"error", "critical"} or "exception" in line)
                and line.get("event") not in allowed]


async def readyz(http: aiohttp.ClientSession, base: str) -> int:
    try:
        async with http.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0
