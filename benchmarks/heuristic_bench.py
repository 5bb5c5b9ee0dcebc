"""The offline analyzer's time per call (issue 27 asks for well under 10 ms on one core): the
labelled set analyzed over and over, and the longest transcript it reads (MAX_CHARS). Times are
the process's CPU time, so that other processes on a shared machine do not count in them."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from services.analyzer.heuristic import MAX_CHARS, heuristic_analysis, trained_model
from utils.config import DEFAULT_TAGS
from services.analyzer.labelled_set import load_labelled_calls

NOW = datetime(2026, 12, 1)
REPEATS = {False: 20, True: 3}  # full run, --quick
LONGEST_RUNS = 5


@dataclass(frozen=True)
class Timing:
    calls: int
    seconds: float
    mean_ms: float
    p99_ms: float  # of the labelled calls; a shared machine's pauses land in the very slowest
    longest_ms: float  # median of LONGEST_RUNS on a transcript of MAX_CHARS
    training_ms: float  # the word model's training, once per process, before the first call


def per_call(quick: bool) -> Timing:
    transcripts = [call.transcript for call in load_labelled_calls()] * REPEATS[quick]
    training_ms = 1000 * _timed_training()
    times = [_timed(transcript) for transcript in transcripts]
    longest = _longest_transcript(transcripts)
    longest_ms = statistics.median(_timed(longest) for _ in range(LONGEST_RUNS)) * 1000
    times.sort()
    return Timing(len(times), sum(times), 1000 * sum(times) / len(times),
                  1000 * times[int(0.99 * (len(times) - 1))], longest_ms, training_ms)


def _timed_training() -> float:
    started = time.process_time()
    trained_model()
    return time.process_time() - started


def _timed(transcript: str) -> float:
    started = time.process_time()
    heuristic_analysis(transcript, NOW, NOW, DEFAULT_TAGS)
    return time.process_time() - started


def _longest_transcript(transcripts: list[str]) -> str:
    """The labelled calls one after another, up to the analyzer's bound: a long call's worst case."""
    text = ""
    for transcript in transcripts:
        if len(text) >= MAX_CHARS:
            break
        text += transcript
    return text[:MAX_CHARS]
