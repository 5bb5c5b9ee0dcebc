"""The alternatives docs/analysis.md compares: the offline analyzer's rules alone (a guess,
follow_up, where they find no outcome words), its word model alone (multinomial naive Bayes over
each speaker's words and word pairs, trained on the tuning part), and the product, which asks the
word model only where the rules find nothing. Scored on the held-out and challenge parts.

    python -m evaluation.bag_of_words_baseline
"""
from __future__ import annotations

from datetime import datetime

from services.analyzer.heuristic import FOLLOW_UP, heuristic_analysis, model_lines, trained_model
from services.analyzer.labelled_set import LABEL_TAGS, load_labelled_calls
from worker.evaluate import ratio

NOW = datetime(2026, 12, 1)


def main() -> None:
    calls = load_labelled_calls()
    model = trained_model()
    print(f"{'part':10} {'calls':>5} {'rules alone':>15} {'word model':>15} {'product':>15}")
    for split in ("held_out", "challenge"):
        part = [call for call in calls if call.split == split]
        rules = alone = product = 0
        for call in part:
            analysis = heuristic_analysis(call.transcript, NOW, NOW, LABEL_TAGS)
            by_rules = FOLLOW_UP[0] if "rule 'word_model'" in analysis.reasoning else analysis.tag
            rules += by_rules == call.expected_tag
            alone += model.predict(model_lines(call.transcript))[0] == call.expected_tag
            product += analysis.tag == call.expected_tag
        if part:
            print(f"{split:10} {len(part):>5} {ratio(rules, len(part)):>15} {ratio(alone, len(part)):>15} "
                  f"{ratio(product, len(part)):>15}")


if __name__ == "__main__":
    main()
