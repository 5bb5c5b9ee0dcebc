"""Phase 2 timing: a batch of 10 calls against the fake Groq server with 1 s of latency per
request. Run: `.venv/bin/python -m benchmarks.analyzer_bench` (not part of the test run)."""
from __future__ import annotations

import time
from datetime import timedelta


from fakes.mongo_hooks import HookedClient
from fakes.groq_server import FakeGroq
from worker.app import build_analysis
from services.run_records import RunRecorder
from utils.clock import utcnow
from services.database import ensure_indexes
from utils.config import Settings

CALLS = 10
LATENCY_SECONDS = 1.0


def main() -> None:
    with FakeGroq(latency=LATENCY_SECONDS) as fake:
        db = HookedClient()["callsync"]
        ensure_indexes(db)
        for number in range(CALLS):
            db.calls.insert_one({
                "callId": f"bench-{number}", "terminal": True, "processed": False, "attempts": 0,
                "callAt": utcnow() - timedelta(minutes=CALLS - number), "customerPhone": f"+9198765432{number:02d}",
                "transcript": (f"assistant: Hello, this is Ananya from Skyline Realty, call {number}.\n"
                               "user: Yes, I am interested in the 2 BHK. What is the price?\n"
                               "assistant: It starts at 85 lakhs, with possession next December.\n"
                               "user: Okay, book a site visit for Saturday please.\n"),
            })
        settings = Settings(groq_api_keys=("bench-key",), groq_base_url=fake.base_url, llm_calls_per_run=CALLS)
        recorder = RunRecorder("analyze")
        started = time.monotonic()
        build_analysis(db, settings, "bench:1:x").run(recorder)
        wall = time.monotonic() - started
        requests = fake.recorded()
    print(f"calls analyzed:   {recorder.counts['analyzed']} of {CALLS} "
          f"(concurrency {settings.llm_concurrency}, {LATENCY_SECONDS:g} s latency)")
    print(f"wall time:        {wall:.2f} s")
    print(f"requests made:    {len(requests)}")
    print(f"tokens sent:      {recorder.counts['promptTokens']} prompt, "
          f"{recorder.counts['completionTokens']} completion")


if __name__ == "__main__":
    main()
