"""Redis calls made together share one pipeline, and every caller still gets its own answer or error."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.embedded_redis import free_port
from sessions.batching import RedisBatcher


async def test_calls_made_together_share_one_pipeline_and_each_gets_its_own_answer(
    redis: Redis, namespace: str
) -> None:
    batcher = RedisBatcher(redis)
    keys = [f"{namespace}:counter:{i}" for i in range(40)]
    await redis.set(keys[0], 41)

    results = await asyncio.gather(*(batcher.command("INCR", key) for key in keys))

    assert results == [42] + [1] * 39
    assert batcher.batches == 1 and batcher.calls == 40
    single = await batcher.command("GET", keys[0])  # a lone call still goes out at once
    assert single == b"42" and batcher.batches == 2


async def test_a_failing_command_fails_only_its_own_caller(redis: Redis, namespace: str) -> None:
    batcher = RedisBatcher(redis)
    await redis.set(f"{namespace}:text", "not a number")
    good, bad, also_good = await asyncio.gather(
        batcher.command("INCR", f"{namespace}:a"),
        batcher.command("INCR", f"{namespace}:text"),
        batcher.command("INCR", f"{namespace}:b"),
        return_exceptions=True,
    )
    assert good == 1 and also_good == 1
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)
    assert await redis.get(f"{namespace}:text") == b"not a number"


async def test_a_script_redis_does_not_know_yet_is_loaded_and_run_once(redis: Redis, namespace: str) -> None:
    # A body no other test uses, so Redis has never seen it (as after a restart or SCRIPT FLUSH).
    body = f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])"
    script = redis.register_script(body)
    batcher = RedisBatcher(redis)
    key = f"{namespace}:script-counter"

    first, second = await asyncio.gather(batcher.script(script, [key], []), batcher.script(script, [key], []))

    assert sorted([first, second]) == [1, 2]
    assert await redis.get(key) == b"2"  # each call ran exactly once
    assert await redis.script_exists(script.sha) == [True]


async def test_when_redis_is_unreachable_every_caller_gets_the_error() -> None:
    unreachable = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=None)
    batcher = RedisBatcher(unreachable)
    results = await asyncio.gather(batcher.command("GET", "a"), batcher.command("GET", "b"),
                                   return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    with pytest.raises(RedisConnectionError):
        await batcher.command("GET", "c")  # a later call gets the error too, rather than waiting
    await unreachable.aclose()


async def test_a_call_redis_py_cannot_encode_fails_alone(redis: Redis, namespace: str) -> None:
    batcher = RedisBatcher(redis)
    good, bad = await asyncio.gather(batcher.command("SET", f"{namespace}:a", "1"),
                                     batcher.command("SET", f"{namespace}:b", None), return_exceptions=True)
    assert good and isinstance(bad, DataError)
    assert await redis.get(f"{namespace}:a") == b"1"


async def test_calls_on_their_way_at_shutdown_are_sent_and_later_ones_refused(
    redis: Redis, namespace: str
) -> None:
    batcher = RedisBatcher(redis)
    queued = batcher.command("SET", f"{namespace}:late", "1")  # queued, not sent yet
    await batcher.aclose()
    assert queued.done() and await queued
    assert await redis.get(f"{namespace}:late") == b"1"
    with pytest.raises(RedisConnectionError, match="shutting down"):
        await batcher.command("GET", f"{namespace}:late")


async def test_a_cancelled_send_still_answers_every_caller(redis: Redis, namespace: str) -> None:
    batcher = RedisBatcher(redis)
    calls = [batcher.command("INCR", f"{namespace}:n{i}") for i in range(3)]
    await asyncio.sleep(0)  # the batch is on its way
    for task in list(batcher._flushing):
        task.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    # Each caller has its answer: the result if Redis answered first, else an error that says why.
    assert all(r == 1 or isinstance(r, RedisConnectionError) for r in results)


async def test_callers_answered_before_the_connection_drops_keep_their_answers(
    redis: Redis, namespace: str
) -> None:
    batcher = RedisBatcher(redis)
    before, _, after = await asyncio.gather(
        batcher.command("INCR", f"{namespace}:before"),
        batcher.command("QUIT"),  # Redis answers, then closes this very connection
        batcher.command("INCR", f"{namespace}:after"),
        return_exceptions=True,
    )
    assert before == 1  # it ran, and its caller knows it
    assert isinstance(after, RedisConnectionError)


async def test_replies_later_than_the_socket_timeout_fail_as_redis_py_read_timeouts(
    redis_url: str, namespace: str
) -> None:
    """The batch's replies share one deadline, the connection's socket timeout: a reply that misses it fails
    its caller and those after it with redis-py's TimeoutError, and the connection is not used again."""
    client = Redis.from_url(redis_url, socket_timeout=0.3)
    batcher = RedisBatcher(client)
    before, blocked, after = await asyncio.gather(
        batcher.command("INCR", f"{namespace}:before"),
        batcher.command("BLPOP", f"{namespace}:empty", 2),  # Redis answers in 2 s
        batcher.command("INCR", f"{namespace}:after"),
        return_exceptions=True,
    )
    assert before == 1
    assert isinstance(blocked, RedisTimeoutError) and isinstance(after, RedisTimeoutError)
    assert await batcher.command("INCR", f"{namespace}:later") == 1  # on a fresh connection, in step
    await client.aclose()
