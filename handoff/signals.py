"""What the policy reads from the customer's own words: sentiment and language.

Both are computed once per customer message, before deciding, so the decision itself stays a fast pure
function. Each sits behind a one-method interface so a team can plug in its own model.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from lingua import IsoCode639_1, LanguageDetectorBuilder
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Long messages say no more about mood or language than their start; this keeps scoring cheap.
_MAX_CHARS = 600


class SentimentScorer(Protocol):
    def score(self, text: str) -> float:
        """-1 (very negative) .. 1 (very positive); 0 for neutral or empty text."""
        ...


class LanguageDetector(Protocol):
    def detect(self, text: str) -> str | None:
        """ISO 639-1 code when sure enough, else None (short texts like "ok" are never sure)."""
        ...


class VaderSentiment:
    """vaderSentiment's lexicon scorer: English only, no model download, tens of microseconds a message."""

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self._lexicon: dict[str, float] = self._analyzer.lexicon

    def score(self, text: str) -> float:
        if not text.strip():
            return 0.0
        text = text[:_MAX_CHARS]
        if text.isascii() and not any(_vader_word(token) in self._lexicon for token in text.split()):
            # Sure already: only words of Vader's lexicon carry a valence (boosters, negations, "but",
            # capitals and "!" only scale one), so without any the compound is 0. Most questions are like
            # this; the full scorer costs ten times as much. Not ASCII: emoji become words first: it decides.
            return 0.0
        return float(self._analyzer.polarity_scores(text)["compound"])


def _vader_word(token: str) -> str:
    """A whitespace-separated token as Vader looks it up: outer punctuation stripped unless that leaves two
    characters or fewer (an emoticon such as ":)"), lower case."""
    stripped = token.strip(string.punctuation)
    return (token if len(stripped) <= 2 else stripped).lower()


class LinguaDetector:
    """lingua-language-detector restricted to the rule set's locales, which is faster and far more accurate
    than choosing among all languages. Models load at construction, not on the first customer message."""

    def __init__(self, locales: Iterable[str], min_words: int = 3, min_distance: float = 0.2) -> None:
        codes = sorted({code for code in locales if hasattr(IsoCode639_1, code.upper())})
        self.locales = tuple(codes)
        self.min_words = min_words
        if len(codes) < 2:
            self._detector = None
            return
        languages = (getattr(IsoCode639_1, c.upper()) for c in codes)
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*languages)
        builder = builder.with_minimum_relative_distance(min_distance).with_preloaded_language_models()
        self._detector = builder.build()

    def detect(self, text: str) -> str | None:
        if self._detector is None or len(text.split()) < self.min_words:
            return None
        language = self._detector.detect_language_of(text[:_MAX_CHARS])
        return language.iso_code_639_1.name.lower() if language is not None else None


@dataclass(frozen=True, slots=True)
class MessageSignals:
    sentiment: float = 0.0
    language: str | None = None


class SignalReader:
    """Reads one customer message's signals with the configured scorer and detector."""

    def __init__(self, sentiment: SentimentScorer, language: LanguageDetector) -> None:
        self.sentiment = sentiment
        self.language = language

    def read(self, text: str, known_language: str | None = None) -> MessageSignals:
        """``known_language``: what the conversation was already detected to be written in. It stays: one
        mixed message ("Danke, where is my order?") does not flip the conversation's locale, and the
        detector, the dearest step here, runs only until a conversation has a language."""
        language = known_language or self.language.detect(text)
        return MessageSignals(round(self.sentiment.score(text), 4), language)


def default_signal_reader(locales: Iterable[str]) -> SignalReader:
    return SignalReader(VaderSentiment(), LinguaDetector(locales))
