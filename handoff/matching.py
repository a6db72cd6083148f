"""Phrase matching by meaning: the customer's words against a trigger's phrases and patterns.

Exact phrase lists miss what customers really write ("einem Mitarbeiter" for "Mitarbeiter", "reprsentative",
"charged me two times") and fire on what they do not mean ("my shipping agent", "I don't want to cancel").
Here every word is compared by its stem in each of the rule set's languages, long words tolerate one
typo, a pattern can have alternatives, gaps and parts in any order, and a match negated in its clause, or
overlapping one of the rule's ``unless`` patterns, does not count.

A message is analysed once (`Analyzer.analyze`) and one index of every trigger's patterns (`Matcher`) is
searched with its words, so the cost of deciding grows with the message's words, not with the number of
phrases: each pattern is indexed by the words of its least common-looking slot (its anchor).

Pattern syntax (docs/rules.md): words separated by spaces; ``a|b`` one word of several; ``...`` up to three
other words; ``word*`` any word starting so (accents folded, not stemmed); ``=word`` exactly this word;
``A & B`` both parts in the same clause, in any order.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import snowballstemmer
from rapidfuzz import process
from rapidfuzz.distance import OSA

# Snowball's names for the languages a rule set may use; a locale without one compares words as written.
_STEMMERS = {
    "da": "danish", "de": "german", "en": "english", "es": "spanish", "fi": "finnish", "fr": "french",
    "hu": "hungarian", "it": "italian", "nl": "dutch", "no": "norwegian", "pt": "portuguese",
    "ro": "romanian", "ru": "russian", "sv": "swedish", "tr": "turkish",
}

# Negations that turn "cancel my membership" into "I don't want to cancel my membership". Inability ("can't",
# "won't let me") is left out on purpose: "why can't I talk to a person" is a request, not its opposite.
NEGATIONS: Mapping[str, frozenset[str]] = {
    "en": frozenset("not don't dont do_not doesn't doesnt didn't didnt wasn't wasnt weren't haven't hasn't "
                    "never without no_need no_longer rather_not".split()),
    "de": frozenset("nicht kein keine keinen keinem keiner keines nie niemals ohne".split()),
    "es": frozenset("no nunca jamás jamas sin tampoco ni ningún ningun ninguna ninguno".split()),
}
# Words that start a new clause even without punctuation (spoken text has none): a negation before them does
# not reach what follows ("I don't want the bot I want a person").
CLAUSE_BREAKS: Mapping[str, frozenset[str]] = {
    "en": frozenset("but just only instead i we".split()),
    "de": frozenset("aber sondern nur ich wir".split()),
    "es": frozenset("pero sino solo sólo yo".split()),
}
# How many other words may stand between a negation and what it negates.
NEGATION_REACH = 3
# Typos a word may have and still match a pattern word: two neighbouring letters swapped from five letters
# on ("humna"), one letter missing or added from six ("Menchen", "atorney"), one letter wrong from eight
# ("reprasentative"). Shorter words are too often another real word one slip away: "hacer" and "hacker",
# "klären" and "klagen", "Gewicht" and "Gericht".
SWAP_MIN_LENGTH = 5
GAP_MIN_LENGTH = 6
WRONG_MIN_LENGTH = 8
GAP = 3
MIN_STEM = 4

# A word, or punctuation that ends a clause; a full stop after a digit is a date or a number ("3. März").
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?|(?<!\d)[.]+|[,;:!?¡¿()\n]+")
_PUNCT = frozenset(".,;:!?¡¿()\n")
_CACHE_LIMIT = 50_000


def fold(word: str) -> str:
    """Lower case without accents ("Kündigung" -> "kundigung"), straight apostrophes."""
    if word.isascii():
        return word.lower()  # most words: nothing to decompose
    word = word.casefold().replace("\u2019", "'").replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _slip(word: str, target: str) -> bool:
    """Whether a word one edit away from a pattern word (OSA distance 1) is a slip long words afford."""
    if len(word) != len(target):
        return min(len(word), len(target)) >= GAP_MIN_LENGTH
    if sorted(word) == sorted(target):
        return len(word) >= SWAP_MIN_LENGTH
    return len(word) >= WRONG_MIN_LENGTH


class Normalizer:
    """A word's comparison key in one language: its Snowball stem, accents folded, so "Mitarbeiter",
    "Mitarbeitern" and "Mitarbeiterin" meet at "mitarbeit". (Stems, not a lemma dictionary: a dictionary
    costs seconds and a hundred megabytes a language; irregular forms are written as alternatives.)"""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        name = _STEMMERS.get(locale)
        self._stemmer = snowballstemmer.stemmer(name) if name else None
        self._cache: dict[str, str] = {}

    def key(self, word: str) -> str:
        found = self._cache.get(word)
        if found is not None:
            return found
        key = word
        if self._stemmer is not None:
            stem = fold(self._stemmer.stemWord(word))
            # A stem of one to three letters says more about the stemmer than the word ("demando" -> "dem",
            # "sued" -> "su"): it would match other words, other languages' above all. Such words compare as
            # written.
            key = stem if len(stem) >= MIN_STEM else word
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = key
        return key


@dataclass(frozen=True, slots=True)
class Word:
    """One distinct word as the matcher sees it, computed once and cached: its folded form and its keys
    per language (its stem, plus the pattern words it is a likely misspelling of)."""

    text: str
    keys: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Token:
    word: Word
    position: int
    clause: int

    @property
    def text(self) -> str:
        return self.word.text


@dataclass(frozen=True, slots=True)
class Analysis:
    """One message as every trigger sees it: its words in order, each with the clause it stands in."""

    tokens: tuple[Token, ...]


class Analyzer:
    """Splits and normalises customer messages for one rule set's languages and pattern vocabulary."""

    def __init__(self, locales: Iterable[str], vocabulary: Mapping[str, Iterable[str]] = {}) -> None:
        self.locales = tuple(dict.fromkeys(locales))
        self.normalizers = {locale: Normalizer(locale) for locale in self.locales}
        # Folded pattern words long enough to be misspelt, with the languages they are written in, grouped by
        # first letter and length: a word is compared only with those it could be a slip of (same first
        # letter, one letter longer or shorter at most), in one call for all languages.
        self._typo_locales: dict[str, set[str]] = {}
        for locale in self.locales:
            for target in vocabulary.get(locale, ()):
                if len(target) >= SWAP_MIN_LENGTH:
                    self._typo_locales.setdefault(target, set()).add(locale)
        grouped: dict[tuple[str, int], list[str]] = {}
        for target in sorted(self._typo_locales):
            grouped.setdefault((target[0], len(target)), []).append(target)
        self._typo_targets: dict[tuple[str, int], tuple[str, ...]] = {}
        for first, length in grouped:
            for near in (length - 1, length, length + 1):
                key = (first, near)
                if key not in self._typo_targets:
                    self._typo_targets[key] = tuple(
                        t for n in (near - 1, near, near + 1) for t in grouped.get((first, n), ())
                    )
        self._negations = frozenset().union(*(NEGATIONS.get(locale, ()) for locale in self.locales))
        self._breaks = frozenset().union(*(CLAUSE_BREAKS.get(locale, ()) for locale in self.locales))
        # Raw token -> Word. Customers' vocabulary is large but not endless; the cache starts over when full.
        self._words: dict[str, Word] = {}

    def analyze(self, text: str) -> Analysis:
        tokens: list[Token] = []
        clause = 0
        words = self._words
        for raw in _TOKEN.findall(text):
            if raw[0] in _PUNCT:
                clause += 1
                continue
            if raw.isdigit():
                continue  # amounts, dates and order numbers say nothing, and would stretch every gap
            word = words.get(raw)
            if word is None:
                word = self._word(raw)
            tokens.append(Token(word, len(tokens), clause))
        return Analysis(tuple(tokens))

    def _word(self, raw: str) -> Word:
        text = fold(raw)
        found = {locale: {text, normalizer.key(text)} for locale, normalizer in self.normalizers.items()}
        if len(text) >= SWAP_MIN_LENGTH and text not in self._typo_locales:
            # A typo rarely hits a word's first letter, and requiring it keeps unrelated words apart.
            targets = self._typo_targets.get((text[0], len(text)), ())
            for target, _, _ in process.extract_iter(text, targets, scorer=OSA.distance, score_cutoff=1):
                if _slip(text, target):
                    for locale in self._typo_locales[target]:
                        found[locale].add(self.normalizers[locale].key(target))
                        found[locale].add(target)
        word = Word(text, {locale: frozenset(keys) for locale, keys in found.items()})
        if len(self._words) >= _CACHE_LIMIT:
            self._words.clear()
        self._words[raw] = word
        return word

    def negated(self, analysis: Analysis, hit: Hit) -> bool:
        """Whether a negation in the same clause stands at most NEGATION_REACH words before the match, or
        inside it ("mein Konto nicht löschen"), with no word that starts a new clause in between. A pattern
        that is itself negative ("not a bot", "no reconozco") is not undone by its own negation. Negations
        and clause breaks of every language of the rule set count: customers mix them, and a pattern's
        words can match another language's message ("cancel" is English and Spanish)."""
        tokens = analysis.tokens
        clause = tokens[hit.start].clause
        for position in range(max(0, hit.start - NEGATION_REACH - 1), hit.end):
            token = tokens[position]
            previous = tokens[position - 1].text if position else ""
            if token.text not in self._negations and f"{previous}_{token.text}" not in self._negations:
                continue
            if token.text in hit.pattern.words or token.clause != clause:
                continue
            if not any(t.text in self._breaks for t in tokens[position + 1:hit.start]):
                return True
        return False


# -- patterns ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """One word of a pattern: any of its keys, a word starting with one of its prefixes, or an exact word."""

    keys: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    exact: frozenset[str] = frozenset()
    # Letters of the shortest word or prefix it accepts (keys are stems, so this errs short).
    shortest: int = 0

    def accepts(self, word: Word, locale: str) -> bool:
        if self.keys and not self.keys.isdisjoint(word.keys[locale]):
            return True
        if self.exact and word.text in self.exact:
            return True
        return bool(self.prefixes) and word.text.startswith(self.prefixes)


@dataclass(frozen=True)
class Part:
    """A sequence of slots; ``gaps[i]`` is how many words may come between slot i and slot i + 1."""

    slots: tuple[Slot, ...]
    gaps: tuple[int, ...]

    @cached_property
    def anchor(self) -> int:
        """The slot the index looks a part up by: the one with the longest shortest word, as long words
        are rare words ("in|to court" is looked up by "court", not by every "to" a customer writes)."""
        return max(range(len(self.slots)), key=lambda i: (self.slots[i].shortest, -i))

    @cached_property
    def lead(self) -> int:
        """At most how many words stand between the part's first word and its anchor's."""
        return self.anchor + sum(self.gaps[:self.anchor])


@dataclass(frozen=True, slots=True)
class Pattern:
    source: str
    locale: str
    parts: tuple[Part, ...]
    # Every word the pattern names, folded: a negation it names itself is part of what it means.
    words: frozenset[str] = frozenset()


class PatternError(ValueError):
    pass


class _Keys(Protocol):
    def key(self, word: str) -> str: ...


class _AsWritten:
    def key(self, word: str) -> str:
        return word


def check_pattern(source: str) -> str:
    """The pattern, if its syntax is right (the rule files' schema runs this on every phrase)."""
    parse(source, "", _AsWritten())
    return source


def parse(source: str, locale: str, normalizer: _Keys) -> Pattern:
    parts: list[Part] = []
    for text in source.split(" & "):
        slots: list[Slot] = []
        gaps: list[int] = []
        pending_gap = 0
        for word in text.split():
            if word == "...":
                if not slots:
                    raise PatternError(f"pattern {source!r}: a part cannot start with '...'")
                pending_gap = GAP
                continue
            if slots:
                gaps.append(pending_gap)
            pending_gap = 0
            slots.append(_slot(word, source, normalizer))
        if not slots:
            raise PatternError(f"pattern {source!r}: an empty part")
        if pending_gap:
            raise PatternError(f"pattern {source!r}: a part cannot end with '...'")
        parts.append(Part(tuple(slots), tuple(gaps)))
    return Pattern(source, locale, tuple(parts), frozenset(words_of(source, every=True)))


def _slot(word: str, source: str, normalizer: _Keys) -> Slot:
    keys: set[str] = set()
    prefixes: list[str] = []
    exact: set[str] = set()
    for alternative in word.split("|"):
        if not alternative or alternative in {"*", "="}:
            raise PatternError(f"pattern {source!r}: an empty alternative in {word!r}")
        if alternative.startswith("="):
            exact.add(fold(alternative[1:]))
        elif alternative.endswith("*"):
            prefix = fold(alternative[:-1])
            if len(prefix) < PREFIX_MIN:
                raise PatternError(
                    f"pattern {source!r}: {alternative!r}: a prefix needs {PREFIX_MIN}+ letters"
                )
            prefixes.append(prefix)
        else:
            folded = fold(alternative)
            if not re.fullmatch(r"[^\W_]+(?:'[^\W_]+)?", folded):
                raise PatternError(f"pattern {source!r}: {alternative!r} is not a word")
            keys.add(normalizer.key(folded))
    lengths = [len(k) for k in keys] + [len(p) for p in prefixes] + [len(e) for e in exact]
    return Slot(frozenset(keys), tuple(prefixes), frozenset(exact), min(lengths))


def words_of(source: str, every: bool = False) -> list[str]:
    """A pattern's plain words, folded: what a typo may be a misspelling of (``every``: exact words too)."""
    words: list[str] = []
    for word in source.replace(" & ", " ").split():
        for alternative in word.split("|"):
            if alternative == "..." or alternative.endswith("*"):
                continue
            if alternative.startswith("="):
                if every:
                    words.append(fold(alternative[1:]))
                continue
            words.append(fold(alternative))
    return words


@dataclass(frozen=True, slots=True)
class Hit:
    pattern: Pattern
    start: int
    end: int  # exclusive
    analysis: Analysis
    negated: bool = False

    @property
    def words(self) -> str:
        """The customer's words it covers, folded: built only when an explanation needs them."""
        return " ".join(t.text for t in self.analysis.tokens[self.start:self.end])


@dataclass(frozen=True, slots=True)
class Found:
    """What a phrase set found in a message: the first hit that counts, or why none counts."""

    hit: Hit | None
    # Hits that did not count: negated, or inside an ``unless`` pattern ("my shipping agent").
    discounted: tuple[Hit, ...] = ()

    @property
    def vetoed(self) -> bool:
        """Mentioned, but only negated or in another sense: the bot's intent alone must not fire either."""
        return self.hit is None and bool(self.discounted)


NOTHING = Found(None)


# Prefixes (``word*``) are looked up by their first letters; shorter ones would match half the language.
PREFIX_MIN = 3
UNLESS = "\0unless"


@dataclass
class _Index:
    """Every pattern of every set, by the words its parts can start with: one pass over a message's words
    finds the candidates of all triggers at once."""

    by_key: dict[str, list[tuple[str, Pattern, int]]] = field(default_factory=dict)
    by_exact: dict[str, list[tuple[str, Pattern, int]]] = field(default_factory=dict)
    by_prefix: dict[str, list[tuple[str, str, Pattern, int]]] = field(default_factory=dict)

    def add(self, name: str, pattern: Pattern) -> None:
        for number, part in enumerate(pattern.parts):
            first = part.slots[part.anchor]
            for key in first.keys:
                self.by_key.setdefault(f"{pattern.locale}\0{key}", []).append((name, pattern, number))
            for word in first.exact:
                self.by_exact.setdefault(word, []).append((name, pattern, number))
            for prefix in first.prefixes:
                self.by_prefix.setdefault(prefix[:PREFIX_MIN], []).append((prefix, name, pattern, number))


class Matches:
    """What one message matched, per named phrase set."""

    def __init__(self, analyzer: Analyzer, analysis: Analysis, hits: Mapping[str, list[Hit]]) -> None:
        self._analyzer = analyzer
        self._analysis = analysis
        self._hits = hits

    def found(self, name: str) -> Found:
        hits = self._hits.get(name)
        if not hits:
            return NOTHING
        excluded = self._hits.get(name + UNLESS, ())
        discounted: list[Hit] = []
        for hit in hits:
            if any(other.start < hit.end and hit.start < other.end for other in excluded):
                discounted.append(hit)
            elif self._analyzer.negated(self._analysis, hit):
                discounted.append(Hit(hit.pattern, hit.start, hit.end, hit.analysis, negated=True))
            else:
                return Found(hit, tuple(discounted))
        return Found(None, tuple(discounted))


class Matcher:
    """Named phrase sets (one per trigger) with their ``unless`` patterns, compiled per language into one
    index, so a message is read once for every trigger."""

    def __init__(
        self,
        analyzer: Analyzer,
        sets: Mapping[str, tuple[Mapping[str, Sequence[str]], Mapping[str, Sequence[str]]]],
    ) -> None:
        self.analyzer = analyzer
        self.patterns: dict[str, tuple[Pattern, ...]] = {}
        self._index = _Index()
        for name, (phrases, unless) in sets.items():
            self.patterns[name] = _compile(analyzer, phrases)
            self.patterns[name + UNLESS] = _compile(analyzer, unless)
            for pattern in self.patterns[name]:
                self._index.add(name, pattern)
            for pattern in self.patterns[name + UNLESS]:
                self._index.add(name + UNLESS, pattern)
        self._starts: dict[str, tuple[tuple[str, Pattern, int], ...]] = {}
        self._last: tuple[str, Matches] | None = None

    def match(self, text: str) -> Matches:
        last = self._last
        if last is not None and last[0] == text:
            return last[1]
        analysis = self.analyzer.analyze(text)
        hits: dict[str, list[Hit]] = {}
        seen: set[tuple[str, int, int]] = set()
        for token in analysis.tokens:
            starts = self._starts.get(token.word.text)
            if starts is None:
                starts = self._starts_of(token.word)
            for name, pattern, number in starts:
                hit = _match(analysis, pattern, number, token.position)
                if hit is None:
                    continue
                marker = (name, id(pattern), hit.start)
                if marker not in seen:
                    seen.add(marker)
                    hits.setdefault(name, []).append(hit)
        for each in hits.values():
            each.sort(key=lambda h: h.start)
        matches = Matches(self.analyzer, analysis, hits)
        self._last = (text, matches)
        return matches

    def _starts_of(self, word: Word) -> tuple[tuple[str, Pattern, int], ...]:
        """The pattern parts whose anchor this word can be, in every language: found once per word."""
        index = self._index
        found: list[tuple[str, Pattern, int]] = list(index.by_exact.get(word.text, ()))
        for locale, keys in word.keys.items():
            for key in keys:
                found.extend(index.by_key.get(f"{locale}\0{key}", ()))
        for prefix, name, pattern, number in index.by_prefix.get(word.text[:PREFIX_MIN], ()):
            if word.text.startswith(prefix):
                found.append((name, pattern, number))
        starts = tuple(found)
        if len(self._starts) >= _CACHE_LIMIT:
            self._starts.clear()
        self._starts[word.text] = starts
        return starts

    def search(self, name: str, text: str) -> Found:
        """One set against one text: what `rules check` and tests ask."""
        return self.match(text).found(name)


def _compile(analyzer: Analyzer, phrases: Mapping[str, Sequence[str]]) -> tuple[Pattern, ...]:
    compiled: list[Pattern] = []
    for locale, sources in phrases.items():
        normalizer = analyzer.normalizers.get(locale)
        if normalizer is None:
            continue
        compiled.extend(parse(source, locale, normalizer) for source in sources if source.strip())
    return tuple(compiled)


def _match(analysis: Analysis, pattern: Pattern, number: int, anchor: int) -> Hit | None:
    """``pattern`` with its part ``number`` anchored at the word ``anchor`` (which that part's anchor slot
    accepts: the index found it); any other parts anywhere in the same clause."""
    locale = pattern.locale
    part = pattern.parts[number]
    if len(part.slots) == 1:
        span: tuple[int, int] | None = (anchor, anchor + 1)
    else:
        span = _around(analysis, locale, part, anchor)
    if span is None:
        return None
    first, last = span
    if len(pattern.parts) > 1:
        clause = analysis.tokens[anchor].clause
        for other_number, other in enumerate(pattern.parts):
            if other_number == number:
                continue
            found = None
            for token in analysis.tokens:
                if token.clause == clause and (found := _match_part(analysis, locale, other, token.position)):
                    first, last = min(first, token.position), max(last, found)
                    break
            if found is None:
                return None
    return Hit(pattern, first, last, analysis)


def _around(analysis: Analysis, locale: str, part: Part, anchor: int) -> tuple[int, int] | None:
    """The span of ``part`` with its anchor slot at word ``anchor``: the slots before it matched backwards,
    the ones after it forwards, each within its gap and the anchor's clause."""
    tokens = analysis.tokens
    clause = tokens[anchor].clause
    slots, gaps = part.slots, part.gaps
    # Backwards: the earliest-reaching start is not needed, any one is; keep every position still possible.
    reached = {anchor}
    for index in range(part.anchor - 1, -1, -1):
        slot, gap = slots[index], gaps[index]
        earlier: set[int] = set()
        for position in reached:
            for candidate in range(position - 1, max(-1, position - gap - 2), -1):
                token = tokens[candidate]
                if token.clause != clause:
                    break
                if slot.accepts(token.word, locale):
                    earlier.add(candidate)
        if not earlier:
            return None
        reached = earlier
    end = _forward(analysis, locale, part, part.anchor + 1, {anchor + 1}, clause=clause)
    return None if end is None else (max(reached), end)


def _match_part(analysis: Analysis, locale: str, part: Part, start: int) -> int | None:
    """Where ``part`` ends when it starts at word ``start``, if it matches there."""
    tokens = analysis.tokens
    if not part.slots[0].accepts(tokens[start].word, locale):
        return None
    return _forward(analysis, locale, part, 1, {start + 1}, clause=tokens[start].clause)


def _forward(
    analysis: Analysis, locale: str, part: Part, first: int, reached: set[int], *, clause: int
) -> int | None:
    """Where ``part`` ends when its slots from ``first`` on follow the positions ``reached`` (each just past
    the slot before): the earliest end, or None. Gaps make several positions possible, so each is kept."""
    tokens = analysis.tokens
    for index in range(first, len(part.slots)):
        slot, gap = part.slots[index], part.gaps[index - 1]
        following: set[int] = set()
        for position in reached:
            for candidate in range(position, min(position + gap + 1, len(tokens))):
                token = tokens[candidate]
                if token.clause != clause:
                    break
                if slot.accepts(token.word, locale):
                    following.add(candidate + 1)
        if not following:
            return None
        reached = following
    return min(reached)
