"""Redis calls made in the same event-loop turn go out together, as one pipeline.

Under load many conversations' steps are in flight at once, and a redis-py call costs the client far more
CPU than Redis spends on the command: taking a pooled connection, its retry and observability wrappers,
one socket write and one wake-up per reply. Calls that reach the batcher in the same loop turn share all of
that: one connection, one write, one read loop (tests/bench/README.md has the figures). A lone call goes out
at the end of the turn it was made in, so nothing ever waits for company and no timer is involved.

Each caller still gets its own result or its own error. Scripts are sent as EVALSHA; a server that lost
them (a restart, SCRIPT FLUSH) answers NOSCRIPT without running anything, so those are loaded and sent once
more.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError

log = structlog.get_logger(__name__)

MAX_BATCH = 128
_SHUTTING_DOWN = "the gateway is shutting down"


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    script: AsyncScript | None
    future: asyncio.Future[Any]


class RedisBatcher:
    def __init__(self, redis: Redis, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._closed = False
        self.batches = 0  # how many pipelines were sent, for the benchmarks
        self.calls = 0

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """One Redis command, e.g. ``await command("ZADD", key, score, member)``. Queued when called, so
        calls made one after another without awaiting in between are certain to share a pipeline."""
        return self._submit(args, None)

    def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """One registered script's call, with the same keys and arguments as ``script(keys=, args=)``."""
        return self._submit(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def _submit(self, args: tuple[Any, ...], script: AsyncScript | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        call = _Call(args, script, loop.create_future())
        if self._closed:
            call.future.set_exception(RedisConnectionError(_SHUTTING_DOWN))
            return call.future
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(call)
        return call.future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_batch):
            batch = pending[start:start + self.max_batch]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
            task.add_done_callback(functools.partial(_settle, batch))  # even one cancelled before it ran

    async def _send(self, batch: list[_Call], *, reloaded: bool = False) -> None:
        """Send ``batch``; whatever happens, every caller in it gets an answer or an error."""
        try:
            await self._send_once(batch, reloaded=reloaded)
        except BaseException as exc:  # the connection failed, or we are shutting down
            failure = exc if isinstance(exc, Exception) else RedisConnectionError(_SHUTTING_DOWN)
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise

    async def _send_once(self, batch: list[_Call], *, reloaded: bool) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.execute_command(*call.args)
                results = await pipe.execute(raise_on_error=False)
        except DataError:
            if len(batch) == 1:
                raise
            # A call redis-py cannot encode (nothing was sent): each on its own, so only that one fails.
            await asyncio.gather(*(self._send([call], reloaded=reloaded) for call in batch))
            return
        missing: list[_Call] = []
        for call, result in zip(batch, results, strict=True):
            if call.future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(result, NoScriptError) and call.script is not None and not reloaded:
                missing.append(call)
            elif isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)
        if missing:
            scripts = {call.script.sha: call.script for call in missing if call.script is not None}
            await asyncio.gather(*(self._load(script) for script in scripts.values()))
            await self._send(missing, reloaded=True)

    async def _load(self, script: AsyncScript) -> None:
        """SCRIPT LOAD, once for all the batches that found the script missing at the same time."""
        loading = self._loading.get(script.sha)
        if loading is None:
            loading = asyncio.ensure_future(self.redis.script_load(script.script))
            self._loading[script.sha] = loading
            loading.add_done_callback(lambda _: self._loading.pop(script.sha, None))
            log.info("redis.script_loaded", sha=script.sha)
        await asyncio.shield(loading)

    async def aclose(self) -> None:
        """Send what is queued and wait for everything on its way; later calls fail at once."""
        self._closed = True
        if self._pending:
            self._flush()
        while self._flushing:
            await asyncio.gather(*list(self._flushing), return_exceptions=True)


def _settle(batch: list[_Call], _: asyncio.Task[None]) -> None:
    """No caller is left waiting, whatever became of the batch's task."""
    for call in batch:
        if not call.future.done():
            call.future.set_exception(RedisConnectionError(_SHUTTING_DOWN))
