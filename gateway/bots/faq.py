"""The default bot: answers from a YAML knowledge base, with confidence from fuzzy matching (rapidfuzz)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from rapidfuzz import fuzz, process, utils

from sessions.models import BotTurn, Conversation, Message

# Words that carry no topic, in the demo's languages (English, German, Spanish): removed before matching so
# "my", "ist es" or "mi" never look like a question.
_STOPWORDS = frozenset(
    """a an the i me my mine we our you your it its is are was be been am do does did to of for on in at
    and or but so with this that these those can could would will please want like need have has had
    get got just some any what how where when why which who there here
    der die das den dem des ein eine einen einem einer ich mich mir mein meine meinen meinem meiner wir
    uns unser ihr euch sie es ist sind war bin hat habe haben und oder aber mit von zu zum zur im in an
    auf für bei aus bitte kann können möchte will würde wo wie was wann warum ja nein noch schon auch
    el la los las un una unos unas yo me mi mis nos su sus es son está están estoy fue ha he y o pero
    con de del a al en por para que qué como cómo donde dónde cuando cuándo por favor quiero puedo
    puede hay""".split()
)


_TOKEN_SET_WEIGHT = 0.7
_PLAIN_WEIGHT = 0.3


def normalize(text: str) -> str:
    return " ".join(w for w in utils.default_process(text).split() if w not in _STOPWORDS)


class Intent(BaseModel):
    id: str
    family: str
    examples: list[str] = Field(min_length=1)
    answer: str
    articles: list[str] = Field(default_factory=list)
    # Whether answering settles the customer's request (a policy answer) or only informs it.
    resolves: bool = True
    # Field name -> regular expression with one group, collected from the customer's words.
    collect: dict[str, str] = Field(default_factory=dict)

    @field_validator("collect")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                if re.compile(pattern).groups != 1:
                    raise ValueError(f"pattern for {name!r} needs exactly one group")
            except re.error as exc:
                raise ValueError(f"pattern for {name!r}: {exc}") from None
        return value


class KnowledgeBase(BaseModel):
    version: str
    min_confidence: float = Field(0.6, ge=0, le=1)
    fallback: str
    intents: list[Intent] = Field(min_length=1)


class KnowledgeBaseError(ValueError):
    pass


def load_knowledge_base(path: Path) -> KnowledgeBase:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return KnowledgeBase.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeBaseError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KnowledgeBaseError(f"{path}: {where}: {first['msg']}") from None


class FaqBot:
    name = "faq"
    waits_on_io = False

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._choices: list[str] = []
        self._intent_of: list[Intent] = []
        for intent in kb.intents:
            for example in intent.examples:
                self._choices.append(normalize(example) or utils.default_process(example))
                self._intent_of.append(intent)
        # Each distinct (normalized) example and where it first appears: see classify.
        self._first: dict[str, int] = {}
        for i, choice in enumerate(self._choices):
            self._first.setdefault(choice, i)
        self._patterns = {
            intent.id: {name: re.compile(p, re.IGNORECASE) for name, p in intent.collect.items()}
            for intent in kb.intents
        }

    @classmethod
    def from_file(cls, path: Path) -> FaqBot:
        return cls(load_knowledge_base(path))

    def classify(self, text: str) -> tuple[Intent | None, float]:
        query = normalize(text)
        if not query:
            return None, 0.0
        # A customer's words that normalize to an example ("Where is my order?" and "order status?" do, as
        # short questions often do) need no search: the plain ratio is 100 only for identical texts, so that
        # example scores the most any can, and the first of them is where the search below would stop.
        exact = self._first.get(query)
        if exact is not None:
            return self._intent_of[exact], round(_score(query, query) / 100, 3)
        # _score over every example, as rapidfuzz's extractOne with it as the scorer (the first best wins, a
        # perfect score ends the search), but each ratio computed in C with the query prepared once rather
        # than by a Python call per example: about half the time, whatever the customer wrote.
        best, index = -1.0, -1
        for (_, token_set, i), (_, plain, _) in zip(
            process.extract_iter(query, self._choices, scorer=fuzz.token_set_ratio, processor=None),
            process.extract_iter(query, self._choices, scorer=fuzz.ratio, processor=None),
            strict=True,
        ):
            score = _TOKEN_SET_WEIGHT * token_set + _PLAIN_WEIGHT * plain
            if score > best:
                best, index = score, i
                if score >= 100:
                    break
        if index < 0:
            return None, 0.0
        return self._intent_of[index], round(best / 100, 3)

    async def respond(self, conversation: Conversation, message: Message) -> BotTurn:
        intent, confidence = self.classify(message.text)
        if intent is None or confidence < self.kb.min_confidence:
            return BotTurn(text=self.kb.fallback, intent=intent.id if intent else None,
                           family=intent.family if intent else None, confidence=confidence, fallback=True)
        fields = {
            name: match.group(1)
            for name, pattern in self._patterns[intent.id].items()
            if (match := pattern.search(message.text))
        }
        return BotTurn(text=intent.answer, intent=intent.id, family=intent.family, confidence=confidence,
                       resolved=intent.resolves,
                       articles=intent.articles, fields=fields)

    async def aclose(self) -> None:
        return None


def _score(query: str, choice: str, **kwargs: object) -> float:
    """Word-order-free similarity that still punishes a one-word query matching a long example. The reference
    for ``FaqBot.classify``, which computes the same in C (tests/test_bots.py checks they agree).

    token_set_ratio alone scores a one-word subset 100; weighting it with the plain ratio keeps short,
    vague messages below the confidence threshold.
    """
    return _TOKEN_SET_WEIGHT * fuzz.token_set_ratio(query, choice) + _PLAIN_WEIGHT * fuzz.ratio(query, choice)
