"""Agents of a desk: who they are, how they sign in, and whether they can take a conversation now.

Profiles and presence live under the desk's hash tag. An agent's API token is shown once, at creation; only
its SHA-256 is kept, so a leaked Redis dump signs nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from sessions.keys import Keys
from sessions.models import ConversationEvent, utcnow
from sessions.store import decode_text

TOKEN_PREFIX = "hga_"  # noqa: S105 - a prefix that makes leaked tokens easy to spot, not a secret
# Presence expires unless the console (or API client) renews it: a closed laptop goes offline by itself.
HEARTBEAT_SECONDS = 60
PHONE_PATTERN = r"^\+[1-9]\d{6,14}$"
# Published on Keys.agent_control after an agent's sign-in ends; open sockets re-check theirs and close.
SIGNED_OUT_EVENT = "agent.signed_out"


class Presence(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class Agent(BaseModel):
    id: str
    name: str
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    # Queues the agent serves; empty means every queue whose skills they have.
    queues: list[str] = Field(default_factory=list)
    # Where the desk calls them for phone conversations (E.164); without one they take calls nowhere.
    phone: str | None = Field(None, pattern=PHONE_PATTERN)
    # A supervisor also sees the review dashboard (/review) and its figures; agents get 403 there.
    supervisor: bool = False
    created_at: datetime = Field(default_factory=utcnow)

    def serves(self, queue: str, skills: list[str]) -> bool:
        if self.queues and queue not in self.queues:
            return False
        return set(skills) <= set(self.skills)


class AgentState(BaseModel):
    status: Presence = Presence.OFFLINE
    capacity: int = 0
    active: int = 0
    # Epoch ms the agent's last conversation ended (or they came online): the longest idle is offered first.
    idle_since: int = 0
    heartbeat_until: int = 0

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.active) if self.status is Presence.ONLINE else 0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class AgentStore:
    def __init__(self, redis: Redis, keys: Keys, desk: str = "main") -> None:
        self.redis = redis
        self.keys = keys
        self.desk = desk

    async def add(
        self, name: str, skills: list[str], languages: list[str], queues: list[str], phone: str | None = None,
        *, supervisor: bool = False,
    ) -> tuple[Agent, str]:
        """Create an agent; returns it with its API token, which is not stored and cannot be shown again."""
        agent = Agent(id=uuid.uuid4().hex[:12], name=name, skills=skills, languages=languages, queues=queues,
                      phone=phone, supervisor=supervisor)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.agents(self.desk), agent.id, agent.model_dump_json())
            pipe.hset(self.keys.agent_tokens(self.desk), hash_token(token), agent.id)
            await pipe.execute()
        return agent, token

    async def set_phone(self, agent: Agent, phone: str | None) -> Agent:
        """The number the desk calls this agent on for phone conversations (None: not by phone)."""
        updated = Agent.model_validate({**agent.model_dump(), "phone": phone})
        await self.redis.hset(self.keys.agents(self.desk), agent.id, updated.model_dump_json())
        return updated

    async def all(self) -> list[Agent]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.keys.agents(self.desk))
        return sorted((Agent.model_validate_json(v) for v in raw.values()), key=lambda a: a.name.lower())

    async def get(self, agent_id: str) -> Agent | None:
        raw = await self.redis.hget(self.keys.agents(self.desk), agent_id)
        return Agent.model_validate_json(raw) if raw else None

    async def find(self, id_or_name: str) -> Agent | None:
        for agent in await self.all():
            if id_or_name in (agent.id, agent.name):
                return agent
        return None

    async def remove(self, agent: Agent) -> None:
        """Delete the agent and every token of theirs; their presence ends at once, and their open sockets
        on every instance are told to close (after the deletes: durable first, then notify)."""
        tokens: dict[Any, Any] = await self.redis.hgetall(self.keys.agent_tokens(self.desk))
        theirs = [t for t, owner in tokens.items() if decode_text(owner) == agent.id]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.keys.agents(self.desk), agent.id)
            if theirs:
                pipe.hdel(self.keys.agent_tokens(self.desk), *theirs)
            pipe.zrem(self.keys.presence(self.desk), agent.id)
            pipe.hset(self.keys.agent_state(self.desk, agent.id), "status", Presence.OFFLINE.value)
            pipe.publish(self.keys.agent_control(self.desk), self._signed_out(agent.id, "removed"))
            await pipe.execute()

    def _signed_out(self, agent_id: str, reason: str) -> str:
        """The control message any step that ends a sign-in (removal, a token revoked) publishes."""
        event = ConversationEvent(type=SIGNED_OUT_EVENT, conversation_id="",
                                  data={"agent_id": agent_id, "reason": reason})
        return "event\n" + event.model_dump_json()

    async def sign_in_ended(self, agent_id: str, token_hash: str) -> str | None:
        """Why a socket signed in with this token must close (``agent_removed``, ``token_revoked``), or None
        while it is still good. One round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.agents(self.desk), agent_id)
            pipe.hget(self.keys.agent_tokens(self.desk), token_hash)
            exists, owner = await pipe.execute()
        if not exists:
            return "agent_removed"
        if owner is None or decode_text(owner) != agent_id:
            return "token_revoked"
        return None

    async def authenticate(self, token: str) -> Agent | None:
        if not token.startswith(TOKEN_PREFIX) or not token.isascii():
            return None
        agent_id = await self.redis.hget(self.keys.agent_tokens(self.desk), hash_token(token))
        return await self.get(decode_text(agent_id)) if agent_id else None

    async def state(self, agent_id: str) -> AgentState:
        raw: dict[Any, Any] = await self.redis.hgetall(self.keys.agent_state(self.desk, agent_id))
        return _state(raw)

    async def states(self, agent_ids: list[str]) -> dict[str, AgentState]:
        """Several agents' states in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.hgetall(self.keys.agent_state(self.desk, agent_id))
            raws = await pipe.execute()
        return {agent_id: _state(raw) for agent_id, raw in zip(agent_ids, raws, strict=True)}

    async def set_presence(
        self, agent_id: str, status: Presence, capacity: int | None, now: datetime
    ) -> AgentState:
        """Set presence and capacity (None keeps it); online and away renew the heartbeat."""
        key = self.keys.agent_state(self.desk, agent_id)
        until = _ms(now) + HEARTBEAT_SECONDS * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, "idle_since", _ms(now))
            pipe.hset(key, "status", status.value)
            pipe.hset(key, "heartbeat_until", until)
            if capacity is not None:
                pipe.hset(key, "capacity", capacity)
            if status is Presence.OFFLINE:
                pipe.zrem(self.keys.presence(self.desk), agent_id)
            else:
                pipe.zadd(self.keys.presence(self.desk), {agent_id: until})
            pipe.hgetall(key)
            *_, raw = await pipe.execute()
        return _state(raw)

    async def present_until(self, agent_id: str, until: datetime) -> None:
        """Keep an agent's presence alive until ``until`` without a console: an agent talking on the phone
        has not vanished, however long the call. Their status and capacity are left as they are."""
        key = self.keys.agent_state(self.desk, agent_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, "heartbeat_until", _ms(until))
            pipe.zadd(self.keys.presence(self.desk), {agent_id: _ms(until)}, xx=True)
            await pipe.execute()

    async def online(self) -> dict[str, AgentState]:
        """Agents whose presence has not expired, with their states."""
        ids = [decode_text(i) for i in await self.redis.zrange(self.keys.presence(self.desk), 0, -1)]
        return {i: s for i, s in (await self.states(ids)).items() if s.status is not Presence.OFFLINE}

    async def expired(self, now: datetime) -> list[str]:
        """Agents whose heartbeat ran out: they are treated as gone (their conversations go back)."""
        raw = await self.redis.zrangebyscore(self.keys.presence(self.desk), "-inf", _ms(now))
        return [decode_text(i) for i in raw]


def _state(raw: dict[Any, Any]) -> AgentState:
    data = {decode_text(k): decode_text(v) for k, v in raw.items()}
    return AgentState.model_validate(data)
