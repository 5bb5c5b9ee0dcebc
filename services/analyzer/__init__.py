"""Phase 2 of the call processor: LLM analysis of call transcripts and its CRM write-back.

    batch = build_batch(db, settings, owner)   # once per process
    batch.run(recorder)                        # every call processor run
"""
from __future__ import annotations

import threading

from pymongo.database import Database

from services.analyzer.batch import AnalysisBatch
from services.analyzer.groq_analyzer import GroqAnalyzer
from services.analyzer.requeue import requeue
from utils.config import Settings

__all__ = ["AnalysisBatch", "build_batch", "requeue"]


def build_batch(db: Database, settings: Settings, owner: str,
                stop: threading.Event | None = None) -> AnalysisBatch:
    """The call processor's phase 2, run once per job run. `owner` (unique per process) marks
    this process's claims; `stop` ends a batch early. Without a Groq key every call gets the
    heuristic analysis."""
    llm = GroqAnalyzer(settings) if settings.groq_api_keys else None
    return AnalysisBatch(db, settings, owner, llm, stop)
