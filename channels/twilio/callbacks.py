"""Twilio's status callbacks, each handled once: Twilio retries them, and may send one twice or late.

A (sid, status) pair is claimed with SET NX and a week's TTL, for MessageSid delivery reports and CallSid
call or conference events alike. A handler that fails gives its claim back, so Twilio's retry is handled.
"""

from __future__ import annotations

from redis.asyncio import Redis

from sessions.keys import Keys

CLAIM_SECONDS = 7 * 24 * 3600


class StatusCallbacks:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def first(self, sid: str, status: str) -> bool:
        """True the first time this (sid, status) is seen."""
        key = self.keys.twilio_status(sid, status)
        return bool(await self.redis.set(key, "1", nx=True, ex=CLAIM_SECONDS))

    async def forget(self, sid: str, status: str) -> None:
        """Not handled after all: a retry of it will be."""
        await self.redis.delete(self.keys.twilio_status(sid, status))
