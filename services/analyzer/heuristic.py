"""An analysis without an LLM, for when no Groq key is configured or the LLM attempt failed,
so that every processed call still gives its contact a score, a status, a tag and a summary.
It reads the turns in order, sets aside a customer's clauses aimed at the machine, decides by
rules (words in lexicon.py), else by a small word model; docs/analysis.md ("The offline
analyzer") has the method, its rules in order and its figures."""
from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from services.analyzer import lexicon as lx
from services.analyzer.labelled_set import DatasetError, load_labelled_calls
from services.analyzer.prompt import fit_budget, mask_pii
from services.analyzer.schema import Analysis, spelled

log = logging.getLogger(__name__)

# Longer transcripts keep their start and end, as the LLM's do at the default
# TRANSCRIPT_CHAR_BUDGET: the heuristic's work stays bounded (a few ms at most).
MAX_CHARS = 12_000
_CUSTOMER_SPEAKERS = frozenset({"user", "customer", "human", "caller"})
_SPEAKER_CHARS = 20
_CLAUSE_END = re.compile(r"[.!?;{}\[\]\n]")  # where a customer's clause ends
_SENTENCE = re.compile(r"[^.!?]*[.!?]|[^.!?]+$")  # with its end mark
_CASED_WORD = re.compile(r"[A-Za-z_]+")
_CUSTOMER_BOOK = lx.PhraseBook(lx.CUSTOMER_PHRASES, priority=(
    lx.REFUSE, lx.WRONG_NUMBER, lx.MACHINE, lx.PAYMENT, lx.ACCEPT, lx.CALLBACK, lx.ABUSE,
    lx.PRICE_OBJECTION, lx.SOFT_REFUSAL, lx.BUSY, lx.CONSULT, lx.NOT_THAT_PERSON, lx.INTEREST))
_AGENT_BOOK = lx.PhraseBook(lx.AGENT_PHRASES, priority=(lx.AGENT_PROPOSAL, lx.AGENT_DONE, lx.AGENT_ASKS_FOR))
NEGATION_WINDOW = 3  # words between a negation and the buying word it negates
AFFIRMATION_WINDOW = 3  # a yes opens the answer: within its first words
# Needs stated on a callback that make the lead QUALIFIED rather than CONTACTED.
_NEEDS = frozenset({"budget", "approved", "need", "lakhs", "crore", "income", "salary", "quantity",
                    "timeline"})
SUMMARY_CHARS = 240
_BUSINESS_WORDS = 4
_PUNCTUATION = ",.!?;:"
_ABBREVIATIONS = frozenset({"Dr.", "Mr.", "Mrs.", "Ms.", "St."})

# The outcomes, as (tag, lead status, base score). Tags are the default ANALYSIS_TAGS spelling.
PURCHASED = ("Purchased", "WON", 90)
INTERESTED = ("Interested", "QUALIFIED", 70)
FOLLOW_UP = ("follow_up", "CONTACTED", 45)
NOT_INTERESTED = ("Not_Interested", "LOST", 10)
WRONG_NUMBER = ("No_Answer", "LOST", 5)
NOT_REACHED = ("No_Answer", "NEW", 20)
QUALIFIED_FOLLOW_UP = ("follow_up", "QUALIFIED", 60)  # a callback with stated needs
_OUTCOMES = (PURCHASED, INTERESTED, FOLLOW_UP, NOT_INTERESTED, WRONG_NUMBER, NOT_REACHED, QUALIFIED_FOLLOW_UP)


class Rule(NamedTuple):
    """What a deciding rule answers besides the outcome. `summary` may name the business
    ({offer}); a callback's `next_step` is followed by the time asked for."""
    confidence: int
    sentiment: str
    summary: str
    next_step: str


# Confidence set by hand below each rule's hit rate on the labelled set (docs/analysis.md),
# because real calls are messier than written ones. The weak leanings, the word model and the
# bare guess sit below AUTO_ASSIGN_MIN_CONFIDENCE (60), so a person reviews those stage moves.
_CALL_BACK = "call back"
_NOT_AGAIN = "do not call again about this offer"
_LATER = "try again later"
RULES = {
    "nobody": Rule(90, "neutral", "Nobody spoke on the customer's side", _LATER),
    "machine": Rule(85, "neutral", "The call reached voicemail or a carrier message, not the customer", _LATER),
    "wrong_number": Rule(80, "neutral", "The person who answered is not the lead (wrong number)",
                         "find a correct number for the lead"),
    "booking": Rule(80, "positive", "The customer agreed to{offer} booking or purchase on the call",
                    "keep the booking and complete the order"),
    "refusal": Rule(80, "negative", "The customer declined{offer} offer", _NOT_AGAIN),
    "abuse": Rule(80, "negative", "The customer was abusive and refused{offer} offer", _NOT_AGAIN),
    "callback": Rule(75, "neutral", "The customer asked to be called back", _CALL_BACK),
    "interest": Rule(70, "positive", "The customer showed interest in{offer} offer and asked for prices or details",
                     "send the details asked for and follow up"),
    "busy": Rule(55, "neutral", "The customer could not talk at the time", _CALL_BACK),
    "consult": Rule(50, "neutral", "The customer wants to consult someone before deciding", _CALL_BACK),
    "price_objection": Rule(50, "negative", "The customer found{offer} price too high",
                            "offer a cheaper option or close the lead"),
    "soft_refusal": Rule(50, "neutral", "The customer turned down{offer} offer", _NOT_AGAIN),
    "machine_shape": Rule(50, "neutral", "The call reached what sounds like a recording, not the customer", _LATER),
    "word_model": Rule(45, "neutral", "", ""),  # says what the tag it answers says (_WORD_MODEL_SAYS)
    "guess": Rule(30, "neutral", "The customer spoke but gave no clear outcome",
                  "call again to learn what the customer wants"),
}
# The word model's summary and next step, by the tag it answers; else the guess's.
_WORD_MODEL_SAYS = {
    "Purchased": ("The call most resembles a booking or purchase", "confirm the booking or order"),
    "Interested": ("The call most resembles an interested customer", "send details and follow up"),
    "follow_up": ("The call most resembles a request to call back", _CALL_BACK),
    "Not_Interested": ("The call most resembles a refusal", _NOT_AGAIN),
    "No_Answer": ("The call most resembles one that did not reach the customer", _LATER),
}
_NAMING_QUESTION_WORDS = 6  # "Is it Lakshmi madam speaking?"
# A call that opens with a long customer turn the customer never follows: a recording.
RECORDING_WORDS = 8
CONFLICT_PENALTY = 10  # more than one kind of decisive word: less sure
INSTRUCTION_PENALTY = 10  # text was set aside: the call was not an ordinary one


Lines = tuple[tuple[bool, str], ...]  # a transcript as (said by the customer, text), in order


@dataclass
class _Turn:
    by_customer: bool
    text: str  # a customer's: the clauses kept, instructions set aside
    matches: list[lx.Match] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    negated_buying: bool = False
    words: list[str] = field(default_factory=list)
    asks: bool = False  # a customer's: asked a question


@dataclass(frozen=True)
class _Event:
    kind: str  # booking | refusal | abuse | callback (decisive); interest | interest_stated |
    # busy | consult | price_objection | soft_refusal (leanings)
    turn: int
    position: int  # word index within the turn


@dataclass(frozen=True)
class _Verdict:
    outcome: tuple[str, str, int]
    rule: str
    evidence: tuple[str, ...]
    conflicting: bool = False  # more than one kind of decisive word was said
    when: str = ""  # a callback's time, as asked for


def heuristic_analysis(transcript: str, call_at: datetime | None, now: datetime,
                       tags: tuple[str, ...]) -> Analysis:
    turns, set_aside = _read(transcript)
    verdict = _decide(turns)
    customer = [turn for turn in turns if turn.by_customer]
    confidence = RULES[verdict.rule].confidence
    if verdict.conflicting:
        confidence -= CONFLICT_PENALTY
    if set_aside:
        confidence -= INSTRUCTION_PENALTY
    tag, status, base = verdict.outcome
    score = _score(base, verdict, customer, call_at, now)
    evidence = "; ".join(verdict.evidence) or "no outcome words"
    reasoning = (f"Heuristic (no LLM): {len(turns)} turns, {len(customer)} by the customer; "
                 f"rule '{verdict.rule}' from {evidence}"
                 + (f"; {set_aside} instruction-like clause(s) of the customer ignored" if set_aside else "")
                 + f" -> {tag}, {status}, score {score}.")
    return Analysis(
        tag=spelled(tag, tags),  # None when the configuration dropped the rule's tag
        summary=_summary(verdict, turns),
        lead_score=score,
        lead_status=status,
        sentiment=RULES[verdict.rule].sentiment,
        confidence=max(0, min(100, confidence)),
        reasoning=reasoning,
    )


# -- reading ----------------------------------------------------------------------------------

def _read(transcript: str) -> tuple[list[_Turn], int]:
    """The turns, each with what was found in it, and how many customer clauses were set aside."""
    turns: list[_Turn] = []
    for line in fit_budget(transcript, MAX_CHARS).splitlines():
        speaker, colon, rest = line.partition(":")
        speaker = speaker.strip().lower()
        if colon and speaker and len(speaker) <= _SPEAKER_CHARS and speaker.replace("_", "").isalnum():
            turns.append(_Turn(speaker in _CUSTOMER_SPEAKERS, rest.strip()))
        elif line.strip() and turns:
            turns[-1].text = f"{turns[-1].text} {line.strip()}"
    set_aside = 0
    for turn in turns:
        if turn.by_customer:
            set_aside += _read_customer(turn)
        else:
            _read_agent(turn)
    return turns, set_aside


def _read_customer(turn: _Turn) -> int:
    kept, dropped = [], 0
    turn.asks = "?" in turn.text
    for clause in _CLAUSE_END.split(turn.text):
        if _is_instruction(clause):
            dropped += 1
        elif clause.strip():
            kept.append(clause)
    turn.text = ". ".join(clause.strip() for clause in kept)
    turn.words = lx.words(turn.text)
    turn.matches = _CUSTOMER_BOOK.find(turn.words)
    turn.labels = {match.label for match in turn.matches}
    turn.negated_buying = any(_negates_buying(lx.words(part)) for clause in kept for part in clause.split(","))
    return dropped


def _is_instruction(clause: str) -> bool:
    lowered = clause.lower().replace(" :", ":")
    found = set(lx.words(clause))
    targets = found & lx.INSTRUCTION_TARGETS
    return (any(speaker in lowered for speaker in lx.FORGED_SPEAKERS)
            or bool(lx.VALUE_SPELLINGS & set(_CASED_WORD.findall(clause)))
            or len(targets) >= 2 or bool(targets and (found & lx.INSTRUCTION_VERBS or found & lx.OUTCOME_WORDS)))


def _negates_buying(words: list[str]) -> bool:
    return any(lx.NEGATIONS_BEFORE.intersection(words[max(0, i - NEGATION_WINDOW):i])
               or lx.NEGATIONS_AFTER.intersection(words[i + 1:i + 1 + NEGATION_WINDOW])
               for i, word in enumerate(words) if word in lx.BUYING_WORDS)


def _read_agent(turn: _Turn) -> None:
    """What the agent's sentences do; a sentence that asks or offers states nothing done."""
    for sentence in _SENTENCE.findall(turn.text):
        words = lx.words(sentence)
        if sentence.rstrip().endswith("?") and len(words) <= _NAMING_QUESTION_WORDS and _names(sentence):
            turn.labels.add(lx.AGENT_ASKS_FOR)  # "Hello, Manoj ji?", "Selvi madam ah?"
        for match in _AGENT_BOOK.find(words):
            # "Shall I book?", "Is it confirmed?", "I will confirm", "you had booked": asked,
            # offered or past; "I've booked you for 3, is that alright?" is done.
            asked = sentence.rstrip().endswith("?") and words[:1] and words[0] in lx.QUESTION_OPENERS
            if match.label == lx.AGENT_DONE and (asked or lx.NOT_DONE.intersection(words[:match.start])):
                continue
            turn.labels.add(match.label)


# -- deciding ---------------------------------------------------------------------------------

def _decide(turns: list[_Turn]) -> _Verdict:
    customer = [n for n, turn in enumerate(turns) if turn.by_customer]
    spoken = [n for n in customer if set(turns[n].words) - lx.FILLERS]
    if not spoken:
        return _Verdict(NOT_REACHED, "nobody", ("no words from the customer",))
    machine = [n for n in spoken if lx.MACHINE in turns[n].labels]
    if machine and len(machine) == len(spoken):
        return _Verdict(NOT_REACHED, "machine", (f"voicemail or carrier message (turn {machine[0] + 1})",))
    if spoken == [0] and len(turns[0].words) >= RECORDING_WORDS and not turns[0].asks:
        return _Verdict(NOT_REACHED, "machine_shape", ("the call opens with one long customer turn, never followed",))
    asked_for = _names_asked_for(turns)
    for n in spoken:
        labels = turns[n].labels
        if (lx.WRONG_NUMBER in labels or (lx.NOT_THAT_PERSON in labels and asked_for is not None)
                or _denies_being(turns[n], asked_for)):
            return _Verdict(WRONG_NUMBER, "wrong_number", (f"wrong number (turn {n + 1})",))

    events = _events(turns, spoken)
    decisive = [e for e in events if e.kind in ("booking", "refusal", "abuse", "callback")]
    evidence = tuple(f"{e.kind} (turn {e.turn + 1})" for e in events)
    if decisive:
        last = max(decisive, key=lambda e: (e.turn, e.position))
        conflicting = len({"refusal" if e.kind == "abuse" else e.kind for e in decisive}) > 1
        if last.kind == "booking":
            return _Verdict(PURCHASED, "booking", evidence, conflicting)
        stated_later = any(e.kind == "interest_stated" and (e.turn, e.position) > (last.turn, last.position)
                           for e in events)
        if last.kind in ("refusal", "abuse") and stated_later:
            return _Verdict(INTERESTED, "interest", evidence, True)
        if last.kind in ("refusal", "abuse"):
            return _Verdict(NOT_INTERESTED, last.kind, evidence, conflicting)
        return _Verdict(_callback_outcome(turns, spoken), "callback", evidence, conflicting, _when(turns[last.turn]))
    leanings = [e for e in events if e.kind in ("interest", "busy", "consult", "price_objection", "soft_refusal")]
    if leanings:
        last = max(leanings, key=lambda e: (e.turn, e.position))
        if last.kind == "interest":
            return _Verdict(INTERESTED, "interest", evidence)
        if last.kind in ("price_objection", "soft_refusal"):
            return _Verdict(NOT_INTERESTED, last.kind, evidence)
        return _Verdict(FOLLOW_UP, last.kind, evidence, when=_when(turns[last.turn]))
    model = trained_model()
    if model is not None:
        tag, status = model.predict(_lines(turns))
        outcome = next((o for o in _OUTCOMES if o[:2] == (tag, status)), (tag, status, FOLLOW_UP[2]))
        return _Verdict(outcome, "word_model", ("no outcome words; the word model's best match",))
    return _Verdict(FOLLOW_UP, "guess", evidence)


def _lines(turns: list[_Turn]) -> Lines:
    return tuple((turn.by_customer, turn.text) for turn in turns)


def model_lines(transcript: str) -> Lines:
    """A transcript as the word model learns it: as the rules read it."""
    return _lines(_read(transcript)[0])


def _events(turns: list[_Turn], spoken: list[int]) -> list[_Event]:
    events: list[_Event] = []
    simple = {lx.REFUSE: "refusal", lx.ABUSE: "abuse", lx.CALLBACK: "callback", lx.INTEREST: "interest",
              lx.BUSY: "busy", lx.CONSULT: "consult", lx.PRICE_OBJECTION: "price_objection",
              lx.SOFT_REFUSAL: "soft_refusal"}
    first_customer = spoken[0]
    accepted_at: int | None = None
    done_at: int | None = None
    for n in spoken:
        turn = turns[n]
        for match in turn.matches:
            if match.label == lx.CALLBACK and "if" in turn.words[max(0, match.start - 3):match.start]:
                events.append(_Event("refusal", n, match.start))  # "... if you call again"
            elif match.label in simple:
                events.append(_Event(simple[match.label], n, match.start))
                if match.label == lx.INTEREST and tuple(turn.words[match.start:match.end]) in lx.INTEREST_STATED:
                    events.append(_Event("interest_stated", n, match.start))
            elif match.label == lx.PAYMENT:
                events.append(_Event("booking", n, match.start))
        if turn.negated_buying and lx.REFUSE not in turn.labels:
            events.append(_Event("refusal", n, len(turn.words)))
        if _opens_with_no(turn) and n > 0 and not turns[n - 1].by_customer:
            events.append(_Event("soft_refusal", n, 0))
        if lx.ACCEPT in turn.labels or _answers_offer_with_yes(turns, n):
            accepted_at = n if accepted_at is None else accepted_at
    for n, turn in enumerate(turns):
        if not turn.by_customer and n > first_customer and lx.AGENT_DONE in turn.labels:
            done_at = n
        if turn.by_customer and n not in spoken and _answers_offer_with_yes(turns, n):
            accepted_at = n if accepted_at is None else accepted_at  # a bare "Ok." to "You're booked"
    # A booking is said by one side and agreed by the other: the customer's yes and the
    # agent's "booked", in either order.
    if accepted_at is not None and done_at is not None:
        events.append(_Event("booking", max(accepted_at, done_at), 0))
    return events


def _opens_with_no(turn: _Turn) -> bool:
    return bool(turn.words) and turn.words[0] in lx.NEGATIVE_OPENERS and lx.NOT_A_NO.isdisjoint(turn.words[1:2])


def _names_asked_for(turns: list[_Turn]) -> frozenset[str] | None:
    """When the agent asked for a named person ("Am I speaking with Priya?"), the names it
    used, lowercased; None when it asked for nobody."""
    asking = [turn for turn in turns if not turn.by_customer and lx.AGENT_ASKS_FOR in turn.labels]
    return frozenset(name for turn in asking for name in _names(turn.text)) if asking else None


def _names(text: str) -> set[str]:
    """Capitalized words that may be a person's name, lowercased."""
    bare_words = (word.strip(_PUNCTUATION + "?'\"") for word in text.split())
    return {bare.lower() for bare in bare_words
            if bare[:1].isupper() and bare.isalpha() and bare.lower() not in lx.NOT_NAMES}


def _denies_being(turn: _Turn, asked_for: frozenset[str] | None) -> bool:
    """The customer says the name the agent asked for with a "no" or a "who": not that person."""
    if not turn.by_customer or not asked_for or asked_for.isdisjoint(turn.words):
        return False
    denial = lx.NEGATIONS_BEFORE | lx.NEGATIONS_AFTER | lx.NEGATIVE_OPENERS | {"who", "kaun", "yaaru"}
    return not denial.isdisjoint(turn.words)


def _answers_offer_with_yes(turns: list[_Turn], n: int) -> bool:
    previous = turns[n - 1] if n > 0 else None
    if previous is None or previous.by_customer:
        return False
    offered = lx.AGENT_PROPOSAL in previous.labels or lx.AGENT_DONE in previous.labels
    return offered and bool(lx.AFFIRMATIONS.intersection(turns[n].words[:AFFIRMATION_WINDOW])) and not (
        turns[n].labels & {lx.REFUSE, lx.CALLBACK, lx.BUSY} or turns[n].negated_buying)


def _callback_outcome(turns: list[_Turn], spoken: list[int]) -> tuple[str, str, int]:
    """A callback with a stated need (budget, quantity, approval) is a QUALIFIED lead."""
    needs = {word for n in spoken if not turns[n].negated_buying for word in turns[n].words if word in _NEEDS}
    return QUALIFIED_FOLLOW_UP if len(needs) >= 2 else FOLLOW_UP


def _when(turn: _Turn) -> str:
    return next((lx.WHEN[word] for word in turn.words if word in lx.WHEN), "")


# -- the answer -------------------------------------------------------------------------------

def _score(base: int, verdict: _Verdict, customer: list[_Turn], call_at: datetime | None, now: datetime) -> int:
    """The outcome's base, plus what an open lead showed: questions and details asked for. An
    open lead whose call is over a month old has cooled."""
    score = base
    if verdict.outcome in (INTERESTED, FOLLOW_UP) or verdict.outcome[1] == "QUALIFIED":
        interest = sum(1 for turn in customer for m in turn.matches if m.label == lx.INTEREST)
        score += min(interest, 5) * 2
        if call_at is not None and (now - call_at).days > 30:
            score -= 10
    return max(0, min(100, score))


def _summary(verdict: _Verdict, turns: list[_Turn]) -> str:
    """One English sentence: who, what happened, what next. No words of the call are quoted
    but a business name, which is masked like the LLM's input."""
    business = _business(turns)
    rule = RULES["guess" if verdict.rule == "word_model" else verdict.rule]
    what, next_step = rule.summary, rule.next_step
    if verdict.rule == "word_model":
        what, next_step = _WORD_MODEL_SAYS.get(verdict.outcome[0], (what, next_step))
    what = what.format(offer=f" {business}'s" if business else " the")
    next_step = f"{next_step} {verdict.when}".rstrip()
    sentence = f"{what}; next: {next_step}."
    return sentence if len(sentence) <= SUMMARY_CHARS else sentence[:SUMMARY_CHARS - 3] + "..."


def _business(turns: list[_Turn]) -> str | None:
    """The agent's business, from its first turn: the capitalized words after "from" (English)
    or before "se" / "la irundhu" (Hindi, Tamil), within one sentence. Words with digits are
    never taken, and the result is masked like the LLM's input."""
    agent = next((turn.text for turn in turns if not turn.by_customer), "")
    raw = agent.split()
    bare = [word.strip(_PUNCTUATION) for word in raw]
    lowered = [word.lower() for word in bare]
    names: list[str] = []
    if "from" in lowered:
        at = lowered.index("from") + 1
        while at < len(raw) and len(names) < _BUSINESS_WORDS and _name_word(bare[at]):
            names.append(raw[at] if raw[at] in _ABBREVIATIONS else bare[at])
            if raw[at][-1] in _PUNCTUATION and raw[at] not in _ABBREVIATIONS:
                break
            at += 1
    else:
        marker = next((n for n, word in enumerate(lowered) if word in ("se", "la") and n > 0), None)
        at = marker - 1 if marker is not None else -1
        while at >= 0 and len(names) < _BUSINESS_WORDS and _name_word(bare[at]) and raw[at][-1] not in _PUNCTUATION:
            names.insert(0, bare[at])
            at -= 1
    name = mask_pii(" ".join(names))
    return name or None


def _name_word(word: str) -> bool:
    return word[:1].isupper() and word.replace("'", "").replace("&", "").replace("-", "").replace(".", "").isalpha()


# -- the word model, where the rules find no outcome words -------------------------------------

SMOOTHING = 1.0
TRAINING_SPLIT = "tuning"


def features(lines: Lines) -> list[str]:
    out = []
    for by_customer, text in lines:
        prefix = "c:" if by_customer else "a:"
        tokens = lx.words(text)
        out += [prefix + token for token in tokens]
        out += [prefix + a + "_" + b for a, b in zip(tokens, tokens[1:])]
    return out


class WordModel:
    def __init__(self, examples: list[tuple[Lines, tuple[str, str]]]):
        """`examples`: transcripts' lines, each with its label (tag, lead status)."""
        counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
        priors = Counter(label for _, label in examples)
        self.trained_on = len(examples)
        for lines, label in examples:
            counts[label].update(features(lines))
        vocabulary = {feature for label_counts in counts.values() for feature in label_counts}
        self._prior = {label: math.log(n / len(examples)) for label, n in priors.items()}
        # log P(feature | label) for every feature seen, and for an unseen one per label
        self._unseen = {}
        self._log_p: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
        for label, label_counts in counts.items():
            total = sum(label_counts.values()) + SMOOTHING * len(vocabulary)
            self._unseen[label] = math.log(SMOOTHING / total)
            for feature, n in label_counts.items():
                self._log_p[feature][label] = math.log((n + SMOOTHING) / total)

    def predict(self, lines: Lines) -> tuple[str, str]:
        scores = dict(self._prior)
        for feature in features(lines):
            known = self._log_p.get(feature)
            if known is None:
                continue  # in no label's training words: says nothing
            for label in scores:
                scores[label] += known.get(label, self._unseen[label])
        return max(scores, key=scores.get)


_lock = threading.Lock()


def trained_model() -> WordModel | None:
    """The model trained on the tuning calls, once per process; None (the rules then guess) when
    the labelled set cannot be read. Trained on each transcript as the rules read it (its lines,
    with the customer's instructions set aside), so training and prediction see the same text."""
    with _lock:  # the slots of a run ask at once: one trains
        return _train()


@functools.cache
def _train() -> WordModel | None:
    try:
        calls = [call for call in load_labelled_calls() if call.split == TRAINING_SPLIT]
    except DatasetError as exc:
        log.warning("the offline analyzer's word model is off: %s", exc)
        return None
    return WordModel([(model_lines(call.transcript), (call.expected_tag, call.expected_status))
                      for call in calls]) if calls else None
