"""`main.py evaluate` and its labelled call set: the set's shape, the heuristic's figures checked
against a count made here, and Groq (the fake server) with tokens, cost and a bad answer."""
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from fakes.groq_server import FakeGroq
from services.analyzer.heuristic import heuristic_analysis
from services.analyzer.schema import LEAD_STATUSES
from utils.config import DEFAULT_TAGS, Settings
from services.analyzer.labelled_set import DatasetError, load_labelled_calls

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "evaluation" / "labelled_calls.jsonl"
CATEGORIES = {"booked", "interested", "callback", "not_interested", "wrong_number", "voicemail",
              "abusive", "prompt_injection", "long"}
LONG_CALL_CHARS = 3000
# openai/gpt-oss-20b, USD per million tokens in / out (issue 13), written out rather than read
# from the price table the command uses.
PRICE_IN, PRICE_OUT = 0.075, 0.30


def labelled() -> list[dict]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_evaluate(cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    # Run from an empty directory, so no developer's .env fills in a key or a model.
    env = {"PATH": os.environ["PATH"], "MONGODB_URI": "", "BOLNA_API_KEY": "", "GROQ_API_KEY": "", **variables}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def heuristic_predictions() -> list[tuple[dict, str, str]]:
    """What the command must have compared: the heuristic on each call, analyzed when it was made."""
    now = datetime(2026, 11, 27, 9, 0)
    out = []
    for item in labelled():
        analysis = heuristic_analysis(item["transcript"], now, now, DEFAULT_TAGS)
        out.append((item, analysis.tag, analysis.lead_status))
    return out


def test_the_labelled_set_covers_every_kind_of_call_with_allowed_labels():
    items = labelled()
    assert len(items) >= 150
    assert {item["split"] for item in items} == {"tuning", "held_out", "challenge"}
    assert sum(item["split"] == "held_out" for item in items) >= 60
    assert len({item["id"] for item in items}) == len(items)
    assert {item["category"] for item in items} == CATEGORIES
    assert min(Counter(item["category"] for item in items).values()) >= 5
    assert {"english", "hinglish", "indian_english"} <= {item["style"] for item in items}
    assert {item["expected_tag"] for item in items} == set(DEFAULT_TAGS)
    assert {item["expected_status"] for item in items} == set(LEAD_STATUSES)
    assert sum(len(item["transcript"]) >= LONG_CALL_CHARS for item in items) >= 5
    for item in items:
        lines = [line for line in item["transcript"].splitlines() if line.strip()]
        assert lines and all(line.startswith(("assistant: ", "user: ")) for line in lines), item["id"]
    # The documented mapping of the outcomes that have no tag of their own.
    for item in items:
        if item["category"] == "wrong_number":
            assert (item["expected_tag"], item["expected_status"]) == ("No_Answer", "LOST"), item["id"]
        if item["category"] == "voicemail":
            assert (item["expected_tag"], item["expected_status"]) == ("No_Answer", "NEW"), item["id"]
    assert [call.id for call in load_labelled_calls()] == [item["id"] for item in items]


def test_a_broken_labelled_set_is_one_line_naming_the_line_and_exit_2(tmp_path):
    good, bad = labelled()[:2]
    bad["expected_tag"] = "Booked"
    dataset = tmp_path / "calls.jsonl"
    dataset.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")

    result = run_evaluate(tmp_path, "--dataset", str(dataset))

    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("callsync: calls.jsonl line 2: expected_tag must be one of Purchased")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_without_a_key_evaluate_reports_the_heuristic_figures(tmp_path):
    result = run_evaluate(tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    predictions = heuristic_predictions()
    total = len(predictions)
    tag_hits = sum(item["expected_tag"] == tag for item, tag, _ in predictions)
    status_hits = sum(item["expected_status"] == status for item, _, status in predictions)
    assert report["analyzer"] == "heuristic" and report["calls"] == total
    assert report["tag"]["correct"] == tag_hits and report["tag"]["accuracy"] == tag_hits / total
    assert report["status"]["correct"] == status_hits and report["status"]["accuracy"] == status_hits / total
    tag_pairs = Counter((item["expected_tag"], tag) for item, tag, _ in predictions)
    assert {(row, column): count for row, counts in report["tag"]["confusion"].items()
            for column, count in counts.items() if count} == dict(tag_pairs)
    status_pairs = Counter((item["expected_status"], status) for item, _, status in predictions)
    assert {(row, column): count for row, counts in report["status"]["confusion"].items()
            for column, count in counts.items() if count} == dict(status_pairs)
    for category in CATEGORIES:
        members = [(item, tag) for item, tag, _ in predictions if item["category"] == category]
        assert report["byCategory"][category]["calls"] == len(members)
        assert report["byCategory"][category]["tagCorrect"] == sum(i["expected_tag"] == t for i, t in members)
    for split in ("tuning", "held_out", "challenge"):
        members = [(item, tag, status) for item, tag, status in predictions if item["split"] == split]
        part = report["bySplit"][split]
        assert part["calls"] == len(members) > 0
        assert part["tag"]["correct"] == sum(item["expected_tag"] == tag for item, tag, _ in members)
        assert part["status"]["correct"] == sum(item["expected_status"] == status for item, _, status in members)
        assert part["injections"] == {
            "calls": sum("injected_tag" in item for item, _, _ in members),
            "obeyed": [item["id"] for item, tag, _ in members
                       if tag == item.get("injected_tag") != item["expected_tag"]]}
    assert report["failures"] == {"count": 0, "calls": []}
    assert report["usage"] == {"promptTokens": 0, "completionTokens": 0}
    assert report["estimatedCostUsd"] == 0


def test_the_text_report_shows_accuracy_the_confusion_table_and_categories(tmp_path):
    result = run_evaluate(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    predictions = heuristic_predictions()
    total = len(predictions)
    hits = sum(item["expected_tag"] == tag for item, tag, _ in predictions)
    assert f"tag accuracy:    {hits}/{total} = {100 * hits / total:.1f}%" in lines
    assert "failed answers:  0 (counted as misses)" in lines and "tokens:          0 in / 0 out" in lines
    header = lines.index("Tags (rows: expected, columns: predicted)") + 1
    assert lines[header].split() == ["expected", *DEFAULT_TAGS, "total"]
    for offset, expected in enumerate(DEFAULT_TAGS, start=header + 2):
        counts = [sum(1 for item, tag, _ in predictions if item["expected_tag"] == expected and tag == column)
                  for column in DEFAULT_TAGS]
        assert lines[offset].split() == [expected, *map(str, counts), str(sum(counts))]
    start = lines.index("By category") + 3
    rows = {line.split()[0]: line.split()[1:] for line in lines[start:lines.index("", start)]}
    for category in CATEGORIES:
        members = [tag == item["expected_tag"] for item, tag, _ in predictions if item["category"] == category]
        assert rows[category][:2] == [str(len(members)), f"{sum(members)}/{len(members)}"]
    held_out = [tag == item["expected_tag"] for item, tag, _ in predictions if item["split"] == "held_out"]
    part = lines.index(f"Held-out part (never tuned on): {len(held_out)} calls")
    assert lines[part + 1] == f"tag accuracy:    {sum(held_out)}/{len(held_out)} = {100 * sum(held_out) / len(held_out):.1f}%"
    assert "Held-out part (never tuned on), by style" in lines
    assert "Tuning part (the rules were adjusted on these), by category" in lines


@pytest.mark.parametrize("field, value, message", [
    ("split", "training", "split must be one of tuning, held_out, challenge"),
    ("injected_tag", "Hot", "injected_tag must be one of Purchased"),
])
def test_a_labelled_call_with_an_unknown_split_or_injected_tag_is_refused(tmp_path, field, value, message):
    item = {**labelled()[0], field: value}
    dataset = tmp_path / "calls.jsonl"
    dataset.write_text(json.dumps(item) + "\n")
    with pytest.raises(DatasetError, match=f"calls.jsonl line 1: {message}"):
        load_labelled_calls(dataset)


@pytest.fixture
def groq():
    with FakeGroq() as server:
        yield server


def test_against_groq_the_tokens_and_cost_are_reported_and_a_bad_answer_is_one_failure(tmp_path, groq):
    groq.respond("invalid_json", times=1)
    result = run_evaluate(tmp_path, "--json", "--limit", "8", GROQ_API_KEY="key-1", GROQ_BASE_URL=groq.base_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    first = labelled()[0]
    assert report["analyzer"] == "groq" and report["model"] == Settings().groq_model and report["calls"] == 8
    assert len(groq.recorded()) == 8  # an invalid answer is final, not asked again
    assert report["failures"]["count"] == 1 and report["failures"]["calls"][0]["id"] == first["id"]
    assert "invalid answer" in report["failures"]["calls"][0]["reason"]
    assert report["tag"]["confusion"][first["expected_tag"]]["(failed)"] == 1
    assert sum(sum(row.values()) for row in report["tag"]["confusion"].values()) == 8
    for scores, labels in ((report["tag"], DEFAULT_TAGS), (report["status"], LEAD_STATUSES)):
        # A failure is a miss: only the diagonal counts as correct.
        assert scores["correct"] == sum(scores["confusion"][label][label] for label in labels)
        assert scores["accuracy"] == scores["correct"] / 8
    usage = report["usage"]
    # The fake counts a token per four characters sent; the unusable answer's tokens count too.
    assert usage["promptTokens"] == groq.tokens_sent() > 0 and usage["completionTokens"] > 0
    expected_cost = (usage["promptTokens"] * PRICE_IN + usage["completionTokens"] * PRICE_OUT) / 1_000_000
    assert report["estimatedCostUsd"] == pytest.approx(expected_cost)
    spoken = first["transcript"].splitlines()[1].split(": ", 1)[1]
    assert spoken not in result.stdout + result.stderr  # transcripts are never printed


def test_the_text_report_against_groq_lists_the_failed_call_and_an_unknown_price(tmp_path, groq):
    groq.respond("invalid_json", times=1)
    result = run_evaluate(tmp_path, "--limit", "3", GROQ_API_KEY="key-1", GROQ_BASE_URL=groq.base_url,
                          GROQ_MODEL="acme/unpriced-model")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "failed answers:  1 (counted as misses)" in lines
    assert any(line.startswith("estimated cost:  unknown") for line in lines)
    failed = lines[lines.index("Failed answers") + 3]
    assert failed.split()[0] == labelled()[0]["id"] and "invalid answer" in failed


def test_an_unavailable_llm_stops_the_evaluation_with_a_clear_message(tmp_path):
    with FakeGroq(retired_models=(Settings().groq_model,)) as groq:
        result = run_evaluate(tmp_path, "--json", GROQ_API_KEY="key-1", GROQ_BASE_URL=groq.base_url)
        assert len(groq.recorded()) == 1
    assert result.returncode == 1 and result.stdout == ""
    assert "evaluation stopped after 0 of" in result.stderr and "the LLM is unavailable" in result.stderr
    assert "GROQ_MODEL" in result.stderr and "Traceback" not in result.stderr
