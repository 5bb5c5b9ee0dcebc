"""An analysis without an LLM, for when no Groq key is configured or the LLM attempt failed,
so that every processed call still gives its contact a score, a status, a tag and a summary."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from services.analyzer.prompt import mask_pii
from services.analyzer.schema import Analysis

BUYING_SIGNALS = ("price", "cost", "buy", "book", "appointment", "interested", "delivery",
                  "payment", "quote", "urgent", "discount", "order", "purchase", "visit", "demo")
# Rules in priority order: the first whose phrases the customer said decides the tag.
_TAG_RULES = (
    ("Not_Interested", ("not interested", "don't call", "do not call", "no thanks", "stop calling",
                        "not looking")),
    ("Purchased", ("purchased", "bought", "paid", "order placed", "booked")),
    ("follow_up", ("call back", "call me", "later", "tomorrow", "next week", "follow up")),
)
_POSITIVE = ("yes", "sure", "great", "good", "okay", "perfect", "thanks", "thank you", "fine")
_NEGATIVE = ("no", "not", "busy", "expensive", "stop", "don't", "never", "angry", "waste")
_CUSTOMER_SPEAKERS = ("user", "customer", "human", "caller")
_TURN = re.compile(r"^\s*(\w+)\s*:\s*(.*)$")
SUMMARY_CHARS = 200
MIN_SCORE, MAX_SCORE = 15, 80
CONFIDENCE = 60


@dataclass(frozen=True)
class _Turn:
    by_customer: bool
    text: str


def heuristic_analysis(transcript: str, call_at: datetime | None, now: datetime,
                       tags: tuple[str, ...]) -> Analysis:
    turns = _turns(transcript)
    customer = [turn.text for turn in turns if turn.by_customer]
    customer_text = " ".join(customer).lower()
    signals = [word for word in BUYING_SIGNALS if _said(customer_text, word)]
    avg_words = sum(len(text.split()) for text in customer) / len(customer) if customer else 0.0
    switches = sum(1 for a, b in zip(turns, turns[1:]) if a.by_customer != b.by_customer)
    back_and_forth = switches / (len(turns) - 1) if len(turns) > 1 else 0.0
    age_days = (now - call_at).days if call_at else None

    raw_score = (MIN_SCORE + min(len(turns), 20) + 0.5 * min(avg_words, 20) + 6 * min(len(signals), 5)
                 + 10 * back_and_forth + _recency_bonus(age_days))
    score = round(max(MIN_SCORE, min(MAX_SCORE, raw_score)))
    reasoning = (f"Heuristic (no LLM): {len(turns)} turns, {len(customer)} by the customer, "
                 f"{avg_words:.1f} words per customer utterance, buying signals "
                 f"[{', '.join(signals)}], back-and-forth {back_and_forth:.2f}, "
                 f"{'unknown age' if age_days is None else f'{age_days} days old'} -> score {score}.")
    return Analysis(
        tag=_configured(_tag(customer, customer_text, signals), tags),
        summary=_summary(customer),
        lead_score=score,
        lead_status="QUALIFIED" if score >= 60 else "CONTACTED" if score >= 40 else "NEW",
        sentiment=_sentiment(customer_text),
        confidence=CONFIDENCE,
        reasoning=reasoning,
    )


def _turns(transcript: str) -> list[_Turn]:
    """"speaker: text" lines; a line without a speaker continues the previous turn."""
    turns: list[_Turn] = []
    for line in transcript.splitlines():
        match = _TURN.match(line)
        if match:
            turns.append(_Turn(match.group(1).lower() in _CUSTOMER_SPEAKERS, match.group(2).strip()))
        elif line.strip() and turns:
            turns[-1] = _Turn(turns[-1].by_customer, f"{turns[-1].text} {line.strip()}")
    return turns


def _said(text: str, phrase: str, *, whole_word: bool = False) -> bool:
    # At a word start, so "book" counts "booking" but not "facebook"; whole words for the
    # sentiment lists, where "no" must not count "now".
    pattern = r"\b" + re.escape(phrase) + (r"\b" if whole_word else "")
    return re.search(pattern, text) is not None


def _recency_bonus(age_days: int | None) -> int:
    if age_days is None:
        return 0
    return 10 if age_days <= 7 else 5 if age_days <= 30 else 0


def _tag(customer: list[str], customer_text: str, signals: list[str]) -> str:
    if not customer:
        return "No_Answer"
    for tag, phrases in _TAG_RULES:
        if any(_said(customer_text, phrase) for phrase in phrases):
            return tag
    return "Interested" if signals else "follow_up"


def _configured(tag: str, tags: tuple[str, ...]) -> str | None:
    """The configured spelling of the rule's tag; None when the configuration dropped it."""
    return next((option for option in tags if option.casefold() == tag.casefold()), None)


def _summary(customer: list[str]) -> str:
    first = next((text for text in customer if text), None)
    if first is None:
        return "The customer did not speak."
    first = mask_pii(first)
    clipped = first if len(first) <= SUMMARY_CHARS else first[:SUMMARY_CHARS - 3] + "..."
    return f"Customer said: {clipped}"


def _sentiment(customer_text: str) -> str:
    positive = sum(1 for word in _POSITIVE if _said(customer_text, word, whole_word=True))
    negative = sum(1 for word in _NEGATIVE if _said(customer_text, word, whole_word=True))
    if positive > negative:
        return "positive"
    if negative > positive:
        return "negative"
    return "neutral"
