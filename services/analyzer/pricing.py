"""What LLM tokens cost: a per-model price table in USD per million tokens, and the estimate
for a number of tokens. An estimate only: Groq's bill is the truth (prices change, and a batch
is billed at its discount)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # utils.config reads the table, and schema imports utils.config
    from services.analyzer.schema import Usage

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float


# Groq's on-demand prices, checked 2026-11 (console.groq.com/pricing); `LLM_PRICES` adds or
# overrides models.
DEFAULT_PRICES: dict[str, Price] = {
    "openai/gpt-oss-20b": Price(0.075, 0.30),
    "openai/gpt-oss-120b": Price(0.15, 0.60),
    "qwen/qwen3.6-27b": Price(0.60, 3.00),
}


def estimated_cost(usage: "Usage", price: Price | None, *, discount: float = 0.0) -> float | None:
    """USD for `usage` at `price`, less `discount` (a fraction: 0.5 is half price); None when
    the model has no price, so an unknown cost is never reported as free."""
    if price is None:
        return None
    full = (usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million) / TOKENS_PER_PRICE_UNIT
    return full * (1.0 - discount)
