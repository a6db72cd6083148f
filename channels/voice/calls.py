"""A phone conversation's call, under the conversation's hash tag: who is on which leg, and the wait.

One hash per call. Steps that must happen once whatever Twilio retries (taking a transfer, ending the call)
claim a field with HSETNX, so two webhooks racing for the same step agree on who did it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.store import decode_text

# Conversation ids of calls are derived from the CallSid, so a retried first webhook finds the same one and
# every later URL only needs to carry the conversation id.
_CALLS = uuid.UUID("6f1c8a0e-4bf4-4a4e-9a51-0d3c2e7f9b21")


def conversation_of_call(call_sid: str) -> str:
    return uuid.uuid5(_CALLS, call_sid).hex


def room_of(conversation_id: str) -> str:
    """The conference a call's people meet in: named for the conversation, at most 64 characters."""
    return f"hg-{conversation_id}"


@dataclass(frozen=True, slots=True)
class CallState:
    fields: dict[str, str]

    def get(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value or None

    @property
    def exists(self) -> bool:
        return bool(self.fields)

    @property
    def caller_sid(self) -> str | None:
        return self.get("sid")

    @property
    def ended(self) -> bool:
        return self.get("ended") is not None

    @property
    def agent_id(self) -> str | None:
        """The agent whose leg is in the room with the caller now."""
        return self.get("agent_id")

    @property
    def agent_sid(self) -> str | None:
        return self.get("agent_sid")

    @property
    def conference_sid(self) -> str | None:
        return self.get("conference_sid")

    def int(self, name: str) -> int:
        value = self.get(name)
        return int(value) if value and value.lstrip("-").isdigit() else 0


class CallStore:
    def __init__(self, batcher: RedisBatcher, keys: Keys, ttl_seconds: int) -> None:
        self.batcher = batcher
        self.keys = keys
        self.ttl_seconds = ttl_seconds

    async def get(self, conversation_id: str) -> CallState:
        raw: Any = await self.batcher.command("HGETALL", self.keys.call(conversation_id))
        if isinstance(raw, list):  # RESP2 without redis-py's response callbacks: flat field/value pairs
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        return CallState({decode_text(k): decode_text(v) for k, v in (raw or {}).items()})

    async def set(self, conversation_id: str, **fields: str | int | None) -> None:
        """Set (or with None, clear) fields; the call lives as long as its conversation."""
        key = self.keys.call(conversation_id)
        values = [x for k, v in fields.items() if v is not None for x in (k, str(v))]
        cleared = [k for k, v in fields.items() if v is None]
        steps = []
        if values:
            steps.append(self.batcher.command("HSET", key, *values))
        if cleared:
            steps.append(self.batcher.command("HDEL", key, *cleared))
        steps.append(self.batcher.command("EXPIRE", key, self.ttl_seconds))
        for step in steps:  # queued in this loop turn: one round trip
            await step

    async def release(self, conversation_id: str, field: str) -> None:
        """A claimed step failed before it was done: the next delivery may claim it again."""
        await self.batcher.command("HDEL", self.keys.call(conversation_id), field)

    async def claim(self, conversation_id: str, field: str, value: str) -> bool:
        """Set ``field`` only if nobody has: True for the one caller that did."""
        key = self.keys.call(conversation_id)
        claimed = self.batcher.command("HSETNX", key, field, value)
        expiry = self.batcher.command("EXPIRE", key, self.ttl_seconds)  # same round trip: never without TTL
        won, _ = await asyncio.gather(claimed, expiry)
        return bool(won)
