"""How each queue of the desk stands right now: who waits, since when, and who is online to serve it.

One reading for everyone who shows it (the agent API's queue list, the agent socket, ``GET /metrics``), so
they never disagree. It comes from Redis, the desk's shared state, so every instance reads the same figures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from handoff.agents import AgentStore, Presence
from handoff.queues import QueueFigures, QueueStore
from handoff.ruleset import RuleSet


@dataclass(frozen=True, slots=True)
class QueueStanding:
    queue: str
    figures: QueueFigures
    # Agents online (not away) who serve the queue, busy or not.
    agents_online: int

    def oldest_wait_seconds(self, now: datetime) -> float | None:
        oldest = self.figures.oldest
        return max(0.0, (now - oldest).total_seconds()) if oldest is not None else None


async def desk_overview(queues: QueueStore, agents: AgentStore, rules: RuleSet) -> list[QueueStanding]:
    """Every queue in service, in the rules' order. The queues' figures and the agents are read at once
    (three reads in flight together, not one after another)."""
    names = [name for name, queue in rules.queues.queues.items() if not queue.retired]
    figures, online, everyone = await asyncio.gather(queues.figures(names), agents.online(), agents.all())
    present = [a for a in everyone if a.id in online and online[a.id].status is Presence.ONLINE]
    standings = []
    for name in names:
        skills = list(rules.queue(name).skills)
        serving = sum(1 for a in present if a.serves(name, skills))
        standings.append(QueueStanding(name, figures[name], serving))
    return standings
