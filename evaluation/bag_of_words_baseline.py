"""The alternatives docs/analysis.md compares: the offline analyzer's rules alone (a guess,
follow_up, where they find no outcome words), its word model alone (multinomial naive Bayes over
each speaker's words and word pairs, trained on the tuning part), and the product, which asks the
word model only where the rules find nothing. Scored on the held-out and challenge parts.

    python -m evaluation.bag_of_words_baseline
"""
from __future__ import annotations

from datetime import datetime

from services.analyzer.heuristic import FOLLOW_UP, heuristic_analysis, model_lines, trained_model
from utils.config import DEFAULT_TAGS
from services.analyzer.labelled_set import load_labelled_calls

NOW = datetime(2026, 12, 1)


def main() -> None:
    calls = load_labelled_calls()
    model = trained_model()
    print(f"{'part':10} {'calls':>5} {'rules alone':>12} {'word model':>12} {'product':>12}")
    for split in ("held_out", "challenge"):
        part = [call for call in calls if call.split == split]
        rules = alone = product = 0
        for call in part:
            analysis = heuristic_analysis(call.transcript, NOW, NOW, DEFAULT_TAGS)
            by_rules = FOLLOW_UP[0] if "rule 'word_model'" in analysis.reasoning else analysis.tag
            rules += by_rules == call.expected_tag
            alone += model.predict(model_lines(call.transcript))[0] == call.expected_tag
            product += analysis.tag == call.expected_tag
        if part:
            print(f"{split:10} {len(part):>5} {_share(rules, part):>12} {_share(alone, part):>12} "
                  f"{_share(product, part):>12}")


def _share(correct: int, part: list) -> str:
    return f"{correct}/{len(part)} {100 * correct / len(part):.0f}%"


if __name__ == "__main__":
    main()
