"""What LLM tokens cost: a per-model price table in USD per million tokens, and the estimate
for a number of tokens. An estimate only: Groq's bill is the truth (prices change, and a batch
is billed at its discount)."""
from __future__ import annotations

from services.analyzer.schema import Usage
from utils.config import Price

TOKENS_PER_PRICE_UNIT = 1_000_000


def estimated_cost(usage: Usage, price: Price | None, *, discount: float = 0.0) -> float | None:
    """USD for `usage` at `price`, less `discount` (a fraction: 0.5 is half price); None when
    the model has no price, so an unknown cost is never reported as free."""
    if price is None:
        return None
    full = (usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million) / TOKENS_PER_PRICE_UNIT
    return full * (1.0 - discount)
