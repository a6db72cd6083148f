"""The agent REST API under /api: presence, queues, conversations, claim, reply, transfer, resolve.

Every call needs ``Authorization: Bearer <agent token>`` (`handoff-gateway agents add` prints one). Errors
are ``{"code", "detail"}`` with a 4xx status; the OpenAPI document at /api/openapi.json lists them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway import appkeys
from handoff.agents import PHONE_PATTERN, Agent, Presence
from handoff.context import ContextPackage, build_package
from handoff.desk import DeskError
from handoff.overview import desk_overview
from sessions.models import Conversation, utcnow
from sessions.store import decode_text

log = structlog.get_logger(__name__)

MAX_AGENT_MESSAGE_CHARS = 4000
PHONE_REQUIRED = ("This is a phone call: send {\"phone\": \"+1...\"} with the claim, or set your number "
                  "(POST /api/agents/me/phone), so the desk can call you.")


class PresenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Presence
    capacity: int | None = Field(None, ge=0, le=50)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_AGENT_MESSAGE_CHARS)


class TransferBody(BaseModel):
    """To a queue, or (on a call) to a colleague by id or name: exactly one of the two."""

    model_config = ConfigDict(extra="forbid")
    queue: str | None = Field(None, min_length=1)
    agent: str | None = Field(None, min_length=1, max_length=100)
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _one_target(self) -> TransferBody:
        if (self.queue is None) == (self.agent is None):
            raise ValueError("give either queue or agent")
        return self


class PhoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # E.164, or null: the desk calls the agent there for phone conversations.
    phone: str | None = Field(None, pattern=PHONE_PATTERN)


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # For a phone conversation: the number to call the agent on now (kept as theirs).
    phone: str | None = Field(None, pattern=PHONE_PATTERN)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field("resolved", min_length=1, max_length=100)
    back_to_bot: bool = False
    # "Did the context let you act without asking the customer again?", kept for the review metrics.
    context_sufficient: bool | None = None


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"code": code, "detail": detail}, status=status)


M = TypeVar("M", bound=BaseModel)


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        raw = await request.read()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise DeskError(400, "invalid_body", f"{where}: {first['msg']}") from None


async def _agent(request: web.Request) -> Agent:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    agent = await request.app[appkeys.AGENTS].authenticate(token) if scheme.lower() == "bearer" else None
    if agent is None:
        raise DeskError(401, "unauthorized", "Send Authorization: Bearer <your agent token>.")
    structlog.contextvars.bind_contextvars(agent_id=agent.id)
    return agent


def _conversation_json(conversation: Conversation) -> dict[str, Any]:
    data = conversation.model_dump(mode="json", exclude={"signals"})
    data["customer"] = {k: data["customer"][k] for k in ("id", "name", "tier", "language", "verified_fields")}
    return data


async def me(request: web.Request) -> web.Response:
    agent = await _agent(request)
    state = await request.app[appkeys.AGENTS].state(agent.id)
    return web.json_response({**agent.model_dump(mode="json"), "presence": state.model_dump(mode="json")})


async def presence(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, PresenceBody)
    app = request.app
    state = await app[appkeys.AGENTS].set_presence(agent.id, body.status, body.capacity, utcnow())
    returned: list[str] = []
    if body.status is not Presence.ONLINE:
        await app[appkeys.DISPATCHER].withdraw_offers_to(agent.id)
    if body.status is Presence.OFFLINE:
        rules = app[appkeys.RULES].rules
        returned = await app[appkeys.DESK].hand_back(agent.id, "the agent went offline", rules)
    app[appkeys.DISPATCHER].kick()
    log.info("agent.presence", status=body.status.value, capacity=state.capacity, handed_back=len(returned))
    return web.json_response({**state.model_dump(mode="json"), "handed_back": returned})


async def queues(request: web.Request) -> web.Response:
    agent = await _agent(request)
    return web.json_response({"queues": await queue_overview(request.app, agent)})


async def queue_overview(app: web.Application, agent: Agent) -> list[dict[str, Any]]:
    """Each queue as an agent sees it; the agent socket pushes it when it changes."""
    rules = app[appkeys.RULES].rules
    now = utcnow()
    result = []
    for standing in await desk_overview(app[appkeys.QUEUES], app[appkeys.AGENTS], rules):
        name, figures, queue = standing.queue, standing.figures, rules.queue(standing.queue)
        oldest = standing.oldest_wait_seconds(now)
        next_open = rules.next_open(queue.hours, now)
        result.append({
            "id": name, "name": queue.name, "depth": figures.depth, "backlog": figures.backlog,
            "oldest_wait_seconds": round(oldest) if oldest is not None else None,
            "agents_online": standing.agents_online, "open_now": rules.is_open(queue.hours, now),
            "next_open": next_open.isoformat() if next_open else None,
            "you_serve": agent.serves(name, queue.skills),
        })
    return result


async def conversations(request: web.Request) -> web.Response:
    agent = await _agent(request)
    app = request.app
    state = request.query.get("state", "queued")
    if state not in {"queued", "offered", "async", "assigned"}:
        return _error(400, "invalid_state", "state must be queued, offered, async or assigned.")
    rules = app[appkeys.RULES].rules
    store, queue_store = app[appkeys.STORE], app[appkeys.QUEUES]
    ids: list[str] = []
    if state == "offered":  # offered to me, waiting for my answer
        offers = await app[appkeys.REDIS].hgetall(queue_store.keys.offers(queue_store.desk))
        mine = f"{agent.id}|"
        ids = sorted(decode_text(cid) for cid, value in offers.items() if decode_text(value).startswith(mine))
    elif state == "assigned":
        key = queue_store.keys.agent_conversations(queue_store.desk, agent.id)
        raw = await app[appkeys.REDIS].smembers(key)
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
    else:
        for name, queue in rules.queues.queues.items():
            if not queue.retired and agent.serves(name, queue.skills):
                ids += [cid for cid, _ in await queue_store.waiting(name, live=state == "queued")]
    found = await store.get_many(ids)
    return web.json_response({"conversations": [_conversation_json(c) for c in found]})


async def conversation(request: web.Request) -> web.Response:
    agent = await _agent(request)
    app = request.app
    desk = app[appkeys.DESK]
    found = await desk.conversation(request.match_info["id"])
    desk.check_access(agent, found)
    package = await _package(app, found)
    view = await app[appkeys.CHANNELS].get(found.channel).agent_view(found.id)
    return web.json_response(
        {"conversation": _conversation_json(found), "context": package.model_dump(mode="json"), **view}
    )


async def set_phone(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, PhoneBody)
    updated = await request.app[appkeys.AGENTS].set_phone(agent, body.phone)
    log.info("agent.phone_set", has_phone=updated.phone is not None)
    return web.json_response(updated.model_dump(mode="json"))


async def claim(request: web.Request) -> web.Response:
    agent = await _agent(request)
    app = request.app
    body = await _body(request, ClaimBody)
    waiting = await app[appkeys.DESK].conversation(request.match_info["id"])
    callback = waiting.callback is not None and waiting.callback.state == "offering"
    if callback or app[appkeys.CHANNELS].get(waiting.channel).capabilities.agents_by_phone:
        if body.phone is not None:
            agent = await app[appkeys.AGENTS].set_phone(agent, body.phone)
        if agent.phone is None:
            raise DeskError(409, "phone_required", PHONE_REQUIRED)
    outcome = await app[appkeys.DESK].claim(agent, request.match_info["id"], app[appkeys.RULES].rules)
    await _deliver(app, outcome.conversation, outcome.notice)
    package = await _package(app, outcome.conversation)
    view = await app[appkeys.CHANNELS].get(outcome.conversation.channel).agent_view(outcome.conversation.id)
    log.info("agent.claimed", conversation_id=outcome.conversation.id, queue=outcome.conversation.queue)
    return web.json_response({
        "conversation": _conversation_json(outcome.conversation), "context": package.model_dump(mode="json"),
        **view,
    })


async def decline(request: web.Request) -> web.Response:
    agent = await _agent(request)
    await request.app[appkeys.DISPATCHER].decline(agent, request.match_info["id"])
    request.app[appkeys.DISPATCHER].kick()
    return web.json_response({"declined": request.match_info["id"]})


async def send_message(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, MessageBody)
    app = request.app
    stored = await app[appkeys.DESK].say(agent, request.match_info["id"], body.text)
    await app[appkeys.CHANNELS].get(stored.conversation.channel).deliver(stored.conversation, stored.message)
    log.info("agent.replied", conversation_id=stored.conversation.id, message_id=stored.message.id)
    return web.json_response({"id": stored.message.id, "ts": stored.message.ts.isoformat()}, status=201)


async def transfer(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, TransferBody)
    app = request.app
    conversation = await app[appkeys.DESK].conversation(request.match_info["id"])
    if app[appkeys.CHANNELS].get(conversation.channel).capabilities.warm_transfer:
        target = await _colleague(app, agent, body)
        if target is not None:  # on a call: the caller stays with this agent until the colleague takes over
            await app[appkeys.CALL_DESK].begin_transfer(agent, conversation.id, target, body.note)
            log.info("agent.transfer_started", conversation_id=conversation.id, to_agent=target.id)
            calling = {"id": target.id, "name": target.name}
            return web.json_response({"transfer": "calling", "to_agent": calling}, status=202)
    if body.queue is None:
        raise DeskError(422, "transfer_to_agent_unsupported",
                        "Transfers to a colleague are for phone calls; send this conversation to a queue.")
    outcome = await app[appkeys.DESK].transfer(
        agent, conversation.id, body.queue, body.note, app[appkeys.RULES].rules
    )
    await _deliver(app, outcome.conversation, outcome.notice)
    app[appkeys.DISPATCHER].kick()
    log.info("agent.transferred", conversation_id=outcome.conversation.id, queue=body.queue)
    return web.json_response({"conversation": _conversation_json(outcome.conversation)})


async def resolve(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, ResolveBody)
    app = request.app
    outcome = await app[appkeys.DESK].resolve(
        agent, request.match_info["id"], body.outcome, body.back_to_bot, app[appkeys.RULES].rules,
        context_sufficient=body.context_sufficient,
    )
    await _deliver(app, outcome.conversation, outcome.notice)
    app[appkeys.DISPATCHER].kick()
    log.info("agent.resolved", conversation_id=outcome.conversation.id, back_to_bot=body.back_to_bot)
    return web.json_response({"conversation": _conversation_json(outcome.conversation)})


async def _colleague(app: web.Application, agent: Agent, body: TransferBody) -> Agent | None:
    """The colleague a call goes to: the one named, or the best free one with a phone who serves the
    queue (None: nobody can take it live, so it goes to the queue)."""
    agents = app[appkeys.AGENTS]
    if body.agent is not None:
        target = await agents.find(body.agent)
        if target is None:
            raise DeskError(404, "agent_not_found", f"No agent {body.agent!r}.")
        if target.phone is None:
            raise DeskError(409, "colleague_without_phone", f"{target.name} has no phone number to call.")
        state = await agents.state(target.id)
        if state.status is not Presence.ONLINE:
            raise DeskError(409, "colleague_not_online", f"{target.name} is not online to take a call.")
        return target
    rules = app[appkeys.RULES].rules
    queue = rules.queues.queues.get(body.queue or "")
    if queue is None or queue.retired:
        raise DeskError(422, "unknown_queue", f"There is no open queue named {body.queue!r}.")
    online = await agents.online()
    able = [a for a in await agents.all() if a.id != agent.id and a.phone and a.id in online
            and online[a.id].free > 0 and a.serves(body.queue or "", list(queue.skills))]
    return max(able, key=lambda a: (online[a.id].free, -online[a.id].idle_since), default=None)


async def _package(app: web.Application, conversation: Conversation) -> ContextPackage:
    store = app[appkeys.STORE]
    transcript, events = await store.transcript_and_events(conversation.id)
    return build_package(conversation, transcript, app[appkeys.SUMMARIZER], events)


async def _deliver(app: web.Application, conversation: Conversation, notice: Any) -> None:
    if notice is not None:
        await app[appkeys.CHANNELS].get(conversation.channel).deliver(conversation, notice)


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/agents/me", me)
    router.add_post("/api/agents/me/presence", presence)
    router.add_post("/api/agents/me/phone", set_phone)
    router.add_get("/api/queues", queues)
    router.add_get("/api/conversations", conversations)
    router.add_get("/api/conversations/{id}", conversation)
    router.add_post("/api/conversations/{id}/claim", claim)
    router.add_post("/api/conversations/{id}/decline", decline)
    router.add_post("/api/conversations/{id}/messages", send_message)
    router.add_post("/api/conversations/{id}/transfer", transfer)
    router.add_post("/api/conversations/{id}/resolve", resolve)

