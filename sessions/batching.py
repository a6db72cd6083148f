"""Redis calls made in the same event-loop turn go out together, as one pipelined write.

Under load many conversations' steps are in flight at once, and a redis-py call costs the client far more
CPU than Redis spends on the command: taking a pooled connection, its retry and observability wrappers,
one socket write and one wake-up per reply. Calls that reach the batcher in the same loop turn share all of
that: one connection, one write, one read loop (tests/bench/README.md has the figures). A lone call goes out
at the end of the turn it was made in, so nothing ever waits for company and no timer is involved.

The batch is packed by hiredis (C) and sent on a connection from the client's own pool, read reply by reply:
redis-py's Pipeline packs in Python and wraps each reply in callbacks, three times the CPU per command here.
Replies come back raw (bytes, integers, None), as Redis sends them. A batch is never sent twice: when the
connection fails, every caller in it gets the error (a write may or may not have happened, as with any
call), rather than a retry that could store a message twice.

Each caller gets its own result or its own error. Scripts are sent as EVALSHA; a server that lost them (a
restart, SCRIPT FLUSH) answers NOSCRIPT without running anything, so those are loaded and sent once more.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

MAX_BATCH = 128
_SHUTTING_DOWN = "the gateway is shutting down"
_CLOSE_GRACE_SECONDS = 5.0


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
        # Told the seconds each batch's round trip took (connection, write, every reply): GET /metrics.
        self.on_round_trip: Callable[[float], None] | None = None

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
        sent: list[_Call] = []
        packed: list[bytes] = []
        for call in batch:
            try:
                packed.append(hiredis.pack_command(call.args))
            except (TypeError, ValueError) as exc:  # an argument Redis cannot take (None): it fails alone
                if not call.future.done():
                    call.future.set_exception(DataError(f"cannot send {call.args[0]!r}: {exc}"))
                continue
            sent.append(call)
        if not sent:
            return
        missing: list[_Call] = []
        pool = self.redis.connection_pool
        started = time.perf_counter()
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join(packed))
            # One deadline for the whole batch's replies, the connection's socket timeout (redis-py's own
            # read timeout, 5 s by default), rather than a timer set and cancelled around each reply: they
            # arrive together, and that timer cost as much as reading the reply.
            async with asyncio.timeout(connection.socket_timeout):
                # Each caller is answered as its reply arrives: a later failure is not theirs.
                for call in sent:
                    try:
                        reply = await connection.read_response(timeout=math.inf)
                    except ResponseError as exc:  # this command's own error; the replies after it follow
                        reply = exc
                    if call.future.done():  # the caller was cancelled meanwhile
                        continue
                    if isinstance(reply, NoScriptError) and call.script is not None and not reloaded:
                        missing.append(call)
                    elif isinstance(reply, Exception):
                        call.future.set_exception(reply)
                    else:
                        call.future.set_result(reply)
        except TimeoutError as exc:  # the deadline: the error redis-py raises when a read times out
            await connection.disconnect()  # its replies are out of step now
            raise RedisTimeoutError("Timeout reading from Redis") from exc
        except BaseException:
            await connection.disconnect()  # its replies are out of step now
            raise
        finally:
            await pool.release(connection)
        if self.on_round_trip is not None:
            self.on_round_trip(time.perf_counter() - started)
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
        """Send what is queued and wait, for a while, for everything on its way; later calls fail at once."""
        self._closed = True
        if self._pending:
            self._flush()
        if self._flushing:
            await asyncio.wait(set(self._flushing), timeout=_CLOSE_GRACE_SECONDS)


def _settle(batch: list[_Call], _: asyncio.Task[None]) -> None:
    """No caller is left waiting, whatever became of the batch's task."""
    for call in batch:
        if not call.future.done():
            call.future.set_exception(RedisConnectionError(_SHUTTING_DOWN))
