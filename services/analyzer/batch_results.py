"""A Groq batch job's input and output files: one JSONL line per call, keyed by the call's id
(`custom_id`), read back into each call's analysis."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from services.analyzer.schema import InvalidAnswer, Usage, analysis_document, parse_answer
from utils.config import Settings

BATCH_ENDPOINT = "/v1/chat/completions"


def request_line(call_id: str, request: dict) -> bytes:
    return json.dumps({"custom_id": call_id, "method": "POST", "url": BATCH_ENDPOINT, "body": request},
                      ensure_ascii=False).encode() + b"\n"


@dataclass(frozen=True)
class BatchAnswer:
    """One call's line of the output or error file."""
    call_id: str
    content: str | None
    usage: Usage
    model: str | None
    error: str | None  # the request failed at Groq: why, without Groq's text (it may quote the request)


def read_answers(*files: str) -> dict[str, BatchAnswer]:
    """The answers in the output and error files, by call id; lines that are not JSON or carry
    no id are left out (their calls count as unanswered)."""
    answers = {}
    for text in files:
        for line in text.splitlines():
            answer = _answer(line)
            if answer is not None:
                answers[answer.call_id] = answer
    return answers


def analysis_of(answer: BatchAnswer, settings: Settings, now: datetime, stages: tuple[str, ...], fallback) -> dict:
    """`calls.analysis` for one answered call: the LLM's analysis, or a failed attempt with the
    offline heuristic's (`fallback()`), as the synchronous lane writes them."""
    error = answer.error
    if error is None:
        try:
            analysis = parse_answer(answer.content, settings.analysis_tags, settings.analysis_extra_fields, stages)
            return analysis_document("ok", attempted_at=now, model=answer.model, usage=answer.usage,
                                     analysis=analysis)
        except InvalidAnswer as exc:
            error = f"invalid answer: {exc}"
    return analysis_document("failed", attempted_at=now, model="heuristic", usage=answer.usage,
                             error=f"{answer.model or settings.groq_model} (Batch API): {error}",
                             used_fallback=True, analysis=fallback())


def _answer(line: str) -> BatchAnswer | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None
    response = item.get("response") if isinstance(item.get("response"), dict) else {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    status = response.get("status_code")
    if item.get("error") or status != 200:
        return BatchAnswer(item["custom_id"], None, Usage(), body.get("model"), _error(item, status, body))
    usage = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return BatchAnswer(item["custom_id"], content, Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
                       body.get("model"), None)


def _error(item: dict, status: object, body: dict) -> str:
    details = item.get("error") or body.get("error") or {}
    code = details.get("code") if isinstance(details, dict) else None
    return f"request failed ({code or 'HTTP ' + str(status)})"
