"""Checks across rule files: what each file's own schema cannot see.

Errors make a set unloadable (a route to a queue that does not exist would strand customers); warnings are
printed by `rules check` for a person to judge (a rule shadowed by an earlier one, a queue with no hours).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from handoff import hours as business_hours
from handoff import messages
from handoff.phrase_lint import phrase_warnings
from handoff.problems import Problem
from handoff.ruleset import ALWAYS, RuleSet
from handoff.schema import Match, Queue
from handoff.triggers import REASONS

# Channels the gateway has, or will have, adapters for; rules naming another channel can never match.
KNOWN_CHANNELS = frozenset({"webchat", "sms", "whatsapp", "voice"})


class _Report:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.problems: list[Problem] = []

    def add(self, file: str, loc: Sequence[str | int], message: str, severity: str = "error") -> None:
        source = self.rules.sources.get(file)
        line = source.line(loc) if source is not None else None
        self.problems.append(Problem(file, line, ".".join(str(p) for p in loc), message, severity))


def cross_check(rules: RuleSet) -> list[Problem]:
    """References between files: queues, hours, message keys. Run on every load."""
    report = _Report(rules)
    queues = rules.queues.queues
    hours = rules.queues.hours

    def check_hours(file: str, loc: list[str | int], name: str | None, allow_always: bool) -> None:
        if name is None or (allow_always and name == ALWAYS) or name in hours:
            return
        report.add(file, loc, f"no hours named {name!r} (known: {', '.join(sorted(hours)) or 'none'})")

    def check_queue(file: str, loc: list[str | int], name: str) -> None:
        if name not in queues:
            report.add(file, loc, f"no queue named {name!r} (known: {', '.join(sorted(queues))})")
        elif queues[name].retired:
            report.add(file, loc, f"queue {name!r} is retired; route somewhere else")

    for qname, queue in queues.items():
        check_hours("queues.yaml", ["queues", qname, "hours"], queue.hours, allow_always=True)
        if queue.overflow is not None:
            check_queue("queues.yaml", ["queues", qname, "overflow", "to"], queue.overflow.to)
            if queue.overflow.to == qname:
                report.add("queues.yaml", ["queues", qname, "overflow", "to"],
                           "a queue cannot overflow to itself")
        for channel, mode in queue.after_hours.items():
            if channel != "default" and channel not in KNOWN_CHANNELS:
                report.add("queues.yaml", ["queues", qname, "after_hours", channel],
                           _unknown_channel(channel))
            if mode == "callback" and queue.callbacks is None:
                report.add("queues.yaml", ["queues", qname, "after_hours", channel],
                           "after hours promises a callback, but the queue has no `callbacks:` (its slots "
                           "and attempts); add one or choose async")

    for index, rule in enumerate(rules.routing.rules):
        check_queue("routing.yaml", ["rules", index, "queue"], rule.queue)
        for condition, hours_name in (("during", rule.when.during), ("outside", rule.when.outside)):
            check_hours("routing.yaml", ["rules", index, "when", condition], hours_name, allow_always=False)
    check_queue("routing.yaml", ["fallback", "queue"], rules.routing.fallback.queue)

    for index, blocked in enumerate(rules.triggers.explicit_request.not_offered):
        loc: list[str | int] = ["explicit_request", "not_offered", index]
        check_hours("triggers.yaml", [*loc, "only_during"], blocked.only_during, allow_always=False)
        if blocked.message not in rules.messages.messages:
            report.add("triggers.yaml", [*loc, "message"], f"no message {blocked.message!r} in messages.yaml")

    required = list(messages.REQUIRED)
    if any(q.callbacks is not None for q in queues.values()):
        required += messages.CALLBACK
    for key in required:
        if key not in rules.messages.messages:
            report.add("messages.yaml", ["messages"], f"message {key!r} is required and missing")
    for key, texts in rules.messages.messages.items():
        for name, value in texts.items():
            pairs = [(name, value)] if isinstance(value, str) else list(value.items())
            for locale, text in pairs:
                where = [key, name] if isinstance(value, str) else [key, name, locale]
                if problem := messages.check_template(text):
                    report.add("messages.yaml", ["messages", *where], problem)
    return report.problems


def lint(
    rules: RuleSet, known_intents: Iterable[str] = (), known_families: Iterable[str] = ()
) -> list[Problem]:
    """Everything `rules check` reports: the cross-file errors plus warnings for a person to judge."""
    report = _Report(rules)
    report.problems.extend(cross_check(rules))
    intents, families = set(known_intents), set(known_families)
    locales = rules.meta.locales
    queues = rules.queues.queues

    for qname, queue in queues.items():
        if queue.hours is None:
            report.add("queues.yaml", ["queues", qname], "queue has no hours; write `hours: always` if it is "
                       "staffed around the clock", "warning")
        elif queue.hours in rules.queues.hours and business_hours.never_open(rules.queues.hours[queue.hours]):
            report.add("queues.yaml", ["queues", qname, "hours"], "these hours are never open", "warning")
        _lint_callbacks(report, qname, queue)
    used = {r.queue for r in rules.routing.rules} | {rules.routing.fallback.queue}
    used |= {q.overflow.to for q in queues.values() if q.overflow}
    for qname, queue in queues.items():
        if qname not in used and not queue.retired:
            report.add("queues.yaml", ["queues", qname], "nothing routes to this queue", "warning")

    _lint_routing(report, intents, families)
    report.problems.extend(phrase_warnings(rules))

    if intents:
        triggers = rules.triggers
        named: list[tuple[str, list[str]]] = [("explicit_request", triggers.explicit_request.intents),
                 ("approval_required", triggers.approval_required.intents),
                 ("unsupported_workflow", triggers.unsupported_workflow.intents)]
        located: list[tuple[list[str | int], list[str]]] = [([where], names) for where, names in named]
        located += [(["high_risk", i], r.intents) for i, r in enumerate(triggers.high_risk)]
        for loc, names in located:
            for intent in sorted(set(names) - intents):
                report.add("triggers.yaml", [*loc, "intents"],
                           f"the bot has no intent {intent!r}; this trigger can never fire on it", "warning")

    for key, texts in rules.messages.messages.items():
        general = {k for k, v in texts.items() if isinstance(v, str)}
        for locale in locales:
            if locale not in general:
                report.add("messages.yaml", ["messages", key], f"no {locale!r} text for {key!r}; customers "
                           f"writing {locale} get {rules.meta.default_locale!r}",
                           "error" if key in messages.REQUIRED or key in messages.CALLBACK else "warning")
        for channel, value in texts.items():
            if isinstance(value, dict):
                if channel not in KNOWN_CHANNELS:
                    report.add("messages.yaml", ["messages", key, channel], _unknown_channel(channel))
                for locale in sorted(set(general) - set(value)):
                    report.add("messages.yaml", ["messages", key, channel],
                               f"no {locale!r} text for {channel}; {locale} customers on {channel} get the "
                               "general wording", "warning")
    return report.problems


def _lint_callbacks(report: _Report, qname: str, queue: Queue) -> None:
    """Callback offers that can never be made, or promises a team cannot keep."""
    offer = queue.callbacks
    if offer is None:
        return
    loc: list[str | int] = ["queues", qname, "callbacks"]
    hours = report.rules.queues.hours.get(queue.hours or "")
    if queue.retired:
        report.add("queues.yaml", loc, "a retired queue takes no callbacks; nothing will ever call back",
                   "warning")
    if "after_hours" in offer.offer_when and (hours is None or business_hours.always_open(hours)):
        report.add("queues.yaml", [*loc, "offer_when"],
                   "offered after hours, but this queue is never closed: that offer is never made", "warning")
    if hours is not None and business_hours.never_open(hours):
        report.add("queues.yaml", [*loc], "these hours are never open: no callback slot can be offered")
    if offer.callback_after_seconds is not None and "wait_over" not in offer.offer_when:
        report.add("queues.yaml", [*loc, "callback_after_seconds"],
                   "set, but offer_when lacks wait_over, so it is never used", "warning")
    longest = max((end - start for day in (hours.spans_by_weekday if hours else ()) for start, end in day),
                  default=24 * 60)
    if offer.slot_minutes > longest:
        report.add("queues.yaml", [*loc, "slot_minutes"],
                   f"longer than the longest open span ({longest} minutes): slots never fit in open hours",
                   "warning")


def _lint_routing(report: _Report, intents: set[str], families: set[str]) -> None:
    rules = report.rules
    never = "this rule can never match"
    trigger_rules = trigger_names(rules)
    earlier: list[tuple[str, Match]] = []
    for index, rule in enumerate(rules.routing.rules):
        loc: list[str | int] = ["rules", index, "when"]
        for reason in rule.when.reasons:
            if reason not in REASONS:
                report.add("routing.yaml", [*loc, "reasons"],
                           f"unknown reason {reason!r}; {never} (reasons: {', '.join(REASONS)})")
        for trigger in rule.when.triggers:
            if trigger not in trigger_rules:
                report.add("routing.yaml", [*loc, "triggers"],
                           f"unknown trigger {trigger!r}; {never} (triggers: {', '.join(trigger_rules)})")
        for channel in rule.when.channels:
            if channel not in KNOWN_CHANNELS:
                report.add("routing.yaml", [*loc, "channels"], f"{_unknown_channel(channel)}; {never}")
        for language in rule.when.languages:
            if language not in rules.meta.locales:
                report.add("routing.yaml", [*loc, "languages"],
                           f"language {language!r} is not in ruleset.yaml locales, so these customers get "
                           "default-locale messages", "warning")
        for intent in sorted(set(rule.when.intents) - intents if intents else ()):
            report.add("routing.yaml", [*loc, "intents"], f"the bot has no intent {intent!r}; {never}",
                       "warning")
        for family in sorted(set(rule.when.families) - families if families else ()):
            report.add("routing.yaml", [*loc, "families"],
                       f"the bot has no intent family {family!r}; {never}", "warning")
        if rule.when.during and rule.when.during == rule.when.outside:
            report.add("routing.yaml", loc, f"during and outside the same hours; {never}")
        for earlier_id, when in earlier:
            if _covers(when, rule.when):
                report.add("routing.yaml", ["rules", index, "id"],
                           f"rule {rule.id!r} is shadowed by the earlier rule {earlier_id!r}, which matches "
                           "everything it matches; it can never apply", "warning")
                break
        earlier.append((rule.id, rule.when))


def trigger_names(rules: RuleSet) -> list[str]:
    """Every trigger rule name a decision can report."""
    ft = rules.triggers.failed_turns
    return [
        "explicit_request", *(f"high_risk.{r.id}" for r in rules.triggers.high_risk), "approval_required",
        "unsupported_workflow", "negative_sentiment", "failed_turns",
        *(f"failed_turns.limits[{i}]" for i in range(len(ft.limits))), "low_confidence",
    ]


def _covers(first: Match, later: Match) -> bool:
    """True when every handoff the later rule matches is matched by the first."""
    for name in ("reasons", "triggers", "intents", "families", "tiers", "languages", "countries", "channels"):
        wanted: list[str] = getattr(first, name)
        if wanted and not (getattr(later, name) and set(getattr(later, name)) <= set(wanted)):
            return False
    return all(
        getattr(first, name) is None or getattr(first, name) == getattr(later, name)
        for name in ("during", "outside")
    )


def _unknown_channel(channel: str) -> str:
    return f"unknown channel {channel!r} (channels: {', '.join(sorted(KNOWN_CHANNELS))})"
