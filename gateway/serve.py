"""Serving the app on a TCP port, with deadlines for clients that connect and then stall.

aiohttp closes a connection that sits idle for ``keepalive_timeout`` (the clock starts when it connects and
after each response, and a request whose headers are still incomplete when it rings counts as idle), but it
has no separate deadline for a request's headers: with the keep-alive at 75 seconds, a client that sends
half a request line holds its connection, a file descriptor and a little memory for 75 seconds, and a few
hundred such clients per second add up. ``HeaderDeadline`` closes a connection that has not delivered a whole
request head within ``HTTP_HEADER_TIMEOUT_SECONDS`` of connecting. It uses only aiohttp's public surface: the
server's ``connections``, its ``request_factory`` (called once a request's headers are parsed) and the
handler's ``force_close()``. A later request on a kept-alive connection is bounded by the keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.settings import Settings


class HeaderDeadline:
    """Closes each connection of ``server`` that has not sent a whole request head ``timeout`` seconds after
    it was first seen; checked every ``timeout / 4`` seconds (at most one second), so a stalled client goes
    within ``1.25 * timeout``."""

    def __init__(self, server: web.Server, timeout: float) -> None:
        self._server = server
        self._timeout = timeout
        self._first_seen: dict[RequestHandler, float] = {}
        self._spoke: set[RequestHandler] = set()
        make_request = server.request_factory

        def request_factory(
            message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler,
            writer: AbstractStreamWriter, task: asyncio.Task[None],
        ) -> web.BaseRequest:
            self._spoke.add(protocol)
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = request_factory

    def sweep(self, now: float) -> int:
        """Close the connections past their deadline; returns how many were closed."""
        connections = self._server.connections
        live = set(connections)
        self._spoke &= live
        self._first_seen = {h: t for h, t in self._first_seen.items() if h in live and h not in self._spoke}
        closed = 0
        for handler in connections:
            if handler in self._spoke:
                continue
            first = self._first_seen.setdefault(handler, now)
            if now - first >= self._timeout:
                handler.force_close()
                del self._first_seen[handler]
                closed += 1
        return closed

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(1.0, self._timeout / 4)
        while True:
            self.sweep(loop.time())
            await asyncio.sleep(interval)


async def serve(app: web.Application, settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then shut down as ``web.run_app`` does (open requests get
    their time, websockets are closed by the app's shutdown hooks)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.http_keepalive_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        assert runner.server is not None  # set by setup()
        deadline = HeaderDeadline(runner.server, settings.http_header_timeout_seconds)
        await web.TCPSite(runner, host, port).start()
        sweeper = asyncio.create_task(deadline.run())
        await stop.wait()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    finally:
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
