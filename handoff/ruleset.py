"""A loaded, checked rule set, with what deciding needs precompiled (phrase matchers, lookups).

A RuleSet never changes after loading; a reload builds a new one and swaps it in whole, so a decision in
flight always sees one consistent set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from handoff import hours as business_hours
from handoff.classifier import TriggerClassifier, examples_of
from handoff.labelled import Item
from handoff.matching import Analyzer, Matcher, words_of
from handoff.schema import (
    ALL_LOCALES,
    MessagesFile,
    Phrases,
    Queue,
    QueuesFile,
    RoutingFile,
    RuleSetMeta,
    TriggersFile,
)
from handoff.sources import SourceMap

ALWAYS = "always"


def by_locale(phrases: Mapping[str, Sequence[str]], locales: Sequence[str]) -> dict[str, list[str]]:
    """A rule's phrases per language: those listed for all languages, then the language's own."""
    common = list(phrases.get(ALL_LOCALES, ()))
    return {locale: common + list(phrases.get(locale, ())) for locale in locales}


@dataclass(frozen=True, eq=False)
class RuleSet:
    directory: Path
    meta: RuleSetMeta
    queues: QueuesFile
    triggers: TriggersFile
    routing: RoutingFile
    messages: MessagesFile
    digest: str
    sources: Mapping[str, SourceMap] = field(default_factory=dict)
    # The classifier's labelled examples (triggers.yaml `classifier.examples`), read with the rules.
    examples: tuple[Item, ...] = ()

    @property
    def version(self) -> str:
        """Declared version plus the start of the content hash: what every decision records."""
        return f"{self.meta.version}+{self.digest[:12]}"

    # -- precompiled matchers ---------------------------------------------------------------------------
    @cached_property
    def matcher(self) -> Matcher:
        """Every trigger's phrases in one index (`handoff.matching`): each customer message is read once.
        Sets are named after their trigger: explicit_request, unsupported_workflow, negative_sentiment and
        high_risk.<id>."""
        locales = self.meta.locales
        sets = {name: (by_locale(phrases, locales), by_locale(unless, locales))
                for name, phrases, unless in self._phrase_sets()}
        vocabulary: dict[str, list[str]] = {locale: [] for locale in locales}
        for phrases, _ in sets.values():
            for locale, sources in phrases.items():
                for source in sources:
                    vocabulary[locale].extend(words_of(source))
        return Matcher(Analyzer(locales, vocabulary), sets)

    @cached_property
    def classifier(self) -> TriggerClassifier | None:
        """Trained on first use; the gateway's rules holder asks for it right after loading, in its thread."""
        settings = self.triggers.classifier
        if settings is None:
            return None
        texts, labels = examples_of(self.examples, self.classifier_labels)
        return TriggerClassifier(texts, labels)

    @cached_property
    def classifier_labels(self) -> tuple[str, ...]:
        settings = self.triggers.classifier
        if settings is not None and settings.labels:
            return tuple(settings.labels)
        return ("explicit_request", *(f"high_risk.{r.id}" for r in self.triggers.high_risk),
                "unsupported_workflow")

    def _phrase_sets(self) -> Iterator[tuple[str, Phrases, Phrases]]:
        triggers = self.triggers
        for name, rule in (("explicit_request", triggers.explicit_request),
                           ("unsupported_workflow", triggers.unsupported_workflow),
                           ("negative_sentiment", triggers.negative_sentiment)):
            yield name, rule.phrases, rule.unless
        for risk in triggers.high_risk:
            yield f"high_risk.{risk.id}", risk.phrases, risk.unless

    # -- queues and hours -------------------------------------------------------------------------------
    def queue(self, name: str) -> Queue:
        return self.queues.queues[name]

    def is_open(self, hours_name: str | None, at: datetime) -> bool:
        if hours_name is None or hours_name == ALWAYS:
            return True
        return business_hours.is_open(self.queues.hours[hours_name], at)

    def next_open(self, hours_name: str | None, at: datetime) -> datetime | None:
        if hours_name is None or hours_name == ALWAYS:
            return at
        return business_hours.next_open(self.queues.hours[hours_name], at)

    def zone_of(self, hours_name: str | None) -> ZoneInfo | None:
        if hours_name is None or hours_name == ALWAYS:
            return None
        return self.queues.hours[hours_name].zone

    # -- messages ---------------------------------------------------------------------------------------
    def message(self, key: str, locale: str, channel: str) -> tuple[str, str]:
        """The text for ``key`` and the locale it is in: the channel's own wording first, then the general
        one, each in the customer's locale, then in the default locale."""
        texts = self.messages.messages.get(key, {})
        override = texts.get(channel)
        for lang in (locale, self.meta.default_locale):
            if isinstance(override, dict) and lang in override:
                return override[lang], lang
            text = texts.get(lang)
            if isinstance(text, str):
                return text, lang
        return "", self.meta.default_locale
