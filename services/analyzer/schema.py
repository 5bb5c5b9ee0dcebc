"""What an analysis is: the fields asked of the LLM, how an answer is validated, the form it is
stored in on the call (`calls.analysis`), and what its tokens cost."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from utils.config import ExtraField, Price

LEAD_STATUSES = ("NEW", "CONTACTED", "QUALIFIED", "WON", "LOST")
SENTIMENTS = ("positive", "neutral", "negative")
HEURISTIC_MODEL = "heuristic"
SHORT_TRANSCRIPT = "transcript_too_short"

_EXTRA_TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,)}
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
    half price); None when the model has no price, so an unknown cost is never reported as free.
    An estimate only: Groq's bill is the truth (prices change, and a Batch API job is billed at its
    discount)."""
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

    def document(self) -> dict:
        stage = {"recommendedStage": self.recommended_stage} if self.recommended_stage is not None else {}
        return {**stage,
            "tag": self.tag,
            "summary": self.summary,
            "leadScore": self.lead_score,
            "leadStatus": self.lead_status,
            "sentiment": self.sentiment,
            "confidence": self.confidence,
            "reasoning": self.reasoning,
            "extra": dict(self.extra),
        }


def parse_answer(content: str | None, tags: tuple[str, ...],
                 extra_fields: tuple[ExtraField, ...], stages: tuple[str, ...] = ()) -> Analysis:
    """The LLM's JSON answer as an Analysis; raises InvalidAnswer saying what is wrong. `stages`:
    the names of the contact's pipeline stages, one of which the answer must recommend.
    Error texts quote at most a short value, never the answer, which may echo the transcript."""
    if not content or not content.strip():
        raise InvalidAnswer("answer is empty")
    try:
        payload = json.loads(content)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"answer is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(payload, dict):
        raise InvalidAnswer(f"answer is a JSON {type(payload).__name__}, not an object")
    missing = [key for key in answer_json_schema(tags, extra_fields, stages)["required"] if key not in payload]
    if missing:
        raise InvalidAnswer(f"answer lacks {', '.join(missing)}")
    return Analysis(
        tag=_one_of("tag", payload["tag"], tags),
        summary=_answer_text("summary", payload["summary"], required=True),
        lead_score=_percentage("leadScore", payload["leadScore"]),
        lead_status=_one_of("leadStatus", payload["leadStatus"], LEAD_STATUSES),
        sentiment=_one_of("sentiment", payload["sentiment"], SENTIMENTS),
        confidence=_percentage("confidence", payload["confidence"]),
        reasoning=_answer_text("reasoning", payload["reasoning"], required=False),
        extra={f.name: _extra_value(f, payload[f.name]) for f in extra_fields},
        recommended_stage=_one_of("recommendedStage", payload["recommendedStage"], stages) if stages else None,
    )


def answer_json_schema(tags: tuple[str, ...], extra_fields: tuple[ExtraField, ...],
                       stages: tuple[str, ...] = ()) -> dict:
    """The answer `parse_answer` accepts, as the JSON Schema of Groq's structured outputs, in
    the subset strict mode takes: every property required, no additional properties. Ranges are
    not in that subset; `parse_answer` still checks them."""
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
    if analysis is not None:
        document.update(analysis.document())
    return document


def spelled(value: str, allowed: tuple[str, ...]) -> str | None:
    """The allowed spelling of `value` in any case (models often change the case of an enum)."""
    return next((option for option in allowed if option.casefold() == value.strip().casefold()), None)


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and (option := spelled(value, allowed)) is not None:
        return option
    raise InvalidAnswer(f"{name} {_short(value)} is not one of {', '.join(allowed)}")


def _answer_text(name: str, value: object, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidAnswer(f"{name} is a {type(value).__name__}, not a string")
    if required and not value.strip():
        raise InvalidAnswer(f"{name} is empty")
    return value.strip()


def _percentage(name: str, value: object) -> int:
    # bool is an int in Python, but `true` is not a score.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidAnswer(f"{name} {_short(value)} is not a number")
    if not 0 <= value <= 100:
        raise InvalidAnswer(f"{name} {value} is outside 0-100")
    return round(value)


def _extra_value(extra: ExtraField, value: object) -> object:
    """Null means the call did not mention it; otherwise the value must have the configured type."""
    if value is None:
        return None
    expected = _EXTRA_TYPES[extra.type]
    if isinstance(value, bool) != (extra.type == "boolean") or not isinstance(value, expected):
        raise InvalidAnswer(f"{extra.name} is a {type(value).__name__}, not a {extra.type}")
    return value.strip() if isinstance(value, str) else value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
