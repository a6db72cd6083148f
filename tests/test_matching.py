"""Trigger phrases matched by meaning: inflections, typos, negation, other senses, patterns, per language.

Each test says what a customer writes and whether the bot hands over, through the same `decide` the
gateway runs, with the shipped demo rules unless a test writes its own phrases.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.settings import DEMO_RULES
from handoff.lint import lint
from handoff.loader import load_rules
from handoff.matching import Analyzer, Matcher
from handoff.policy import Action, Decision, TurnInput, decide
from handoff.problems import RulesError
from handoff.ruleset import RuleSet
from handoff.signals import MessageSignals
from sessions.models import BotTurn, Conversation, Customer, PolicySignals
from tests.rule_edits import with_explicit_phrases

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
# The bot did not understand: only the customer's words can hand over.
NOT_UNDERSTOOD = BotTurn(text="Sorry?", confidence=0.2, fallback=True)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(DEMO_RULES)


def decided(rules: RuleSet, text: str, bot: BotTurn = NOT_UNDERSTOOD, asked_before: int = 0) -> Decision:
    conversation = Conversation(id="c", channel="webchat", customer=Customer(id="k"),
                                signals=PolicySignals(explicit_requests=asked_before))
    return decide(TurnInput(conversation, text, bot, MessageSignals(), FRIDAY_MORNING), rules)


def trigger_of(decision: Decision) -> str | None:
    if decision.trigger is not None:
        return decision.trigger.rule
    return "explicit_request" if decision.action is Action.DEFLECT else None


def matcher(phrases: dict[str, list[str]], unless: dict[str, list[str]] | None = None) -> Matcher:
    words = {locale: [w for p in sources for w in p.replace("|", " ").split()] for locale, sources in phrases.items()}
    return Matcher(Analyzer(["en", "de", "es"], words), {"t": (phrases, unless or {})})


# -- inflections, typos, word order -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "Ich möchte mit einer Mitarbeiterin sprechen",  # feminine
    "Kann ich mit einem Ihrer Mitarbeiter reden?",  # dative, words between
    "Gibt es Mitarbeitern, die mir helfen?",  # dative plural
    "Ich will mit einem echten Menschen sprechen",
    "bitte um Rückruf",
    "quiero hablar con una asesora",
    "¿Me comunicas con un agente?",
    "que me llamen por favor",
    "I'd like to speak with a real human being",
    "get me a reprsentative",  # a typo in a long word
])
def test_a_request_for_a_person_is_recognised_in_its_inflected_and_misspelt_forms(
    rules: RuleSet, text: str
) -> None:
    assert trigger_of(decided(rules, text)) == "explicit_request"


@pytest.mark.parametrize(("text", "rule"), [
    ("I was charged twice for the same order", "high_risk.billing-dispute"),
    ("Mir wurde die Bestellung doppelt abgebucht", "high_risk.billing-dispute"),
    ("me cobraron dos veces el mismo pedido", "high_risk.billing-dispute"),
    ("there is a charge on my card I don't recognise", "high_risk.fraud"),
    ("hay un cargo en mi tarjeta que no reconozco", "high_risk.fraud"),
    ("I'm going to take you to court over this", "high_risk.legal"),
    ("dann sehen wir uns vor Gericht", "high_risk.legal"),
    ("please close my account for good", "high_risk.cancellation"),
    ("meine Mitgliedschaft möchte ich kündigen", "high_risk.cancellation"),  # verb last, any order
])
def test_high_risk_topics_in_other_words_hand_over_even_when_the_bot_misreads_them(
    rules: RuleSet, text: str, rule: str
) -> None:
    misread = BotTurn(text="...", intent="shipping_cost", family="shipping", confidence=0.8)
    assert trigger_of(decided(rules, text, misread)) == rule


def test_a_typo_tolerance_never_turns_a_short_word_into_another() -> None:
    m = matcher({"en": ["hacker"], "es": ["hacker"]})
    assert m.search("t", "quiero hacer un pedido").hit is None  # "hacer" is five letters: compared as written
    assert m.search("t", "a hackr got in").hit is None
    assert m.search("t", "a hakcer got in").hit is not None  # two letters swapped in a long word
    assert m.search("t", "me hackearon la cuenta").hit is not None  # not a typo: Spanish stems meet at "hack"


# -- negation and other senses ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "I don't want to cancel my membership, I only want to know when it renews",
    "Ich will mein Konto NICHT löschen, nur die E-Mail ändern",
    "Ich will Plus nicht kündigen, nur pausieren",
    "no quiero cancelar mi membresía, solo pausarla",
])
def test_a_negated_topic_stays_with_the_bot_even_when_the_bot_reads_the_topic(rules: RuleSet, text: str) -> None:
    cancel = BotTurn(text="You can end Plus under Account.", intent="membership_cancel", family="billing",
                     confidence=0.9)
    decision = decided(rules, text, cancel)
    assert decision.action is Action.CONTINUE, decision.explanation


def test_inability_is_not_negation_and_a_new_clause_ends_it(rules: RuleSet) -> None:
    assert trigger_of(decided(rules, "why can't I just talk to a person")) == "explicit_request"
    # Spoken, without punctuation: the negation belongs to "the bot", not to the request that follows.
    assert trigger_of(decided(rules, "i dont want the bot i want to speak to a human")) == "explicit_request"
    assert trigger_of(decided(rules, "no need for a human, just tell me where my parcel is")) is None


@pytest.mark.parametrize("text", [
    "My customs agent needs the commercial invoice, where can I download it?",
    "The delay was a human error at the warehouse, when will it arrive now?",
    "Mi agente de aduanas necesita la factura",
    "Mensch, das ging schnell! Kann ich die Rechnung als PDF bekommen?",
    "Mein Bruder ist Anwalt und braucht die Rechnung auf seinen Namen",
    "A mi juicio la alfombra es más pequeña, ¿puedo devolverla?",
])
def test_a_listed_word_in_another_sense_does_not_hand_over(rules: RuleSet, text: str) -> None:
    assert trigger_of(decided(rules, text)) is None


def test_the_other_sense_also_overrules_the_bots_intent(rules: RuleSet) -> None:
    misread = BotTurn(text="...", intent="human_request", family="handoff", confidence=0.8)
    assert trigger_of(decided(rules, "my shipping agent asked for the invoice", misread)) is None
    # The same word used both ways: the request counts.
    both = decided(rules, "my shipping agent is useless, I want to talk to a human agent", misread)
    assert trigger_of(both) == "explicit_request"


def test_a_pattern_can_say_exactly_this_word() -> None:
    m = matcher({"de": ["=menschen"]})
    assert m.search("t", "einen Menschen bitte").hit is not None
    assert m.search("t", "Mensch, das ging schnell").hit is None  # same stem, not the same word


def test_the_decision_names_the_words_and_the_pattern_that_fired(rules: RuleSet) -> None:
    decision = decided(rules, "hab bei meiner bank ne rücklastschrift veranlasst")
    assert decision.trigger is not None and decision.trigger.rule == "high_risk.billing-dispute"
    assert 'the words "rucklastschrift"' in decision.explanation
    assert "(de)" in decision.explanation


def test_asking_for_a_person_is_the_stated_reason_when_another_trigger_hands_over_too(rules: RuleSet) -> None:
    # The second failed answer on a call hands over; the customer's first request for a person is why.
    conversation = Conversation(id="c", channel="voice", customer=Customer(id="k"),
                                signals=PolicySignals(failed_turns=1))
    inp = TurnInput(conversation, "no no the menu is useless i want a real person", NOT_UNDERSTOOD,
                    MessageSignals(), FRIDAY_MORNING)
    decision = decide(inp, rules)
    assert decision.action is Action.ESCALATE
    assert decision.trigger is not None and decision.trigger.reason == "explicit_request"
    assert "failed_turns" in [f.reason for f in decision.also]


def test_anger_in_a_language_the_scorer_does_not_read_counts(rules: RuleSet) -> None:
    angry = PolicySignals(sentiment=[-0.4])
    conversation = Conversation(id="c", channel="webchat", customer=Customer(id="k"), signals=angry)
    answered = BotTurn(text="...", intent="order_status", family="orders", confidence=0.9)
    inp = TurnInput(conversation, "Das ist eine Frechheit, ich bin stinksauer", answered, MessageSignals(0.0, "de"),
                    FRIDAY_MORNING)
    decision = decide(inp, rules)
    assert decision.trigger is not None and decision.trigger.reason == "negative_sentiment"


# -- rule files: syntax errors, the plain list form, rules check ------------------------------------------


@pytest.fixture
def edited(tmp_path: Path) -> Callable[[str, str], Path]:
    def edit(old: str, new: str) -> Path:
        target = tmp_path / "rules"
        if not target.exists():
            shutil.copytree(DEMO_RULES, target)
        path = target / "triggers.yaml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return target

    return edit


@pytest.mark.parametrize(("pattern", "says"), [
    ("... human", "a part cannot start with '...'"),
    ("talk to ...", "a part cannot end with '...'"),
    ("talk||speak", "an empty alternative"),
    ("ag*", "a prefix needs 3+ letters"),
    ("call & ", "an empty part"),
])
def test_a_broken_pattern_is_refused_with_its_line(
    edited: Callable[[str, str], Path], pattern: str, says: str
) -> None:
    directory = edited("      - callback\n", f"      - {pattern!r}\n")
    with pytest.raises(RulesError) as caught:
        load_rules(directory)
    problem = caught.value.problems[0]
    assert problem.file == "triggers.yaml" and problem.line is not None
    assert says in str(problem)


def test_a_plain_phrase_list_still_applies_to_every_language(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, target)
    path = target / "triggers.yaml"
    path.write_text(with_explicit_phrases(path.read_text(), "[human, mitarbeiter]"))
    rules = load_rules(target)
    assert trigger_of(decided(rules, "mit einer Mitarbeiterin bitte")) == "explicit_request"
    assert trigger_of(decided(rules, "humans please")) == "explicit_request"
    problems = [str(p) for p in lint(rules)]
    assert any("no de phrase matches 'mit einer Mitarbeiterin sprechen'" not in p for p in problems)
    assert any("no es phrase matches 'quiero hablar con una persona'" in p for p in problems)


def test_rules_check_warns_about_other_senses_everyday_words_and_missing_inflections(
    edited: Callable[[str, str], Path],
) -> None:
    edited("      - customs|shipping|travel|estate|insurance|freight|forwarding|delivery|carrier|courier|booking"
           "|sales|border|leasing|letting agent|agents\n", "")
    edited("      - call|ring|phone me|us ... back\n", "")
    edited("      - call|ring|phone me|us\n", "")
    directory = edited("      - fed up\n", "      - order\n")  # negative_sentiment has no `unless` list
    warnings = [str(p) for p in lint(load_rules(directory)) if p.severity == "warning"]
    assert any("'agent|agents' matches 'my shipping agent needs the invoice'" in w for w in warnings)
    assert any("the en phrase 'order' is one everyday word alone" in w for w in warnings)
    assert any("no en phrase matches 'please call me back' (imperative)" in w for w in warnings)
    assert all(w.startswith("triggers.yaml:") for w in warnings)


def test_phrases_for_a_language_the_rules_do_not_have_are_flagged(edited: Callable[[str, str], Path]) -> None:
    directory = edited("  phrases:\n    en:\n", "  phrases:\n    fr:\n      - parler à quelqu'un\n    en:\n")
    warnings = [str(p) for p in lint(load_rules(directory))]
    assert any("'fr' is not in ruleset.yaml locales; these phrases are never matched" in w for w in warnings)


def test_an_unsure_intent_does_not_hand_over_by_itself_but_still_routes(rules: RuleSet) -> None:
    assert rules.triggers.intent_confidence == 0.8
    guess = BotTurn(text="Plus gives you free shipping.", intent="membership_cancel", family="billing",
                    confidence=0.73)
    assert decided(rules, "What do I actually get with Northwind Plus?", guess).action is Action.CONTINUE
    sure = guess.model_copy(update={"confidence": 0.9})
    decision = decided(rules, "What do I actually get with Northwind Plus?", sure)
    assert decision.trigger is not None and decision.trigger.rule == "high_risk.cancellation"
    # The customer's words need no confidence from the bot.
    words = decided(rules, "please cancel my Plus membership", guess)
    assert words.trigger is not None and words.trigger.rule == "high_risk.cancellation"
    assert words.route is not None and words.route.queue == "billing"  # the unsure family still routes
