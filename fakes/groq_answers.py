"""What the fake Groq server answers: the analysis it derives from a request's transcript (or a
misbehaviour), the chat completion around it, and the request forms Groq refuses."""
from __future__ import annotations

import json
import math
import re
import time

STRICT_MODELS = ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
REASONING_EFFORTS = ("low", "medium", "high")


def transcript_of(body: dict) -> str:
    """The transcript sent: callsync's user message is {"transcript": ...} as JSON."""
    content = body["messages"][-1]["content"]
    try:
        return json.loads(content)["transcript"]
    except (ValueError, KeyError, TypeError):
        return content


def sent_text(body: dict) -> str:
    return "\n".join(message["content"] for message in body["messages"])


def chat_completion(body: dict, content: str, prompt_tokens: int, number: int) -> dict:
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens(content),
                  "total_tokens": prompt_tokens + tokens(content)},
    }


def answer_batch_line(body: dict, extra: dict, number: int) -> tuple[int, dict]:
    """A batch line's request answered as the chat endpoint answers it: (status, body)."""
    if (refusal := form_error(body)) is not None:
        return 400, {"error": {"message": refusal, "type": "invalid_request_error", "code": "invalid_request_error"}}
    content = answer_content("analysis", transcript_of(body), extra, stages_asked(body))
    return 200, chat_completion(body, content, tokens(sent_text(body)), number)


def form_error(body: dict) -> str | None:
    """What Groq refuses in the form of a request, whatever its transcript."""
    model = body.get("model", "")
    effort = body.get("reasoning_effort")
    if effort is not None and (not model.startswith("openai/gpt-oss-") or effort not in REASONING_EFFORTS):
        return f"`reasoning_effort` {effort!r} is not supported with model `{model}`"
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    if not spec.get("strict"):
        return None
    if model not in STRICT_MODELS:
        return f"model `{model}` does not support strict structured outputs"
    schema = spec.get("schema") or {}
    if schema.get("additionalProperties") is not False or set(schema.get("required", ())) != set(schema.get("properties", {})):
        return "strict mode: every property must be required and additionalProperties must be false"
    return None


def answer_content(behaviour: str, transcript: str, extra: dict, stages: tuple[str, ...] = ()) -> str:
    """`stages`: the pipeline stages the request asks to recommend one of (the first is)."""
    if behaviour == "invalid_json":
        return "Sure! Here is the analysis: {tag: Interested"
    analysis = _analysis_of(transcript)
    if stages:
        analysis["recommendedStage"] = stages[0]
    if behaviour == "wrong_shape":
        return json.dumps({**analysis, "tag": "Maybe", "leadScore": 150})
    return json.dumps({**analysis, **extra})


def stages_asked(body: dict) -> tuple[str, ...]:
    """The stage names a request asks the answer to recommend one of: the schema's enum, or in
    JSON mode the instructions' list."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    enum = (schema.get("properties") or {}).get("recommendedStage", {}).get("enum")
    if enum:
        return tuple(enum)
    listed = re.search(r'"recommendedStage": one of ((?:"[^"]+"(?:, )?)+)', body["messages"][0]["content"])
    return tuple(re.findall(r'"([^"]+)"', listed.group(1))) if listed else ()


def _analysis_of(transcript: str) -> dict:
    """A plausible analysis that tests can trace back to the transcript it came from."""
    customer = [line.split(":", 1)[1].strip() for line in transcript.splitlines()
                if line.lower().startswith("user:")]
    score = min(40 + 10 * len(customer), 95)
    return {
        "tag": "Interested" if any(w in transcript.lower() for w in ("price", "interested")) else "follow_up",
        "summary": f"Customer said: {customer[0] if customer else 'nothing'}",
        "leadScore": score,
        "leadStatus": "QUALIFIED" if score >= 60 else "CONTACTED",
        "sentiment": "positive",
        "confidence": 90,
        "reasoning": f"{len(customer)} customer turns.",
    }


def tokens(text: str) -> int:
    """Roughly what a tokenizer counts for English: four characters a token."""
    return math.ceil(len(text) / 4)
