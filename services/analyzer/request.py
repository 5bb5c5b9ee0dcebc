"""The chat-completion request for one transcript, the same in the synchronous lane and the
Batch API lane: the model, the masked messages, and the answer format the model can keep."""
from __future__ import annotations

import math

from models.pipeline import Pipeline
from services.analyzer.prompt import build_messages
from services.analyzer.schema import SCHEMA_NAME, answer_json_schema
from utils.config import Settings

# Constrained decoding for `strict: true` (console.groq.com/docs/structured-outputs, 2026-11);
# other models take the schema as a best effort only, and `json_object` is the safer choice.
STRICT_SCHEMA_MODELS = frozenset({"openai/gpt-oss-20b", "openai/gpt-oss-120b"})
# Take `reasoning_effort` low / medium / high; other models refuse values they do not know.
REASONING_MODEL_PREFIX = "openai/gpt-oss-"
# Conservative for English and romanized Hindi alike, so pacing errs on the side of waiting.
CHARS_PER_TOKEN = 3.0


def answer_format(settings: Settings) -> str:
    """`json_schema` or `json_object`: GROQ_ANSWER_FORMAT, or by the model when `auto`."""
    if settings.groq_answer_format != "auto":
        return settings.groq_answer_format
    return "json_schema" if settings.groq_model in STRICT_SCHEMA_MODELS else "json_object"


def completion_request(transcript: str, settings: Settings, pipeline: Pipeline | None = None) -> dict:
    """Keyword arguments of `chat.completions.create`, and the `body` of a batch line.
    `pipeline`: the contact's, whose stages the answer recommends one of."""
    request = {
        "model": settings.groq_model,
        "messages": build_messages(transcript, settings, pipeline),
        "temperature": 0,
        "response_format": _response_format(settings, pipeline),
    }
    if settings.groq_model.startswith(REASONING_MODEL_PREFIX):
        request["reasoning_effort"] = settings.groq_reasoning_effort
    return request


def prompt_tokens_estimate(request: dict) -> int:
    """Tokens the request's messages will count for, before any answer says so."""
    characters = sum(len(message["content"]) for message in request["messages"])
    return math.ceil(characters / CHARS_PER_TOKEN)


def stage_names(pipeline: Pipeline | None) -> tuple[str, ...]:
    return tuple(stage.name for stage in pipeline.stages) if pipeline is not None else ()


def _response_format(settings: Settings, pipeline: Pipeline | None) -> dict:
    if answer_format(settings) == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {
        "name": SCHEMA_NAME,
        "strict": settings.groq_model in STRICT_SCHEMA_MODELS,
        "schema": answer_json_schema(settings.analysis_tags, settings.analysis_extra_fields, stage_names(pipeline)),
    }}
