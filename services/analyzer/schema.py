"""What an analysis is: the fields asked of the LLM, how an answer is validated, the form it is
stored in on the call (`calls.analysis`), and what its tokens cost."""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (AfterValidator, BeforeValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      StringConstraints, TypeAdapter, ValidationError)
from typing_extensions import TypedDict

from utils.config import ExtraField, Price

LEAD_STATUSES = ("NEW", "CONTACTED", "QUALIFIED", "WON", "LOST")
SENTIMENTS = ("positive", "neutral", "negative")
HEURISTIC_MODEL = "heuristic"
SHORT_TRANSCRIPT = "transcript_too_short"
SCHEMA_NAME = "call_analysis"
TOKENS_PER_PRICE_UNIT = 1_000_000


class InvalidAnswer(ValueError):
    """The LLM answered, but not with an analysis of the expected shape."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def estimated_cost(usage: Usage, price: Price | None, *, discount: float = 0.0) -> float | None:
    """USD for `usage` at `price` (USD per million tokens), less `discount` (a fraction: 0.5 is
    half price); None when tokens were spent on a model without a price, so an unknown cost is never
    reported as free. An estimate only: Groq's bill is the truth (prices change)."""
    if not (usage.prompt_tokens or usage.completion_tokens):
        return 0.0
    if price is None:
        return None
    full = (usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million) / TOKENS_PER_PRICE_UNIT
    return full * (1.0 - discount)


@dataclass(frozen=True)
class Analysis:
    tag: str | None  # None only from the heuristic, when its rule's tag is not configured
    summary: str
    lead_score: int
    lead_status: str
    sentiment: str
    confidence: int
    reasoning: str
    extra: dict[str, object] = field(default_factory=dict)
    recommended_stage: str | None = None  # a stage name of the contact's pipeline, where there is one


# An Analysis' fields as the answer and the stored documents spell them.
_STORED_NAMES = {"lead_score": "leadScore", "lead_status": "leadStatus", "recommended_stage": "recommendedStage"}
_FIELD_NAMES = {stored: name for name, stored in _STORED_NAMES.items()}


def parse_answer(content: str | None, tags: tuple[str, ...],
                 extra_fields: tuple[ExtraField, ...], stages: tuple[str, ...] = ()) -> Analysis:
    """The LLM's JSON answer as an Analysis; raises InvalidAnswer saying what is wrong. `stages`:
    the names of the contact's pipeline stages, one of which the answer must recommend."""
    if not content or not content.strip():
        raise InvalidAnswer("answer is empty")
    try:
        payload = json.loads(content)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"answer is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(payload, dict):
        raise InvalidAnswer(f"answer is a JSON {type(payload).__name__}, not an object")
    try:
        answer = _answer_shape(tags, extra_fields, stages).validate_python(payload)
    except ValidationError as exc:
        # Where and what, never the value: an answer may echo the transcript.
        errors = exc.errors(include_input=False, include_url=False)
        raise InvalidAnswer("; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}"
                                      for e in errors)) from None
    extra = {f.name: answer.pop(f.name) for f in extra_fields}
    return Analysis(**{_FIELD_NAMES.get(name, name): value for name, value in answer.items()}, extra=extra)


_Text = Annotated[StrictStr, StringConstraints(strip_whitespace=True)]
# A float is rounded; bool is an int in Python, but `true` is not a score (strict).
_Percentage = Annotated[float, Field(strict=True, ge=0, le=100), AfterValidator(round)]
_EXTRA_TYPES = {"string": _Text, "number": StrictInt | StrictFloat, "boolean": StrictBool}


def _one_of(allowed: tuple[str, ...]) -> object:
    def canonical(value: object) -> object:
        return (spelled(value, allowed) or value) if isinstance(value, str) else value

    return Annotated[Literal[allowed], BeforeValidator(canonical)]


@functools.lru_cache(maxsize=64)
def _answer_shape(tags: tuple[str, ...], extra_fields: tuple[ExtraField, ...],
                  stages: tuple[str, ...]) -> TypeAdapter:
    """The answer `answer_json_schema` describes, with the ranges strict mode cannot say; an
    extra field's null says the call did not mention it."""
    fields = {"tag": _one_of(tags), "summary": Annotated[_Text, StringConstraints(min_length=1)],
              "leadScore": _Percentage, "leadStatus": _one_of(LEAD_STATUSES), "sentiment": _one_of(SENTIMENTS),
              "confidence": _Percentage, "reasoning": _Text}
    fields.update({extra.name: _EXTRA_TYPES[extra.type] | None for extra in extra_fields})
    if stages:
        fields["recommendedStage"] = _one_of(stages)
    return TypeAdapter(TypedDict("Answer", fields))


def answer_json_schema(tags: tuple[str, ...], extra_fields: tuple[ExtraField, ...],
                       stages: tuple[str, ...] = ()) -> dict:
    """The answer `parse_answer` accepts, as the JSON Schema of Groq's structured outputs, in
    the subset strict mode takes: every property required, no additional properties, no ranges."""
    properties = {
        "tag": {"type": "string", "enum": list(tags)},
        "summary": {"type": "string"},
        "leadScore": {"type": "integer", "description": "0-100"},
        "leadStatus": {"type": "string", "enum": list(LEAD_STATUSES)},
        "sentiment": {"type": "string", "enum": list(SENTIMENTS)},
        "confidence": {"type": "integer", "description": "0-100"},
        "reasoning": {"type": "string"},
    }
    for extra in extra_fields:
        # Null says the call did not mention it; strict mode has no optional properties.
        properties[extra.name] = {"type": [extra.type, "null"], "description": extra.description}
    if stages:
        properties["recommendedStage"] = {"type": "string", "enum": list(stages)}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def analysis_document(status: str, *, attempted_at: datetime, model: str | None = None,
                      error: str | None = None, usage: Usage = Usage(),
                      used_fallback: bool = False, analysis: Analysis | None = None,
                      skipped: str | None = None) -> dict:
    """`calls.analysis`: the outcome of one attempt (status ok / failed / skipped) and, when
    anything produced a result, its fields."""
    document = {
        "status": status,
        "error": error,
        "model": model,
        "attemptedAt": attempted_at,
        "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
        "usedFallback": used_fallback,
    }
    if skipped is not None:
        document["skipped"] = skipped
    if analysis is not None:  # a recommended stage only where there is one
        document.update({_STORED_NAMES.get(name, name): value for name, value in asdict(analysis).items()
                         if name != "recommended_stage" or value is not None})
    return document


def spelled(value: str, allowed: tuple[str, ...]) -> str | None:
    """The allowed spelling of `value` in any case (models often change the case of an enum)."""
    return next((option for option in allowed if option.casefold() == value.strip().casefold()), None)
