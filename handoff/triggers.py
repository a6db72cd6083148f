"""Escalation triggers: which rules fire on one bot turn, and what the policy remembers for the next.

Pure functions of the snapshot; nothing here does I/O or reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from handoff.matching import NOTHING, Hit, Matches
from handoff.ruleset import RuleSet
from handoff.signals import MessageSignals
from sessions.models import BotTurn, Conversation, PolicySignals

# Reason codes, stable across versions: dashboards and review group by them.
EXPLICIT_REQUEST = "explicit_request"
HIGH_RISK = "high_risk_intent"
APPROVAL_REQUIRED = "approval_required"
UNSUPPORTED = "unsupported_workflow"
NEGATIVE_SENTIMENT = "negative_sentiment"
FAILED_TURNS = "failed_turns"
LOW_CONFIDENCE = "low_confidence"

# When two triggers have the same priority, the earlier one here is the stated reason.
REASONS = (
    HIGH_RISK, EXPLICIT_REQUEST, APPROVAL_REQUIRED, UNSUPPORTED, NEGATIVE_SENTIMENT, FAILED_TURNS,
    LOW_CONFIDENCE,
)


@dataclass(frozen=True, slots=True)
class Fired:
    reason: str
    rule: str
    priority: int
    explanation: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TriggerResult:
    fired: tuple[Fired, ...]
    signals: PolicySignals
    # The customer asked for a person, but not often enough yet to transfer.
    early_request: bool
    # This turn is the first low-confidence one and the rules want a clarifying question.
    clarify: bool
    explicit: bool


def evaluate(
    rules: RuleSet, conversation: Conversation, text: str, turn: BotTurn, message: MessageSignals
) -> TriggerResult:
    cfg = rules.triggers
    prev = conversation.signals
    # Only an intent the bot was sure enough to answer on counts; a fallback's best guess does not. To fire a
    # trigger by itself, the intent must also clear the rules' intent_confidence.
    intent = None if turn.fallback else turn.intent
    family = None if turn.fallback else turn.family
    sure = turn.confidence >= cfg.intent_confidence
    fires, fires_family = (intent, family) if sure else (None, None)
    matches = rules.matcher.match(text)
    fired = _high_risk(rules, matches, fires, fires_family)
    unsupported = _unsupported(rules, matches, fires)

    er = cfg.explicit_request
    asked = matches.found("explicit_request") if er.enabled else NOTHING
    explicit = er.enabled and (asked.hit is not None or (
        fires is not None and fires in er.intents and not asked.vetoed))
    heard = ""
    if not (fired or unsupported or explicit) and (turn.fallback or not sure):
        # No phrase matched and the bot was unsure: the classifier's second opinion, if the rules have one.
        heard = _second_opinion(rules, matches, text, fired)
        explicit = bool(heard) and er.enabled
    requests = prev.explicit_requests + 1 if explicit else prev.explicit_requests
    # Once told live help is not available here, asking again always goes through: no second argument.
    early_request = explicit and requests < er.transfer_on_request and not prev.declined
    if explicit and not early_request:
        fired.append(Fired(EXPLICIT_REQUEST, "explicit_request", er.priority,
                           f"asked for a person {_times(requests)}" + (f" ({heard})" if heard else "")))

    ar = cfg.approval_required
    if ar.enabled and fires is not None and fires in ar.intents and (
        conversation.customer.verified or not ar.require_verified
    ):
        fired.append(Fired(APPROVAL_REQUIRED, "approval_required", ar.priority,
                           f"{intent} needs a person's approval for a signed-in customer"))

    if unsupported is not None:
        fired.append(unsupported)

    sentiment, upset = _sentiment(rules, matches, prev.sentiment, message.sentiment)
    if upset is not None:
        fired.append(upset)

    # A failed turn: a fallback, an empty answer, or the customer asking the same thing again.
    repeated = intent is not None and intent == prev.last_intent and not explicit
    failed = turn.fallback or not turn.text.strip() or repeated
    failed_turns = prev.failed_turns + 1 if failed else 0
    hit = _failed_limit(rules, family or prev.last_family, conversation.channel, failed_turns)
    if failed and hit is not None:
        fired.append(hit)

    lc = cfg.low_confidence
    low = lc.enabled and turn.confidence < lc.below and not explicit
    low_turns = prev.low_confidence_turns + 1 if low else 0
    if low and low_turns >= lc.escalate_after:
        fired.append(Fired(LOW_CONFIDENCE, "low_confidence", lc.priority,
                           f"{low_turns} answers in a row below confidence {lc.below}"))
    clarify = low and lc.clarify_first and low_turns == 1 and low_turns < lc.escalate_after

    if early_request and fired:
        # Handed over anyway, for another reason: that the customer asked for a person is the clearest
        # reason to state and record, whatever the bot's one offer of help would have been.
        fired.append(Fired(EXPLICIT_REQUEST, "explicit_request", er.priority,
                           f"asked for a person {_times(requests)}"))
        early_request = False
    signals = PolicySignals(
        explicit_requests=requests,
        failed_turns=failed_turns,
        low_confidence_turns=low_turns,
        declined=prev.declined,
        sentiment=sentiment,
        language=message.language or prev.language,
        last_intent=intent,
        last_family=family or prev.last_family,
    )
    return TriggerResult(tuple(fired), signals, early_request, clarify, explicit)


def _high_risk(rules: RuleSet, matches: Matches, intent: str | None, family: str | None) -> list[Fired]:
    fired: list[Fired] = []
    for rule in rules.triggers.high_risk:
        if not rule.enabled:
            continue
        found = matches.found(f"high_risk.{rule.id}")
        why = None
        if found.hit is not None:
            why = _words(found.hit)
        elif found.vetoed:
            # "I don't want to cancel my membership": the bot's intent says cancel, the words say otherwise.
            continue
        elif intent is not None and intent in rule.intents:
            why = f"intent {intent}"
        elif family is not None and family in rule.families:
            why = f"intent family {family}"
        if why:
            explanation = rule.explanation or f"{rule.id} is handled by people"
            fired.append(Fired(HIGH_RISK, f"high_risk.{rule.id}", rule.priority, f"{explanation} ({why})",
                               tuple(rule.tags)))
    return fired


def _sentiment(
    rules: RuleSet, matches: Matches, history: list[float], score: float
) -> tuple[list[float], Fired | None]:
    """The customer's latest scores, this message's included, and the trigger if they are upset enough."""
    ns = rules.triggers.negative_sentiment
    if ns.enabled and score > ns.at_or_below and matches.found("negative_sentiment").hit is not None:
        score = ns.at_or_below  # written anger the scorer cannot read counts as just negative enough
    sentiment = [*history, score][-ns.window:]
    negatives = sum(1 for s in sentiment if s <= ns.at_or_below)
    if ns.enabled and score <= ns.at_or_below and negatives >= ns.min_negative:
        return sentiment, Fired(NEGATIVE_SENTIMENT, "negative_sentiment", ns.priority,
                                f"{negatives} of the last {len(sentiment)} messages were negative")
    return sentiment, None


def _second_opinion(rules: RuleSet, matches: Matches, text: str, fired: list[Fired]) -> str:
    """Ask the rules' classifier. A confident guess of a high-risk rule or an unsupported workflow is
    appended to ``fired``; a guess of a request for a person is returned as its explanation, for the caller
    to count like any other request. Nothing fires when the customer's words named that topic only negated
    or in another sense."""
    classifier, settings = rules.classifier, rules.triggers.classifier
    if classifier is None or settings is None:
        return ""
    guess = classifier.guess(text)
    if guess.label not in rules.classifier_labels or guess.probability < settings.min_probability:
        return ""
    if matches.found(guess.label).vetoed:
        return ""
    why = f"classifier {guess.probability:.2f} on the words {', '.join(repr(w) for w in guess.words)}"
    if guess.label == EXPLICIT_REQUEST:
        return why
    uw = rules.triggers.unsupported_workflow
    if guess.label == "unsupported_workflow" and uw.enabled:
        unsupported = f"a workflow the bot does not support ({why})"
        fired.append(Fired(UNSUPPORTED, guess.label, uw.priority, unsupported))
    for rule in rules.triggers.high_risk:
        if guess.label == f"high_risk.{rule.id}" and rule.enabled:
            explanation = f"{rule.explanation or f'{rule.id} is handled by people'} ({why})"
            fired.append(Fired(HIGH_RISK, guess.label, rule.priority, explanation, tuple(rule.tags)))
    return ""


def _unsupported(rules: RuleSet, matches: Matches, intent: str | None) -> Fired | None:
    uw = rules.triggers.unsupported_workflow
    if not uw.enabled:
        return None
    found = matches.found("unsupported_workflow")
    if found.hit is not None:
        what = _words(found.hit)
    elif intent is not None and intent in uw.intents and not found.vetoed:
        what = f"intent {intent}"
    else:
        return None
    explanation = f"a workflow the bot does not support ({what})"
    return Fired(UNSUPPORTED, "unsupported_workflow", uw.priority, explanation)


def _words(hit: Hit) -> str:
    """Which words fired, and the pattern they matched when that says more than the words themselves."""
    if hit.words == hit.pattern.source.casefold():
        return f'the words "{hit.words}"'
    return f'the words "{hit.words}", pattern "{hit.pattern.source}" ({hit.pattern.locale})'


def strongest(fired: tuple[Fired, ...]) -> Fired:
    """The stated reason: the highest priority, then the order of REASONS."""
    return min(fired, key=lambda f: (-f.priority, REASONS.index(f.reason)))


def _failed_limit(rules: RuleSet, family: str | None, channel: str, failed_turns: int) -> Fired | None:
    """The first matching per-family/per-channel limit applies, else the default."""
    ft = rules.triggers.failed_turns
    rule, limit = "failed_turns", ft.after
    for index, candidate in enumerate(ft.limits):
        if (candidate.families and family not in candidate.families) or (
            candidate.channels and channel not in candidate.channels
        ):
            continue
        rule, limit = f"failed_turns.limits[{index}]", candidate.after
        break
    if not ft.enabled or failed_turns < limit:
        return None
    return Fired(FAILED_TURNS, rule, ft.priority,
                 f"{failed_turns} bot answers in a row did not help (limit {limit})")


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"
