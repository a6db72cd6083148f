"""Replays recorded conversations through two rule sets and reports what a change of rules would change.

Each customer message is paired with the bot turn recorded for it (intent, confidence, ...), and both rule
sets decide on the same inputs at the time the message was sent. A conversation's outcome is its first
handoff (or none). Replay stops where the recording stops having bot turns: after the real handoff, what
the bot would have said is unknown.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from handoff.policy import Decision, TurnInput, decide
from handoff.ruleset import RuleSet
from handoff.signals import SignalReader
from sessions.models import BotTurn, Conversation, Message, PolicySignals, SenderKind

EXAMPLES = 3


class Recording(BaseModel):
    """One line of a JSONL export (`handoff-gateway conversations --jsonl`)."""

    conversation: Conversation
    messages: list[Message] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    escalated: bool
    turn: int | None = None
    reason: str | None = None
    queue: str | None = None
    mode: str | None = None


@dataclass
class Comparison:
    live_version: str
    candidate_version: str
    conversations: int = 0
    turns: int = 0
    # group ("intent", name) or ("channel", name) -> [conversations, escalated live, escalated candidate]
    groups: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    newly_escalated: list[str] = field(default_factory=list)
    no_longer_escalated: list[str] = field(default_factory=list)
    queue_moves: Counter[tuple[str, str]] = field(default_factory=Counter)
    queue_move_examples: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    reason_changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    mode_changes: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def escalated(self) -> tuple[int, int]:
        live = sum(v[1] for (kind, _), v in self.groups.items() if kind == "channel")
        candidate = sum(v[2] for (kind, _), v in self.groups.items() if kind == "channel")
        return live, candidate


def turns_of(recording: Recording) -> list[tuple[Message, BotTurn]]:
    """Customer messages paired with the bot turn recorded right after each."""
    pairs: list[tuple[Message, BotTurn]] = []
    pending: Message | None = None
    for message in recording.messages:
        if message.sender is SenderKind.CUSTOMER:
            pending = message
        elif pending is not None and message.turn is not None and message.sender in (
            SenderKind.BOT, SenderKind.SYSTEM
        ):
            turn = BotTurn(text=message.text or " ", **message.turn.model_dump())
            pairs.append((pending, turn))
            pending = None
        elif message.sender is SenderKind.AGENT:
            break
    return pairs


def outcome_of(
    rules: RuleSet, start: Conversation, pairs: list[tuple[Message, BotTurn]], signals: SignalReader
) -> Outcome:
    conversation = start
    for number, (message, turn) in enumerate(pairs, start=1):
        said = signals.read(message.text, conversation.signals.language)
        decision: Decision = decide(TurnInput(conversation, message.text, turn, said, message.ts), rules)
        if decision.leaves_bot:
            assert decision.trigger is not None and decision.route is not None
            return Outcome(True, number, decision.trigger.reason, decision.route.queue, decision.route.mode)
        conversation = conversation.model_copy(update={"signals": decision.signals})
    return Outcome(False)


def compare(
    live: RuleSet, candidate: RuleSet, recordings: Iterable[Recording], signals: SignalReader
) -> Comparison:
    report = Comparison(live.version, candidate.version)
    for recording in recordings:
        pairs = turns_of(recording)
        if not pairs:
            continue
        start = recording.conversation.model_copy(update={"signals": PolicySignals(), "handoff": None})
        before = outcome_of(live, start, pairs, signals)
        after = outcome_of(candidate, start, pairs, signals)
        cid = recording.conversation.id
        report.conversations += 1
        report.turns += len(pairs)
        intent = next((t.intent for _, t in pairs if t.intent and not t.fallback), None) or "(none)"
        for group in (("intent", intent), ("channel", recording.conversation.channel)):
            counts = report.groups[group]
            counts[0] += 1
            counts[1] += before.escalated
            counts[2] += after.escalated
        if after.escalated and not before.escalated:
            report.newly_escalated.append(cid)
        elif before.escalated and not after.escalated:
            report.no_longer_escalated.append(cid)
        elif before.escalated and after.escalated:
            if before.queue != after.queue:
                move = (str(before.queue), str(after.queue))
                report.queue_moves[move] += 1
                if len(report.queue_move_examples[move]) < EXAMPLES:
                    report.queue_move_examples[move].append(cid)
            if before.reason != after.reason:
                report.reason_changes[(str(before.reason), str(after.reason))] += 1
            if before.mode != after.mode:
                report.mode_changes[(str(before.mode), str(after.mode))] += 1
    return report


def render(report: Comparison) -> str:
    """A plain-text report for a person deciding whether to ship the candidate rules."""
    lines = [
        f"replayed {report.conversations} conversations ({report.turns} bot turns)",
        f"live rules:      {report.live_version}",
        f"candidate rules: {report.candidate_version}",
    ]
    if not report.conversations:
        return "\n".join([*lines, "nothing to replay: no recorded bot turns"])
    live, candidate = report.escalated
    lines.append(f"escalated: {live} -> {candidate} ({_rate(live, report.conversations)} -> "
                 f"{_rate(candidate, report.conversations)})")
    for kind in ("intent", "channel"):
        lines.append(f"\nescalation rate by {kind}:")
        rows = sorted(((name, v) for (k, name), v in report.groups.items() if k == kind),
                      key=lambda row: -row[1][0])
        for name, (total, before, after) in rows:
            marker = "  *" if before != after else ""
            lines.append(f"  {name:<28} {total:>5}  {_rate(before, total):>6} -> {_rate(after, total):>6}"
                         f"{marker}")
    newly, no_longer = report.newly_escalated, report.no_longer_escalated
    lines.append("")
    lines.append(f"newly escalated: {len(newly)}{_examples(newly)}")
    lines.append(f"no longer escalated: {len(no_longer)}{_examples(no_longer)}")
    lines.append(f"queue moves: {sum(report.queue_moves.values())}")
    for move, count in report.queue_moves.most_common():
        lines.append(f"  {move[0]} -> {move[1]}: {count}{_examples(report.queue_move_examples[move])}")
    for title, changes in (("reason changes", report.reason_changes), ("mode changes", report.mode_changes)):
        if changes:
            lines.append(f"{title}:")
            lines.extend(f"  {a} -> {b}: {n}" for (a, b), n in changes.most_common())
    return "\n".join(lines)


def _rate(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def _examples(ids: list[str]) -> str:
    return f"  (e.g. {', '.join(ids[:EXAMPLES])})" if ids else ""
