"""The offline analyzer's answer where its rules find no outcome words: a multinomial naive Bayes
over the words and word pairs of each speaker's lines, trained when first needed on the tuning
part of the labelled set (evaluation/labelled_calls.jsonl), never on the held-out or challenge
parts. About 40 lines and no dependency; docs/analysis.md has the figures that chose it."""
from __future__ import annotations

import logging
import math
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

from services.analyzer.labelled_set import DatasetError, load_labelled_calls
from services.analyzer.lexicon import words

log = logging.getLogger(__name__)
SMOOTHING = 1.0
TRAINING_SPLIT = "tuning"


@dataclass(frozen=True)
class Example:
    lines: tuple[tuple[bool, str], ...]  # (said by the customer, text), in order
    label: str  # "tag|status"


def features(lines: tuple[tuple[bool, str], ...]) -> list[str]:
    out = []
    for by_customer, text in lines:
        prefix = "c:" if by_customer else "a:"
        tokens = words(text)
        out += [prefix + token for token in tokens]
        out += [prefix + a + "_" + b for a, b in zip(tokens, tokens[1:])]
    return out


class WordModel:
    def __init__(self, examples: list[Example]):
        counts: dict[str, Counter] = defaultdict(Counter)
        priors = Counter(example.label for example in examples)
        self.trained_on = len(examples)
        for example in examples:
            counts[example.label].update(features(example.lines))
        vocabulary = {feature for label_counts in counts.values() for feature in label_counts}
        self._prior = {label: math.log(n / len(examples)) for label, n in priors.items()}
        # log P(feature | label) for every feature seen, and for an unseen one per label
        self._unseen = {}
        self._log_p: dict[str, dict[str, float]] = defaultdict(dict)
        for label, label_counts in counts.items():
            total = sum(label_counts.values()) + SMOOTHING * len(vocabulary)
            self._unseen[label] = math.log(SMOOTHING / total)
            for feature, n in label_counts.items():
                self._log_p[feature][label] = math.log((n + SMOOTHING) / total)

    def predict(self, lines: tuple[tuple[bool, str], ...]) -> tuple[str, str]:
        """(tag, lead status) of the most likely label."""
        scores = dict(self._prior)
        for feature in features(lines):
            known = self._log_p.get(feature)
            if known is None:
                continue  # in no label's training words: says nothing
            for label in scores:
                scores[label] += known.get(label, self._unseen[label])
        tag, _, status = max(scores, key=scores.get).partition("|")
        return tag, status


_lock = threading.Lock()
_model: WordModel | None = None
_tried = False


def trained_model(read: Callable[[str], tuple[tuple[bool, str], ...]]) -> WordModel | None:
    """The model trained on the tuning calls, once per process; None (the rules then guess) when
    the labelled set cannot be read. `read`: a transcript as the analyzer sees it (its lines,
    with the customer's instructions set aside), so training and prediction see the same text."""
    global _model, _tried
    with _lock:
        if not _tried:
            _tried = True
            _model = _train(read)
        return _model


def _train(read: Callable[[str], tuple[tuple[bool, str], ...]]) -> WordModel | None:
    try:
        calls = [call for call in load_labelled_calls() if call.split == TRAINING_SPLIT]
    except DatasetError as exc:
        log.warning("the offline analyzer's word model is off: %s", exc)
        return None
    return WordModel([Example(read(call.transcript), f"{call.expected_tag}|{call.expected_status}")
                      for call in calls]) if calls else None
