"""Customers and the index from a channel identity (a phone number, a site's user id) to one customer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

from redis.asyncio import Redis

from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.models import PROFILE_FIELDS, Customer, Identity
from sessions.store import decode_text


class CustomerStore:
    def __init__(
        self, redis: Redis, keys: Keys, ttl_seconds: int, *, batcher: RedisBatcher | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        # Finding or creating the customer is on the way of every new conversation: it shares pipelines.
        self.batcher = batcher or RedisBatcher(redis)

    async def resolve(
        self,
        identity: Identity | None,
        profile: Mapping[str, str],
        verified: bool,
    ) -> Customer:
        """The customer behind ``identity`` (created on first sight), with ``profile`` applied.

        Verified values replace what was known; unverified ones never overwrite a verified field, so a
        visitor cannot promote themselves by editing the page.
        """
        customer: Customer | None = None
        batch = self.batcher
        if identity is not None:
            customer_id = await batch.command("GET", self.keys.identity(identity.channel, identity.address))
            if customer_id is not None:
                customer = await self._load(decode_text(customer_id))
        if customer is None:
            customer = Customer(id=uuid.uuid4().hex, identities=[identity] if identity else [])
            if identity is not None:
                claimed = await batch.command("SET", self.keys.identity(identity.channel, identity.address),
                                              customer.id, "NX", "EX", self.ttl_seconds)
                if not claimed:  # another request created this customer first: use theirs
                    return await self.resolve(identity, profile, verified)
        _apply_profile(customer, profile, verified)
        stored = [batch.command("SET", self.keys.customer(customer.id), customer.model_dump_json(),
                                "EX", self.ttl_seconds)]
        if identity is not None:
            stored.append(batch.command("EXPIRE", self.keys.identity(identity.channel, identity.address),
                                        self.ttl_seconds))
        await asyncio.gather(*stored)  # one round trip
        return customer

    async def link(self, known: Identity, new: Identity) -> Customer | None:
        """The customer already known by ``known``, now also reachable by ``new`` (the same phone number on
        another channel), or None when ``known`` belongs to nobody."""
        customer_id = await self.redis.get(self.keys.identity(known.channel, known.address))
        if customer_id is None:
            return None
        customer = await self._load(decode_text(customer_id))
        if customer is None:
            return None
        if new not in customer.identities:
            customer.identities.append(new)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.identity(new.channel, new.address), customer.id, ex=self.ttl_seconds)
            pipe.set(self.keys.customer(customer.id), customer.model_dump_json(), ex=self.ttl_seconds)
            await pipe.execute()
        return customer

    async def _load(self, customer_id: str) -> Customer | None:
        raw = await self.batcher.command("GET", self.keys.customer(customer_id))
        return Customer.model_validate_json(raw) if raw else None

    async def get(self, customer_id: str) -> Customer | None:
        return await self._load(customer_id)


def _apply_profile(customer: Customer, profile: Mapping[str, str], verified: bool) -> None:
    for field in PROFILE_FIELDS:
        value = profile.get(field)
        if not value:
            continue
        if verified:
            setattr(customer, field, value)
            if field not in customer.verified_fields:
                customer.verified_fields.append(field)
        elif field not in customer.verified_fields:
            setattr(customer, field, value)
