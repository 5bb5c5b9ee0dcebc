"""The call processor's second phase: LLM analysis of call transcripts and its CRM write-back.

`claims.CallQueue` hands out calls, `batch.AnalysisBatch` runs one batch of analyses (Groq via
`groq_analyzer`, else `heuristic`), `contacts` writes each decision onto the CRM. The parts are
put together in `worker/app.py`.
"""
