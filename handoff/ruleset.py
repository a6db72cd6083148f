"""A loaded, checked rule set, with what deciding needs precompiled (phrase matchers, lookups).

A RuleSet never changes after loading; a reload builds a new one and swaps it in whole, so a decision in
flight always sees one consistent set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from handoff import hours as business_hours
from handoff.schema import (
    MessagesFile,
    Queue,
    QueuesFile,
    RoutingFile,
    RuleSetMeta,
    TriggersFile,
)
from handoff.sources import SourceMap

ALWAYS = "always"


class PhraseMatcher:
    """Whole-word, case-insensitive matching of a list of phrases ("a person" matches "A  person?")."""

    def __init__(self, phrases: Iterable[str]) -> None:
        words = [r"\s+".join(re.escape(w) for w in p.lower().split()) for p in phrases if p.strip()]
        self.phrases = tuple(phrases)
        self._pattern = re.compile(r"\b(?:" + "|".join(words) + r")\b") if words else None

    def search(self, text: str) -> str | None:
        if self._pattern is None or not text:
            return None
        match = self._pattern.search(text.lower())
        return match.group(0) if match else None


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

    @property
    def version(self) -> str:
        """Declared version plus the start of the content hash: what every decision records."""
        return f"{self.meta.version}+{self.digest[:12]}"

    # -- precompiled matchers ---------------------------------------------------------------------------
    @cached_property
    def explicit_phrases(self) -> PhraseMatcher:
        return PhraseMatcher(self.triggers.explicit_request.phrases)

    @cached_property
    def unsupported_phrases(self) -> PhraseMatcher:
        return PhraseMatcher(self.triggers.unsupported_workflow.phrases)

    @cached_property
    def high_risk_phrases(self) -> tuple[PhraseMatcher, ...]:
        return tuple(PhraseMatcher(rule.phrases) for rule in self.triggers.high_risk)

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
