"""The review checklist, figured from summed day counters (and the rules and agents, for routing gaps).

Pure: `review` reads the counters of the span asked for, and of the two weeks the week-over-week signals
compare, then hands them here. Every figure is a count or a share of counts, so a test can check each one
against a hand-built history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handoff.review.buckets import ALL, DIMENSIONS, NONE, WAIT_EDGES, Totals, percentile
from handoff.review.record import Outcome
from handoff.ruleset import RuleSet

Section = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a figure needs a review now (docs/review.md, "Signals")."""

    # Escalation rate of an intent this week at least this many times last week's, and up this many points.
    escalation_jump: float = 1.5
    escalation_jump_points: float = 0.10
    # Fewest conversations (of the intent, this week) before a week-over-week change is believed.
    min_volume: int = 20
    # A queue's 90th-percentile time to agent above this (seconds) is an overloaded queue.
    queue_p90_seconds: float = 600.0
    # Abandonment while waiting, as a share of escalations: up this many times and this many points.
    abandonment_jump: float = 1.5
    abandonment_jump_points: float = 0.05
    # Transfers after assignment, as a share of a queue's handoffs, above this: misroutes.
    misroute_share: float = 0.10
    # Repeat contact within 7 days, as a share of endings: up this many times and this many points.
    repeat_jump: float = 1.5
    repeat_jump_points: float = 0.05
    # Agents saying "not enough context" on more than this share of rated handoffs (and at least min_rated).
    no_context_share: float = 0.25
    min_rated: int = 10


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def bucket(edge: float) -> str:
    """A percentile read from the histogram: at most its bucket's upper edge, or past the last edge."""
    return f"over {WAIT_EDGES[-1]:g} s" if edge == float("inf") else f"<= {edge:g} s"


def _rows(values: Mapping[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    ordered = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return ordered[:limit] if limit is not None else ordered


def escalation(totals: Totals, breakdowns: Sequence[str]) -> Section:
    """Escalations and their share of conversations, overall, by each breakdown and by trigger."""
    conversations, escalations = totals.get("conversations"), totals.get("escalations")
    by: dict[str, list[dict[str, Any]]] = {}
    for dimension in breakdowns:
        convs = totals.by("conversations", dimension)
        escs = totals.by("escalations", dimension)
        by[dimension] = [
            {dimension: value, "conversations": int(convs.get(value, 0)),
             "escalations": int(escs.get(value, 0)), "rate": _share(escs.get(value, 0), convs.get(value, 0))}
            for value in sorted({*convs, *escs}, key=lambda v: (-escs.get(v, 0), -convs.get(v, 0), v))
        ]
    triggers = totals.by("escalations", "trigger")
    return {
        "conversations": int(conversations),
        "escalations": int(escalations),
        "rate": _share(escalations, conversations),
        "by": by,
        "by_trigger": [{"trigger": t, "escalations": int(n), "share": _share(n, escalations)}
                       for t, n in _rows(triggers)],
        "by_trigger_rule": [{"rule": r, "escalations": int(n)}
                            for r, n in _rows(totals.by("escalations", "trigger_rule"))],
    }


def containment(totals: Totals) -> Section:
    """Kept by the bot, against kept by the bot to the customer's cost (left after failed answers, came back
    within 7 days)."""
    contained = totals.get(Outcome.CONTAINED.value)
    left = totals.get(Outcome.LEFT_AFTER_FAILURE.value)
    bot_only = contained + left
    repeats = totals.by("repeat", "previous")
    after_bot = repeats.get(Outcome.CONTAINED.value, 0) + repeats.get(Outcome.LEFT_AFTER_FAILURE.value, 0)
    return {
        "bot_only": int(bot_only),
        "contained": int(contained),
        "left_after_failed_answers": int(left),
        "left_share": _share(left, bot_only),
        "repeat_after_bot_only": int(after_bot),
        "repeat_after_bot_only_share": _share(after_bot, bot_only),
        "repeat_by_previous_outcome": {k: int(v) for k, v in _rows(repeats)},
        "repeat_by_channel": {k: int(v) for k, v in _rows(totals.by("repeat", "channel"))},
    }


def context(totals: Totals, worst: int = 5) -> Section:
    """Agents' "was the context enough?", by trigger and intent; the intents most often lacking it."""
    out: Section = {}
    for dimension in ("trigger", "intent"):
        rated = totals.by("context_rated", dimension)
        yes = totals.by("context_yes", dimension)
        out[f"by_{dimension}"] = [{dimension: v, "rated": int(n), "yes_share": _share(yes.get(v, 0), n)}
                                  for v, n in _rows(rated)]
    lacking = totals.by("context_no", "intent")
    out["lacking_by_intent"] = [{"intent": v, "not_enough": int(n)} for v, n in _rows(lacking, worst)]
    rated_all = sum(totals.by("context_rated", "trigger").values())
    out["rated"] = int(rated_all)
    out["yes_share"] = _share(sum(totals.by("context_yes", "trigger").values()), rated_all)
    return out


def reached_queues(rules: RuleSet) -> set[str]:
    """Queues some routing rule, the fallback or an overflow sends conversations to."""
    reached = {rule.queue for rule in rules.routing.rules} | {rules.routing.fallback.queue}
    reached |= {q.overflow.to for q in rules.queues.queues.values() if q.overflow is not None}
    return reached


def routing(totals: Totals, rules: RuleSet | None, serves: Mapping[str, bool] | None) -> Section:
    """Transfers after assignment (from which queue to which), routing gaps, overflow and after-hours."""
    out: Section = {
        "transfers": [{"from": pair.split(">", 1)[0], "to": pair.split(">", 1)[1], "count": int(n)}
                      for pair, n in _rows(totals.by("transfers", "route"))],
        "overflow": {q: int(n) for q, n in _rows(totals.by("overflow", "queue"))},
        "after_hours": {q: int(n) for q, n in _rows(totals.by("after_hours", "queue"))},
    }
    if rules is not None:
        reached = reached_queues(rules)
        queues = {name for name, q in rules.queues.queues.items() if not q.retired}
        out["unreached_queues"] = sorted(queues - reached)
        if serves is not None:
            out["unserved_queues"] = sorted(q for q in reached & queues if not serves.get(q, False))
    return out


def sla(totals: Totals) -> Section:
    """Time to agent p50/p90 by queue and channel, promise accuracy, abandonment while waiting."""
    out: Section = {"time_to_agent": {}}
    overall = totals.histogram()
    out["time_to_agent"][ALL] = {"p50": percentile(overall, 0.5), "p90": percentile(overall, 0.9),
                                 "n": int(sum(overall.values()))}
    for dimension in ("queue", "channel"):
        rows = {}
        for value in sorted(totals.histogram_values(dimension)):
            hist = totals.histogram(dimension, value)
            rows[value] = {"p50": percentile(hist, 0.5), "p90": percentile(hist, 0.9),
                           "n": int(sum(hist.values()))}
        out["time_to_agent"][dimension] = rows
    promised = totals.by("promised", "queue")
    errors = totals.by("promise_error_seconds", "queue")
    broken = totals.by("promise_broken", "queue")
    out["promise"] = {q: {"told": int(n), "mean_error_seconds": round(errors.get(q, 0) / n, 1),
                          "longer_than_told_share": _share(broken.get(q, 0), n)} for q, n in _rows(promised)}
    escalated = totals.by("escalations", "queue")
    abandoned = totals.by("abandoned_waiting", "queue")
    out["abandoned_waiting"] = {
        "total": int(totals.get("abandoned_waiting")),
        "rate": _share(totals.get("abandoned_waiting"), totals.get("escalations")),
        "failed_bot_answers_mean": _share(totals.get("abandoned_after_failures"),
                                            totals.get("abandoned_waiting")),
        "by_queue": {q: {"abandoned": int(n), "rate": _share(n, escalated.get(q, 0))}
                     for q, n in _rows(abandoned)},
        "by_channel": {c: int(n) for c, n in _rows(totals.by("abandoned_waiting", "channel"))},
    }
    return out


def outcomes(totals: Totals) -> Section:
    """What became of conversations after the handoff; reopened within the return window."""
    ended = totals.by("ended", "outcome")
    resolved = totals.get("resolved_by_agent")
    return {
        "ended": {k: int(v) for k, v in _rows(ended)},
        "resolved_by_agent": int(resolved),
        "reopened": int(totals.get("reopened")),
        "reopened_share": _share(totals.get("reopened"), resolved),
        "callbacks": {k: int(v) for k, v in _rows(totals.by("callback", "outcome"))},
        "delivery_failures": {k: int(v) for k, v in _rows(totals.by("delivery_failures", "channel"))},
    }


def cost(totals: Totals) -> Section:
    turns, convs = totals.get("bot_turns"), totals.get("bot_turns_conversations")
    handled = totals.get("handled")
    return {
        "bot_turns_per_conversation": round(turns / convs, 2) if convs else None,
        "agent_handle_seconds_mean": round(totals.get("handle_seconds") / handled, 1) if handled else None,
        "handled": int(handled),
    }


def _rate(totals: Totals, part: str, whole: str, dimension: str = ALL, value: str = "") -> float | None:
    return _share(totals.get(part, dimension, value), totals.get(whole, dimension, value))


def _rising(now: float | None, before: float | None, jump: float, points: float) -> bool:
    if now is None:
        return False
    base = before or 0.0
    return now >= base * jump and now - base >= points


def signals(window: Totals, this_week: Totals, last_week: Totals, limits: Thresholds) -> list[dict[str, Any]]:
    """The figures that need a review now, each with its value and the threshold it crossed."""
    found: list[dict[str, Any]] = []
    convs = this_week.by("conversations", "intent")
    for intent, n in _rows(convs):
        if n < limits.min_volume or intent == NONE:
            continue
        now = _rate(this_week, "escalations", "conversations", "intent", intent)
        before = _rate(last_week, "escalations", "conversations", "intent", intent)
        if _rising(now, before, limits.escalation_jump, limits.escalation_jump_points):
            found.append({"signal": "escalation_rate_up", "subject": intent,
                          "figure": f"{_pct(before)} -> {_pct(now)} week over week",
                          "threshold": f"x{limits.escalation_jump} and +{limits.escalation_jump_points:.0%}"})
    for queue in sorted(window.histogram_values("queue")):
        p90 = percentile(window.histogram("queue", queue), 0.9)
        if p90 is not None and p90 > limits.queue_p90_seconds:
            found.append({"signal": "queue_overloaded", "subject": queue,
                          "figure": f"p90 time to agent {bucket(p90)}",
                          "threshold": f"{limits.queue_p90_seconds:g} s"})
    now = _rate(this_week, "abandoned_waiting", "escalations")
    before = _rate(last_week, "abandoned_waiting", "escalations")
    if _rising(now, before, limits.abandonment_jump, limits.abandonment_jump_points):
        found.append({"signal": "abandonment_rising", "subject": ALL,
                      "figure": f"{_pct(before)} -> {_pct(now)} of handoffs abandoned while waiting",
                      "threshold": f"x{limits.abandonment_jump} and +{limits.abandonment_jump_points:.0%}"})
    escalated = window.by("escalations", "queue")
    moved: dict[str, float] = {}
    for pair, n in window.by("transfers", "route").items():
        source = pair.split(">", 1)[0]
        moved[source] = moved.get(source, 0) + n
    for queue, n in _rows(moved):
        share = _share(n, escalated.get(queue, 0))
        if share is not None and share > limits.misroute_share:
            found.append({"signal": "misroutes", "subject": queue,
                          "figure": f"{_pct(share)} of its handoffs transferred on ({int(n)})",
                          "threshold": f"{limits.misroute_share:.0%}"})
    now, before = (_share(sum(w.by("repeat", "previous").values()), sum(w.by("ended", "outcome").values()))
                   for w in (this_week, last_week))
    if _rising(now, before, limits.repeat_jump, limits.repeat_jump_points):
        found.append({"signal": "repeat_contact_rising", "subject": ALL,
                      "figure": f"{_pct(before)} -> {_pct(now)} of endings were a repeat within 7 days",
                      "threshold": f"x{limits.repeat_jump} and +{limits.repeat_jump_points:.0%}"})
    rated = sum(window.by("context_rated", "trigger").values())
    lacking = sum(window.by("context_no", "trigger").values())
    share = _share(lacking, rated)
    if rated >= limits.min_rated and share is not None and share > limits.no_context_share:
        found.append({"signal": "not_enough_context", "subject": ALL,
                      "figure": f"{_pct(share)} of {int(rated)} rated handoffs",
                      "threshold": f"{limits.no_context_share:.0%}"})
    return found


def review(
    window: Totals, this_week: Totals, last_week: Totals, *, breakdowns: Iterable[str] = DIMENSIONS,
    rules: RuleSet | None = None, serves: Mapping[str, bool] | None = None, limits: Thresholds = Thresholds(),
) -> Section:
    """The whole checklist, signals first."""
    return {
        "signals": signals(window, this_week, last_week, limits),
        "escalation": escalation(window, list(breakdowns)),
        "containment": containment(window),
        "context": context(window),
        "routing": routing(window, rules, serves),
        "sla": sla(window),
        "outcomes": outcomes(window),
        "cost": cost(window),
    }
