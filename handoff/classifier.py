"""A small classifier trained on a rule set's labelled examples when the rules load: the triggers' second
opinion when no phrase matched and the bot was unsure.

Phrase patterns reach what their writer imagined; customers write a long tail of other wordings ("could you
loop in somebody from your team?"). Word and word-pair TF-IDF with logistic regression (scikit-learn),
trained on the labelled examples the rules name, generalises from many such wordings at once. Nothing is
downloaded: the examples are files beside the rules, and training takes a fraction of a second.

Scoring is the hot path, so it does not go through scikit-learn's per-call machinery (a few hundred µs):
the trained weights are read out once, per word or word pair and class, and a message is scored by adding
the weights of the features it has, with scikit-learn's own analyzer splitting it. Every guess names the
words that weighed most for it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from handoff.labelled import NONE, Item

# Inverse regularisation (chosen by leaving each development set out, eval/README.md) and class balance:
# the examples are few and "none" outnumbers each trigger.
REGULARISATION = 30.0
_MAX_ITER = 3000


@dataclass(frozen=True, slots=True)
class Guess:
    label: str
    probability: float
    words: tuple[str, ...]


def examples_of(items: Iterable[Item], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """(texts, labels) to learn from. A conversation's label belongs to its last message. Every message of
    a conversation labelled none, or labelled with a trigger the classifier does not decide (such as
    negative_sentiment), is an example of none: none of its messages asked for what the classifier decides,
    or that would have been the label. Angry messages that ask for nothing teach it that anger alone is not
    a request for a person."""
    texts: list[str] = []
    targets: list[str] = []
    for item in items:
        if item.expect == NONE or item.expect not in labels:
            texts.extend(item.messages)
            targets.extend([NONE] * len(item.messages))
        else:
            texts.append(item.messages[-1])
            targets.append(item.expect)
    return texts, targets


class TriggerClassifier:
    """Trained once per rule set; `guess` costs microseconds and never raises."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        if len(set(labels)) < 2 or NONE not in labels:
            raise ValueError("the examples need at least one trigger and some messages labelled none")
        # Imported when a rule set is trained, not when the rules are read: scikit-learn takes over a second
        # to import, which commands that only read the rules (review, rules check) never need to pay.
        from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415 - see above
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - see above

        vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
        matrix = vectorizer.fit_transform(texts)
        model = LogisticRegression(C=REGULARISATION, max_iter=_MAX_ITER, class_weight="balanced")
        model.fit(matrix, labels)
        self.classes: tuple[str, ...] = tuple(str(c) for c in model.classes_)
        self.examples = len(texts)
        self._analyze = vectorizer.build_analyzer()
        idf = vectorizer.idf_
        coef = model.coef_
        self._intercept = tuple(float(b) for b in model.intercept_)
        # feature -> (idf, idf x weight of each class): all a message's score needs.
        self._features: dict[str, tuple[float, tuple[float, ...]]] = {
            feature: (float(idf[index]), tuple(float(idf[index] * w) for w in coef[:, index]))
            for feature, index in vectorizer.vocabulary_.items()
        }

    def guess(self, text: str) -> Guess:
        """The most likely label for one message, its probability, and the words that weighed most."""
        features = self._features
        counts = Counter(f for f in self._analyze(text) if f in features)
        scores = list(self._intercept)
        if counts:
            # TF-IDF as scikit-learn computes it: 1 + log(tf), times idf, the vector scaled to length 1; the
            # scaling is applied once to the summed weights.
            squares = 0.0
            vectors: list[tuple[float, ...]] = []
            for feature, n in counts.items():
                idf, vector = features[feature]
                tf = 1.0 + math.log(n)
                squares += (tf * idf) ** 2
                vectors.append(vector if n == 1 else tuple(tf * v for v in vector))
            norm = math.sqrt(squares)
            columns = zip(*vectors, strict=True)
            scores = [b + sum(column) / norm for b, column in zip(scores, columns, strict=True)]
        best = max(range(len(scores)), key=scores.__getitem__)
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        label = self.classes[best]
        words = tuple(sorted(counts, key=lambda f: -self._features[f][1][best])[:3]) if counts else ()
        return Guess(label, round(1.0 / total, 3), words)
