"""Day counters: what one record adds to its day's hash, and how days are summed back for a review.

A field is ``figure|dimension|value`` (a count or a sum of seconds). A review over 30 days reads 30 hashes
whose size depends on how many intents, queues and channels there are, never on how many conversations: the
bound that keeps `review --since 30d` fast over a million conversations. Percentiles come from histograms
with fixed edges (``tta@<edge>``), summed over days like every other counter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from handoff.review.record import BOT_ONLY, Outcome, OutcomeRecord, RecordKind

# The breakdowns `review --by` offers; every count of conversations and escalations is kept by each.
DIMENSIONS: tuple[str, ...] = ("intent", "channel", "locale", "hour", "queue", "rules_version")
ALL = "all"
NONE = "-"
# Upper edges (seconds) of the time-to-agent histogram; a wait longer than the last is counted at "inf".
WAIT_EDGES: tuple[float, ...] = (10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600, 7200)
# A customer told a wait was told truly when the real wait came within this share of it (or within a minute).
PROMISE_SLACK = 0.25
PROMISE_SLACK_SECONDS = 60.0


def field(figure: str, dimension: str = ALL, value: str = "") -> str:
    return f"{figure}|{dimension}|{value}"


def _edge(seconds: float) -> str:
    for edge in WAIT_EDGES:
        if seconds <= edge:
            return f"{edge:g}"
    return "inf"


def _values(record: OutcomeRecord) -> dict[str, str]:
    queue = record.first_queue if record.kind is RecordKind.HANDOFF else record.final_queue
    return {
        "intent": record.intent or NONE,
        "channel": record.channel,
        "locale": record.locale or NONE,
        "hour": f"{record.hour:02d}",
        "queue": queue or NONE,
        "rules_version": record.rules_version or NONE,
    }


def _by_each(out: dict[str, float], figure: str, values: Mapping[str, str], amount: float = 1) -> None:
    out[field(figure)] += amount
    for dimension, value in values.items():
        out[field(figure, dimension, value)] += amount


def increments(record: OutcomeRecord) -> dict[str, float]:
    """What ``record`` adds to its day's counters."""
    out: dict[str, float] = defaultdict(float)
    values = _values(record)
    if record.kind is RecordKind.HANDOFF:
        _handoff(out, record, values)
    else:
        _end(out, record, values)
    return dict(out)


def _handoff(out: dict[str, float], record: OutcomeRecord, values: Mapping[str, str]) -> None:
    # Every conversation is counted once where it first leaves the bot, or where it ends with the bot alone.
    _by_each(out, "conversations", values)
    _by_each(out, "escalations", values)
    trigger = record.trigger or NONE
    out[field("escalations", "trigger", trigger)] += 1
    out[field("escalations", "trigger_rule", f"{trigger}:{record.trigger_rule or NONE}")] += 1
    out[field("bot_turns")] += record.bot_turns
    out[field("bot_turns_conversations")] += 1
    if record.overflow_from:
        out[field("overflow", "queue", record.overflow_from)] += 1
    if record.mode and record.mode != "live":
        out[field("after_hours", "queue", values["queue"])] += 1


def _end(out: dict[str, float], record: OutcomeRecord, values: Mapping[str, str]) -> None:
    out[field("ended", "outcome", record.outcome.value)] += 1
    if record.outcome in BOT_ONLY:
        bot_values = {k: v for k, v in values.items() if k != "queue"}
        _by_each(out, "conversations", bot_values)
        _by_each(out, record.outcome.value, bot_values)
        out[field("bot_turns")] += record.bot_turns
        out[field("bot_turns_conversations")] += 1
    if record.previous_outcome is not None:
        out[field("repeat", "previous", record.previous_outcome.value)] += 1
        out[field("repeat", "channel", record.channel)] += 1
    if record.delivery_failures:
        out[field("delivery_failures", "channel", record.channel)] += record.delivery_failures
    if record.callback_outcome:
        out[field("callback", "outcome", record.callback_outcome)] += 1
    if record.kind is RecordKind.END and record.trigger is not None:
        _after_handoff(out, record, values)


def _after_handoff(out: dict[str, float], record: OutcomeRecord, values: Mapping[str, str]) -> None:
    queue, channel = values["queue"], values["channel"]
    if record.reopened:
        out[field("reopened")] += 1
    for transfer in record.transfers:
        out[field("transfers", "route", f"{transfer.from_queue or NONE}>{transfer.to_queue}")] += 1
    if record.to_agent is not None:
        edge = _edge(record.to_agent)
        out[field(f"tta@{edge}")] += 1
        out[field(f"tta@{edge}", "queue", queue)] += 1
        out[field(f"tta@{edge}", "channel", channel)] += 1
    if record.handle is not None:
        out[field("handle_seconds")] += record.handle
        out[field("handled")] += 1
    if record.abandoned_waiting:
        _by_each(out, "abandoned_waiting", {"queue": queue, "channel": channel})
        out[field("abandoned_after_failures")] += record.failed_bot_answers
    if record.told_wait is not None and record.real_wait is not None:
        out[field("promised", "queue", queue)] += 1
        out[field("promise_error_seconds", "queue", queue)] += abs(record.real_wait - record.told_wait)
        if record.real_wait > max(record.told_wait * (1 + PROMISE_SLACK),
                                  record.told_wait + PROMISE_SLACK_SECONDS):
            out[field("promise_broken", "queue", queue)] += 1
    if record.context_sufficient is not None:
        figure = "context_yes" if record.context_sufficient else "context_no"
        for dimension, value in (("trigger", record.trigger or NONE), ("intent", values["intent"])):
            out[field("context_rated", dimension, value)] += 1
            out[field(figure, dimension, value)] += 1
    if record.outcome is Outcome.RESOLVED:
        out[field("resolved_by_agent")] += 1


class Totals:
    """Counters summed over a span of days, read by figure and dimension."""

    def __init__(self, days: Iterable[Mapping[str, float]] = ()) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self.days = 0
        for day in days:
            self.add(day)

    def add(self, day: Mapping[str, float]) -> None:
        self.days += 1
        for name, amount in day.items():
            self._sums[name] += amount

    def __bool__(self) -> bool:
        return any(self._sums.values())

    def get(self, figure: str, dimension: str = ALL, value: str = "") -> float:
        return self._sums.get(field(figure, dimension, value), 0.0)

    def by(self, figure: str, dimension: str) -> dict[str, float]:
        """``value -> amount`` of one figure broken down by one dimension."""
        prefix = f"{figure}|{dimension}|"
        return {name[len(prefix):]: amount for name, amount in self._sums.items()
                if name.startswith(prefix) and amount}

    def histogram(self, dimension: str = ALL, value: str = "") -> dict[str, float]:
        return {edge: self.get(f"tta@{edge}", dimension, value) for edge in (*(f"{e:g}" for e in WAIT_EDGES),
                                                                             "inf")}

    def histogram_values(self, dimension: str) -> set[str]:
        found: set[str] = set()
        for name in self._sums:
            figure, dim, value = name.split("|", 2)
            if figure.startswith("tta@") and dim == dimension:
                found.add(value)
        return found


def percentile(histogram: Mapping[str, float], q: float) -> float | None:
    """The upper edge of the bucket in which the ``q`` share of waits falls (None without waits; inf past
    the last edge): as precise as the edges, which is what a review needs."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    seen = 0.0
    for edge, count in histogram.items():
        seen += count
        if seen >= q * total:
            return float(edge)
    return float("inf")
