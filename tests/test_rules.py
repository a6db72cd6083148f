"""The rule files: loading, errors that point at the line, lint, business hours, routing facts, scenarios."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.settings import DEMO_RULES
from handoff.hours import is_open, next_open
from handoff.lint import lint
from handoff.loader import load_rules
from handoff.policy import Action, TurnInput, decide
from handoff.problems import RulesError
from handoff.routing import country_of_number
from handoff.ruleset import RuleSet
from handoff.scenarios import Scenario, run_scenario
from handoff.signals import MessageSignals, VaderSentiment, default_signal_reader
from sessions.models import BotTurn, Conversation, Customer, Identity

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(DEMO_RULES)


@pytest.fixture
def copy_rules(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the shipped rules with text replaced in one file."""

    def edit(file: str, old: str, new: str) -> Path:
        target = tmp_path / "rules"
        if not target.exists():
            shutil.copytree(DEMO_RULES, target)
        path = target / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new, 1))
        return target

    return edit


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(directory)
    return [str(p) for p in caught.value.problems]


# -- loading -------------------------------------------------------------------------------------------
def test_shipped_rules_load_clean_with_a_version_and_content_hash(rules: RuleSet) -> None:
    assert rules.version == f"2026-11-30.1+{rules.digest[:12]}"
    assert [p for p in lint(rules) if p.severity == "error"] == []


def test_any_edit_changes_the_hash_even_with_the_same_declared_version(
    rules: RuleSet, copy_rules: Callable[..., Path]
) -> None:
    edited = load_rules(copy_rules("triggers.yaml", "priority: 4", "priority: 5"))
    assert edited.meta.version == rules.meta.version and edited.digest != rules.digest


def test_a_schema_error_names_file_line_and_field(copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("triggers.yaml", "  below: 0.72", "  below: 1.72")
    problems = problems_of(directory)
    line = next(n for n, text in enumerate((directory / "triggers.yaml").read_text().splitlines(), 1)
                if "below: 1.72" in text)
    assert problems == [f"triggers.yaml:{line}: low_confidence.below: Input should be less than or equal to 1"]


def test_a_typo_in_a_key_is_an_error_not_a_silently_ignored_rule(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("triggers.yaml", "  escalate_after: 2", "  escalate_afer: 2"))
    assert any("low_confidence.escalate_afer: Extra inputs are not permitted" in p for p in problems)


def test_bad_hours_and_time_zone_are_explained(copy_rules: Callable[..., Path]) -> None:
    copy_rules("queues.yaml", '      mon-fri: "09:00-18:00"', '      mon-fri: "18:00-09:00"')
    directory = copy_rules("queues.yaml", "timezone: Europe/Madrid", "timezone: Europe/Madird")
    problems = "\n".join(problems_of(directory))
    assert "hours.de_support.weekly: '18:00-09:00': closing time must be after opening time" in problems
    assert "hours.es_support.timezone: unknown time zone 'Europe/Madird'" in problems


def test_an_unknown_holiday_calendar_is_refused(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("queues.yaml", "subdivision: BE", "subdivision: XX"))
    assert any("DE has no subdivision 'XX'" in p for p in problems)


def test_a_route_to_a_missing_or_retired_queue_is_refused(copy_rules: Callable[..., Path]) -> None:
    copy_rules("routing.yaml", "    queue: accounts", "    queue: acounts")
    problems = problems_of(copy_rules("routing.yaml", "    queue: support_es", "    queue: phone_legacy"))
    assert any("routing.yaml:" in p and "no queue named 'acounts'" in p for p in problems)
    assert any("queue 'phone_legacy' is retired" in p for p in problems)


def test_invalid_yaml_points_at_the_line(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("routing.yaml", "  - id: billing\n", "  - id: [billing\n"))
    assert len(problems) == 1 and problems[0].startswith("routing.yaml:") and "not valid YAML" in problems[0]


def test_a_missing_file_and_a_missing_message_are_named(tmp_path: Path, copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("messages.yaml", "  clarify:", "  clarifying:")
    assert any("message 'clarify' is required and missing" in p for p in problems_of(directory))
    (directory / "routing.yaml").unlink()
    assert "routing.yaml: file is missing" in problems_of(directory)


def test_unknown_placeholder_in_a_message_is_refused(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("messages.yaml", "our {queue} team", "our {team} team"))
    assert any("unknown placeholder {team}" in p for p in problems)


def test_a_message_that_cannot_be_filled_in_is_refused_not_crashed_on(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("messages.yaml", "I can get you to a person.", "I can get you } a person."))
    assert any("messages.deflect.en: cannot be filled in" in p for p in problems)
    problems = problems_of(copy_rules("messages.yaml", "our {queue} team", "our {queue:d} team"))
    assert any("cannot be filled in" in p for p in problems)


def test_closure_times_must_be_quoted_and_in_order(copy_rules: Callable[..., Path]) -> None:
    problems = problems_of(copy_rules("queues.yaml", 'from: "14:00"', "from: 14:00"))
    assert any('closures.0.from: Value error, write times as "HH:MM" in quotes' in p
               or 'closures.0.from: write times as "HH:MM" in quotes, e.g. "14:00" (got 840)' in p
               for p in problems), problems


# -- lint ----------------------------------------------------------------------------------------------
def test_lint_finds_shadowed_and_never_matching_rules(copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("routing.yaml", "fallback:", """  - id: gold-billing
    when: {families: [billing], tiers: [gold]}
    queue: billing
  - id: by-fax
    when: {channels: [fax], reasons: [angry]}
    queue: general
  - id: made-up-family
    when: {families: [astrology]}
    queue: general

fallback:""")
    problems = problems_of(directory)  # a rule that can never match is an error: the set is refused
    assert any("unknown reason 'angry'; this rule can never match" in p for p in problems)
    assert any("unknown channel 'fax'" in p for p in problems)
    # Without the never-matching rule the set loads, and the lint reports what a person should judge.
    directory = copy_rules("routing.yaml", "    when: {channels: [fax], reasons: [angry]}\n", "    when: {}\n")
    found = [(p.severity, str(p)) for p in lint(load_rules(directory), {"order_status"}, {"billing", "orders"})]
    assert any(s == "warning" and "'gold-billing' is shadowed by the earlier rule 'billing'" in t for s, t in found)
    assert any(s == "warning" and "no intent family 'astrology'" in t for s, t in found)
    assert any(s == "warning" and "'made-up-family' is shadowed by the earlier rule 'by-fax'" in t for s, t in found)


def test_lint_reports_missing_translations_and_queues_without_hours(copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("queues.yaml", "    name: Atención al cliente\n    hours: es_support\n",
                           "    name: Atención al cliente\n")
    found = [(p.severity, str(p)) for p in lint(load_rules(directory))]
    assert any(s == "warning" and "queues.support_es: queue has no hours" in t for s, t in found)
    copy_rules("messages.yaml", '    es: "en cuanto vuelva a abrir"\n', "")
    line = _line(directory / "messages.yaml", "  back_unknown:")
    assert (f"messages.yaml:{line}: messages.back_unknown: no 'es' text for 'back_unknown'; customers "
            "writing es get 'en'") in problems_of(directory)


def _line(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


# -- business hours ------------------------------------------------------------------------------------
def test_hours_follow_the_team_time_zone_holidays_and_closures(rules: RuleSet) -> None:
    us = rules.queues.hours["us_support"]
    assert is_open(us, datetime(2026, 11, 27, 13, 0, tzinfo=UTC))  # Fri 08:00 New York
    assert not is_open(us, datetime(2026, 11, 27, 12, 59, tzinfo=UTC))
    assert not is_open(us, datetime(2026, 11, 26, 15, 0, tzinfo=UTC))  # Thanksgiving
    assert not is_open(us, datetime(2026, 12, 24, 19, 0, tzinfo=UTC))  # after the 14:00 early close
    assert is_open(us, datetime(2026, 12, 24, 18, 59, tzinfo=UTC))
    # Christmas Day is a holiday, so after Christmas Eve's early close the next opening is Saturday 10:00.
    assert next_open(us, datetime(2026, 12, 24, 19, 0, tzinfo=UTC)) == datetime(2026, 12, 26, 15, 0, tzinfo=UTC)


def test_hours_survive_daylight_saving_changes(rules: RuleSet) -> None:
    berlin = rules.queues.hours["de_support"]
    # Berlin moves to summer time on 29 March 2026: 09:00 local is 08:00Z the day after, 08:00Z before.
    assert is_open(berlin, datetime(2026, 3, 30, 7, 0, tzinfo=UTC))
    assert not is_open(berlin, datetime(2026, 3, 27, 7, 0, tzinfo=UTC))
    assert next_open(berlin, datetime(2026, 3, 28, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


# -- routing facts ---------------------------------------------------------------------------------------
def test_country_comes_from_the_phone_number() -> None:
    assert country_of_number("+4915112345678") == "DE"
    assert country_of_number("whatsapp:+34612345678") == "ES"
    assert country_of_number("cust-1001") is None
    assert country_of_number("+999") is None


def _turn(rules: RuleSet, customer: Customer, text: str, bot: BotTurn, channel: str = "webchat") -> Action:
    conversation = Conversation(id="c", channel=channel, customer=customer)
    return decide(TurnInput(conversation, text, bot, MessageSignals(), FRIDAY_MORNING), rules).action


def test_a_claimed_country_does_not_route_but_a_verified_one_does(rules: RuleSet) -> None:
    dispute = BotTurn(text="...", intent="order_status", family="orders", confidence=0.5)
    for verified, queue in (([], "general"), (["country"], "support_de")):
        customer = Customer(id="c", country="DE", verified_fields=verified)
        conversation = Conversation(id="c", channel="webchat", customer=customer)
        decision = decide(TurnInput(conversation, "x", dispute, MessageSignals(),
                                    FRIDAY_MORNING), rules)
        assert decision.action is Action.CLARIFY
        second = conversation.model_copy(update={"signals": decision.signals})
        decision = decide(TurnInput(second, "x", dispute, MessageSignals(), FRIDAY_MORNING), rules)
        assert decision.route is not None and decision.route.queue == queue


def test_identity_phone_number_routes_by_country(rules: RuleSet) -> None:
    customer = Customer(id="c", identities=[Identity(channel="sms", address="+41791234567")])
    conversation = Conversation(id="c", channel="sms", customer=customer)
    decision = decide(TurnInput(conversation, "my account was hacked", BotTurn(text="."), MessageSignals(),
                                FRIDAY_MORNING), rules)
    assert decision.route is not None and decision.route.queue == "trust_safety"  # risk beats country
    unsupported = decide(TurnInput(conversation, "wholesale please", BotTurn(text="."), MessageSignals(),
                                   FRIDAY_MORNING), rules)
    assert unsupported.route is not None and unsupported.route.queue == "support_de"
    assert unsupported.route.rule == "dach-numbers"


# -- scenarios -------------------------------------------------------------------------------------------
def test_the_scenario_runner_reports_a_wrong_expectation(rules: RuleSet) -> None:
    scenario = Scenario.model_validate({
        "name": "expects the wrong queue",
        "at": "2026-11-27T15:00:00Z",
        "turns": [{"say": "I want to dispute a charge", "bot": {"intent": "billing_dispute", "family": "billing"},
                   "expect": {"queue": "general", "message": ["no such words"]}}],
    })
    outcome = run_scenario(rules, scenario, {}, default_signal_reader(rules.meta.locales))
    assert not outcome.passed
    assert outcome.failures[0].startswith("turn 1 ('I want to dispute a charge'): expected queue general, got billing")
    assert "expected the message to contain 'no such words'" in outcome.failures[1]


def test_a_scenario_that_hands_off_too_early_fails(rules: RuleSet) -> None:
    scenario = Scenario.model_validate({
        "name": "keeps talking after a handoff",
        "at": "2026-11-27T15:00:00Z",
        "turns": [{"say": "chargeback!", "bot": {"intent": "billing_dispute"}}, {"say": "hello?"}],
    })
    outcome = run_scenario(rules, scenario, {}, default_signal_reader(rules.meta.locales))
    assert outcome.failures == ["turn 1 handed off; the later turns would never reach the bot"]


def test_a_conversations_language_stays_once_detected(rules: RuleSet) -> None:
    reader = default_signal_reader(rules.meta.locales)
    assert reader.read("Wo ist meine Bestellung, bitte?").language == "de"
    # A later message in another language does not flip the conversation's locale.
    assert reader.read("where is my order please", known_language="de").language == "de"
    assert reader.read("where is my order please").language == "en"


def test_sentiment_without_a_lexicon_word_is_what_vader_says() -> None:
    """The shortcut for texts with no word of Vader's lexicon gives what the full scorer gives, and texts
    with one (or with emoji, boosters, negations, emoticons, capitals, "!") still go to the full scorer."""
    vader = VaderSentiment()
    analyzer = vader._analyzer
    lexicon = sorted(analyzer.lexicon)
    words = [*lexicon[::97], "where", "is", "my", "order", "the", "no", "not", "very", "kind", "of", "but",
             "least", ":)", ":(", "<3", "ship!!!", "okay?", "(great)", "'bad'", "-", "...", "\U0001f620", "\u2764"]
    texts = [" ".join(words[(i * 31 + k * 17) % len(words)] for k in range(1 + i % 7)) for i in range(3000)]
    texts += [t.upper() for t in texts[:300]] + [t + "!!!" for t in texts[:300]]
    texts += ["Where is my order?", "Thank you.", "I HATE waiting", "not bad at all", "no problem", "   "]
    for text in texts:
        expected = float(analyzer.polarity_scores(text)["compound"]) if text.strip() else 0.0
        assert vader.score(text) == expected, text


# -- callbacks -------------------------------------------------------------------------------------------
def test_callback_settings_that_cannot_work_are_refused_or_flagged(copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("queues.yaml", "      offer_when: [after_hours, unstaffed, wait_over]\n"
                           "      callback_after_seconds: 600\n", "      offer_when: [wait_over]\n")
    assert any("offer_when: wait_over needs callback_after_seconds" in p for p in problems_of(directory))
    directory = copy_rules("queues.yaml", "      offer_when: [wait_over]\n",
                           "      offer_when: []\n      callback_after_seconds: 600\n")
    # A callback promised after hours by a queue without callback settings is an error.
    billing = ("    skills: [billing]\n    after_hours:\n      default: async\n      voice: voicemail\n"
               "    callbacks:\n      offer_when: [unstaffed]\n      max_attempts: 2\n      retry_minutes: 20\n")
    without = "    skills: [billing]\n    after_hours:\n      default: async\n      voice: callback\n"
    copy_rules("queues.yaml", billing, without)
    assert any("queues.billing.after_hours.voice: after hours promises a callback" in p
               for p in problems_of(directory))
    copy_rules("queues.yaml", without, billing)
    copy_rules("queues.yaml", "    name: Extended Support\n    hours: always\n",
               "    name: Extended Support\n    hours: always\n    callbacks:\n      offer_when: [after_hours]\n")
    found = [str(p) for p in lint(load_rules(directory)) if p.severity == "warning"]
    assert any("queues.general.callbacks.callback_after_seconds: set, but offer_when lacks wait_over" in p
               for p in found)
    assert any("queues.partner_overflow.callbacks.offer_when: offered after hours, but this queue is never "
               "closed" in p for p in found)


def test_a_queue_that_takes_callbacks_needs_their_messages(copy_rules: Callable[..., Path]) -> None:
    directory = copy_rules("messages.yaml", "  callback_cancelled:\n", "  callback_cancelled_old:\n")
    assert any("message 'callback_cancelled' is required and missing" in p for p in problems_of(directory))
