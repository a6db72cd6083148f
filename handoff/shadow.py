"""Shadow rules: a candidate rule set decides every live bot turn next to the rules in force, without acting.

Each turn's two verdicts (hand off or not, the reason, the queue, the priority) are counted into a day's
hash, and a disagreement also keeps a sample (the conversation and both verdicts, never the customer's
words), so ``review --shadow`` can show over real traffic how the candidate would change the handoff rate by
reason and queue before anyone promotes it. One pipelined round trip per turn, both keys under the day's own
hash tag (one Cluster slot a day), kept ``REVIEW_RETENTION_DAYS`` like the review's own counters.

The candidate sees the live conversation's state: once the live rules hand a conversation off, its later
turns are the desk's, so the candidate is never asked about them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis

from handoff.holder import RulesHolder
from handoff.policy import Decision, TurnInput, decide
from sessions.keys import Keys
from sessions.models import utcnow
from sessions.store import decode_text

log = structlog.get_logger(__name__)

SAMPLES_PER_DAY = 50
BOT = "bot"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a rule set decided on a turn, as far as a review compares two of them."""

    handoff: bool
    reason: str | None = None
    queue: str | None = None
    priority: int = 0

    @classmethod
    def of(cls, decision: Decision) -> Verdict:
        if not decision.leaves_bot or decision.trigger is None:
            return cls(False)
        queue = decision.route.queue if decision.route is not None else None
        return cls(True, decision.trigger.reason, queue, decision.priority)

    @property
    def label(self) -> str:
        return f"{self.reason}>{self.queue}>p{self.priority}" if self.handoff else BOT


def _day(now: datetime) -> str:
    return now.strftime("%Y%m%d")


class ShadowLog:
    def __init__(self, redis: Redis, keys: Keys, retention_days: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_seconds = retention_days * 86400

    async def record(
        self, now: datetime, conversation_id: str, channel: str, live: Verdict, shadow: Verdict
    ) -> None:
        counts, samples = self.keys.shadow_counts(_day(now)), self.keys.shadow_samples(_day(now))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(counts, "turns", 1)
            pipe.hincrby(counts, f"live|{live.label}", 1)
            pipe.hincrby(counts, f"shadow|{shadow.label}", 1)
            if live != shadow:
                pipe.hincrby(counts, "disagree", 1)
                pipe.lpush(samples, json.dumps({"conversation_id": conversation_id, "channel": channel,
                                                "at": now.isoformat(), "live": live.label,
                                                "shadow": shadow.label}))
                pipe.ltrim(samples, 0, SAMPLES_PER_DAY - 1)
                pipe.expire(samples, self.retention_seconds)
            pipe.expire(counts, self.retention_seconds)
            await pipe.execute()

    async def summary(self, now: datetime, days: int) -> ShadowSummary:
        """The last ``days`` days' counts summed (one read per day, never per turn), with their samples."""
        dates = [_day(now - timedelta(days=d)) for d in range(days)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in dates:
                pipe.hgetall(self.keys.shadow_counts(day))
                pipe.lrange(self.keys.shadow_samples(day), 0, 9)
            replies: list[Any] = await pipe.execute()
        summary = ShadowSummary(days=days)
        for counts, samples in zip(replies[::2], replies[1::2], strict=True):
            for raw_field, raw_value in counts.items():
                summary.add(decode_text(raw_field), int(raw_value))
            summary.samples += [json.loads(decode_text(s)) for s in samples]
        return summary


class ShadowRules:
    """The candidate (``RULES_SHADOW_DIR``, reloaded with the live rules) and where its verdicts go."""

    def __init__(self, holder: RulesHolder, shadow_log: ShadowLog) -> None:
        self.holder = holder
        self.log = shadow_log
        self._writes: set[asyncio.Task[None]] = set()

    def observe(self, inp: TurnInput, live: Decision, live_holder: RulesHolder, channel: str) -> None:
        """Decide the turn with the candidate too, and count both verdicts in the background: the
        customer's answer never waits for the shadow."""
        said = inp.message
        if self.holder.signals is not live_holder.signals:  # other languages: the candidate reads them
            said = self.holder.signals.read(inp.text, inp.conversation.signals.language)
        try:
            turn = TurnInput(inp.conversation, inp.text, inp.turn, said, inp.now)
            candidate = decide(turn, self.holder.rules)
        except Exception:  # a candidate's bug must not cost a live turn
            log.exception("shadow.decide_failed", rules=self.holder.rules.version)
            return
        task = asyncio.create_task(self._record(inp, Verdict.of(live), Verdict.of(candidate), channel))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, inp: TurnInput, live: Verdict, shadow: Verdict, channel: str) -> None:
        try:
            # Counted on the day it happened (the real clock, not a demo business clock the policy follows).
            await self.log.record(utcnow(), inp.conversation.id, channel, live, shadow)
        except Exception:  # counted on the next turn; a review is never worth a failed answer
            log.warning("shadow.record_failed", conversation_id=inp.conversation.id, exc_info=True)

    async def drain(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)


@dataclass
class ShadowSummary:
    days: int
    turns: int = 0
    disagree: int = 0
    live: Counter[str] = field(default_factory=Counter)
    shadow: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, str]] = field(default_factory=list)

    def add(self, key: str, value: int) -> None:
        if key == "turns":
            self.turns += value
        elif key == "disagree":
            self.disagree += value
        else:
            side, _, label = key.partition("|")
            (self.live if side == "live" else self.shadow)[label] += value

    def handoffs(self, side: Counter[str], part: int) -> Counter[str]:
        """Handoffs by reason (``part`` 0) or queue (1)."""
        totals: Counter[str] = Counter()
        for label, count in side.items():
            if label != BOT:
                totals[label.split(">")[part]] += count
        return totals

    def as_dict(self) -> dict[str, Any]:
        def rate(side: Counter[str]) -> float | None:
            return round(sum(c for k, c in side.items() if k != BOT) / self.turns, 4) if self.turns else None

        def by(part: int) -> dict[str, dict[str, int]]:
            live, shadow = self.handoffs(self.live, part), self.handoffs(self.shadow, part)
            return {k: {"live": live[k], "shadow": shadow[k]} for k in sorted(set(live) | set(shadow))}

        return {"days": self.days, "turns": self.turns, "disagreements": self.disagree,
                "handoff_rate": {"live": rate(self.live), "shadow": rate(self.shadow)},
                "by_reason": by(0), "by_queue": by(1), "samples": self.samples[:20]}

    def render(self) -> str:
        """The comparison as a reviewer reads it: rates first, then where they differ, then examples."""
        if not self.turns:
            return (f"no shadow data for the last {self.days} days: set RULES_SHADOW_DIR to a candidate rule "
                    "set and let live traffic run")
        data = self.as_dict()
        rates = data["handoff_rate"]
        lines = [f"Shadow rules over the last {self.days} days: {self.turns} bot turns, "
                 f"{self.disagree} decided differently ({self.disagree / self.turns:.1%}).",
                 f"Handoff rate per turn: live {rates['live']:.2%}, candidate {rates['shadow']:.2%}.", ""]
        for title, key in (("By reason", "by_reason"), ("By queue", "by_queue")):
            lines.append(f"{title:<28}{'live':>8}{'candidate':>11}{'change':>8}")
            for name, pair in data[key].items():
                change = pair["shadow"] - pair["live"]
                lines.append(f"  {name:<26}{pair['live']:>8}{pair['shadow']:>11}{change:>+8}")
            lines.append("")
        if self.samples:
            lines.append("Sample disagreements (live -> candidate):")
            lines += [f"  {s['conversation_id']}  {s['channel']:<10} {s['live']} -> {s['shadow']}"
                      for s in self.samples[:10]]
        return "\n".join(lines).rstrip()
