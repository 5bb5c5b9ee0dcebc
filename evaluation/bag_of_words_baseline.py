"""The alternative to rules that docs/analysis.md compares them with: a small statistical model
(multinomial naive Bayes over the words and word pairs of each speaker's lines) trained on the
tuning part of the labelled set, scored on the held-out and challenge parts, alone and as the
rules' fallback where the rules only guess. Not used by the product.

    python -m evaluation.bag_of_words_baseline
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime

from services.analyzer.heuristic import CONFIDENCE, heuristic_analysis
from services.analyzer.lexicon import words
from utils.config import DEFAULT_TAGS
from worker.labelled_set import LabelledCall, load_labelled_calls

NOW = datetime(2026, 12, 1)
SMOOTHING = 1.0


def features(transcript: str) -> list[str]:
    out = []
    for line in transcript.splitlines():
        speaker, _, text = line.partition(":")
        prefix = "c:" if speaker.strip() == "user" else "a:"
        tokens = words(text)
        out += [prefix + token for token in tokens]
        out += [prefix + a + "_" + b for a, b in zip(tokens, tokens[1:])]
    return out


class NaiveBayes:
    def __init__(self, calls: list[LabelledCall]):
        self.priors = Counter(call.expected_tag for call in calls)
        self.counts: dict[str, Counter] = defaultdict(Counter)
        for call in calls:
            self.counts[call.expected_tag].update(features(call.transcript))
        self.vocabulary = {feature for counts in self.counts.values() for feature in counts}
        self.totals = {tag: sum(counts.values()) for tag, counts in self.counts.items()}
        self.calls = len(calls)

    def predict(self, transcript: str) -> str:
        found = [f for f in features(transcript) if f in self.vocabulary]
        size = len(self.vocabulary)

        def log_probability(tag: str) -> float:
            counts, total = self.counts[tag], self.totals[tag]
            return math.log(self.priors[tag] / self.calls) + sum(
                math.log((counts[f] + SMOOTHING) / (total + SMOOTHING * size)) for f in found)

        return max(self.priors, key=log_probability)


def main() -> None:
    calls = load_labelled_calls()
    model = NaiveBayes([call for call in calls if call.split == "tuning"])
    print(f"{'part':10} {'calls':>5} {'rules':>12} {'naive Bayes':>12} {'rules, NB for guesses':>22}")
    for split in ("held_out", "challenge"):
        part = [call for call in calls if call.split == split]
        rules = nb = hybrid = 0
        for call in part:
            analysis = heuristic_analysis(call.transcript, NOW, NOW, DEFAULT_TAGS)
            guessed = model.predict(call.transcript)
            rules += analysis.tag == call.expected_tag
            nb += guessed == call.expected_tag
            fallback = guessed if analysis.confidence <= CONFIDENCE["guess"] else analysis.tag
            hybrid += fallback == call.expected_tag
        if part:
            print(f"{split:10} {len(part):>5} {_share(rules, part):>12} {_share(nb, part):>12} {_share(hybrid, part):>22}")


def _share(correct: int, part: list) -> str:
    return f"{correct}/{len(part)} {100 * correct / len(part):.0f}%"


if __name__ == "__main__":
    main()
