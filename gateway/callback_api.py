"""The agents' view of callbacks: what is coming up, what is due, what failed, and moving or cancelling one.

Listed only for the queues the agent serves. Moving one needs a time the team is open for; cancelling
wins over any attempt not yet dialling. The customer is told either way, in their channel.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gateway import appkeys
from gateway.agent_api import _agent, _body
from handoff.desk import DeskError
from sessions.models import CallbackSlot
from sessions.store import AppendResult

log = structlog.get_logger(__name__)

STATES = ("scheduled", "due", "failed")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


class RescheduleBody(BaseModel):
    """A new slot (``start`` and optionally ``end``, with their offset) or ``asap``: exactly one."""

    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    asap: bool = False
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _one(self) -> RescheduleBody:
        if self.asap == (self.start is not None):
            raise ValueError("give either start (with an optional end) or asap: true")
        return self


async def listing(request: web.Request) -> web.Response:
    agent = await _agent(request)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise DeskError(400, "invalid_state", f"state must be one of {', '.join(STATES)}.")
    rules = request.app[appkeys.RULES].rules
    served = [name for name, queue in rules.queues.queues.items() if agent.serves(name, queue.skills)]
    rows = await request.app[appkeys.CALLBACKS].listing(served, state)
    return web.json_response({"callbacks": rows})


async def cancel(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, CancelBody)
    app = request.app
    await _served(request, agent.id)
    stored = await app[appkeys.CALLBACKS].cancel(
        request.match_info["id"], app[appkeys.RULES].rules, by=f"agent:{agent.id}", note=body.note,
        agent_name=agent.name)
    await _deliver(app, stored)
    log.info("callback.cancelled_by_agent", conversation_id=stored.conversation.id)
    return web.json_response({"conversation_id": stored.conversation.id, "state": "cancelled"})


async def reschedule(request: web.Request) -> web.Response:
    agent = await _agent(request)
    body = await _body(request, RescheduleBody)
    app = request.app
    await _served(request, agent.id)
    book = app[appkeys.CALLBACKS]
    now: datetime = book.clock()
    slot = CallbackSlot(start=now, asap=True) if body.asap else CallbackSlot(start=body.start, end=body.end)
    stored = await book.reschedule(request.match_info["id"], slot, app[appkeys.RULES].rules, note=body.note,
                                   agent_name=agent.name)
    await _deliver(app, stored)
    conversation = stored.conversation
    shown = book.view(conversation, book.view_state(conversation, now) or "scheduled")
    return web.json_response(shown)


async def _served(request: web.Request, agent_id: str) -> None:
    """An agent may change only callbacks of the queues they serve."""
    app = request.app
    conversation = await app[appkeys.DESK].conversation(request.match_info["id"])
    agent = await app[appkeys.AGENTS].get(agent_id)
    rules = app[appkeys.RULES].rules
    callback = conversation.callback
    queue = callback.queue if callback is not None else conversation.queue or ""
    skills = rules.queue(queue).skills if queue in rules.queues.queues else []
    if agent is None or not agent.serves(queue, skills):
        raise DeskError(403, "not_your_queue", "This callback belongs to a queue you do not serve.")


async def _deliver(app: web.Application, stored: AppendResult) -> None:
    await app[appkeys.CHANNELS].get(stored.conversation.channel).deliver(stored.conversation, stored.message)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/callbacks", listing)
    app.router.add_post("/api/callbacks/{id}/cancel", cancel)
    app.router.add_post("/api/callbacks/{id}/reschedule", reschedule)
