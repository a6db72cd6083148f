"""The triggers' classifier: trained on the rules' labelled examples when they load, consulted only when no
phrase matched and the bot was unsure, and scored without scikit-learn's per-call cost but to its figures."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from gateway.settings import DEMO_RULES
from handoff.classifier import REGULARISATION, TriggerClassifier, examples_of
from handoff.labelled import Item
from handoff.loader import load_rules
from handoff.policy import Action, Decision, TurnInput, decide
from handoff.problems import RulesError
from handoff.ruleset import RuleSet
from handoff.signals import MessageSignals
from sessions.models import BotTurn, Conversation, Customer
from tests.rule_edits import without_classifier

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
UNSURE = BotTurn(text="Sorry?", confidence=0.3, fallback=True)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(DEMO_RULES)


def decided(rules: RuleSet, text: str, bot: BotTurn = UNSURE) -> Decision:
    conversation = Conversation(id="c", channel="webchat", customer=Customer(id="k"))
    return decide(TurnInput(conversation, text, bot, MessageSignals(), FRIDAY_MORNING), rules)


def test_its_scores_are_scikit_learns(rules: RuleSet) -> None:
    texts, labels = examples_of(rules.examples, rules.classifier_labels)
    assert len(texts) > 800 and set(labels) == {*rules.classifier_labels, "none"}
    ours = TriggerClassifier(texts, labels)
    vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=REGULARISATION, max_iter=3000, class_weight="balanced")
    model.fit(vectorizer.fit_transform(texts), labels)
    for text in [*texts[::7], "agent agent agent please", "zzz", ""]:
        probabilities = model.predict_proba(vectorizer.transform([text]))[0]
        best = int(probabilities.argmax())
        guess = ours.guess(text)
        assert guess.label == model.classes_[best]
        assert guess.probability == pytest.approx(probabilities[best], abs=0.001)


def test_a_conversation_labelled_with_a_trigger_it_does_not_decide_teaches_none() -> None:
    items = [
        Item(id="a", locale="en", turns=["Where is my parcel?", "Get me a person"], expect="explicit_request"),
        Item(id="b", locale="en", turns=["Late again.", "Ridiculous, so fed up"], expect="negative_sentiment"),
        Item(id="c", locale="en", says="Thanks!", expect="none"),
    ]
    texts, labels = examples_of(items, ["explicit_request"])
    assert list(zip(texts, labels, strict=True)) == [
        ("Get me a person", "explicit_request"),  # a conversation's label is its last message's
        ("Late again.", "none"), ("Ridiculous, so fed up", "none"),  # angry, but asked for no person
        ("Thanks!", "none"),
    ]


@pytest.mark.parametrize(("text", "trigger"), [
    ("somebody emptied my card through your site", "high_risk.fraud"),
    ("is there any chance a living soul could look at my case", "explicit_request"),
    ("hallo, kann sich das bitte jemand von euch ansehen", "explicit_request"),
])
def test_a_wording_no_phrase_has_is_caught_and_the_words_are_named(
    rules: RuleSet, text: str, trigger: str
) -> None:
    matches = rules.matcher.match(text)
    assert all(matches.found(name).hit is None for name in rules.classifier_labels)  # no pattern knows it
    decision = decided(rules, text)
    if trigger == "explicit_request":
        assert decision.action is Action.DEFLECT  # a first request: the bot offers its one try
        decision = decide(TurnInput(
            Conversation(id="c", channel="webchat", customer=Customer(id="k"),
                         signals=decision.signals), text, UNSURE, MessageSignals(), FRIDAY_MORNING), rules)
    assert decision.trigger is not None and decision.trigger.rule == trigger
    assert "classifier 0." in decision.trigger.explanation and "on the words '" in decision.trigger.explanation


def test_a_sure_bot_or_a_negation_is_not_second_guessed(rules: RuleSet) -> None:
    sure = BotTurn(text="Your parcel is on its way.", intent="order_status", family="orders", confidence=0.95)
    assert decided(rules, "somebody emptied my card through your site", sure).action is Action.CONTINUE
    assert decided(rules, "I don't need anyone from your team, just the tracking link").trigger is None


def test_examples_are_part_of_the_rules_version_and_a_missing_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, target)
    before = load_rules(target).version
    dev = target / "eval" / "dev.yaml"
    dev.write_text(dev.read_text() + "\n")
    assert load_rules(target).version != before
    triggers = target / "triggers.yaml"
    triggers.write_text(triggers.read_text().replace("examples: [eval/dev*.yaml]", "examples: [eval/nothing*.yaml]"))
    with pytest.raises(RulesError) as refused:
        load_rules(target)
    assert "classifier.examples: no file matches eval/nothing*.yaml" in str(refused.value.problems[0])


def test_rules_without_a_classifier_decide_on_phrases_alone(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, target)
    triggers = target / "triggers.yaml"
    triggers.write_text(without_classifier(triggers.read_text()))
    plain = load_rules(target)
    assert plain.classifier is None
    assert decided(plain, "somebody emptied my card through your site").trigger is None
