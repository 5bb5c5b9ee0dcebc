"""The call processor's second phase: LLM analysis of call transcripts and its CRM write-back.

`claims.CallQueue` hands out calls, `run.AnalysisRun` analyzes a run's share of them (Groq via
`groq_analyzer`, else `heuristic`), `write_back` writes each outcome onto the call and the CRM, and
`batch_api.BatchApiLane` sends a backlog through Groq's Batch API. The parts are put together in
`worker/app.py`.
"""
