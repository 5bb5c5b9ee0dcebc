"""The offline analyzer's vocabulary: phrases that mean a refusal, a callback, a booking, ... in
English, Indian English, Hindi and Tamil written in Latin script (as Bolna's transcripts write
them), and the matcher that finds them in a turn.

Phrases are matched on words, not with regular expressions: a turn is split into lowercase
words once (one linear pattern), and each phrase is a short sequence of words, where `_` stands
for any one word and a word ending in `*` for any word starting so. Work is linear in the
turn's length times the few phrases that start with each word."""
from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")
_PREFIX_KEY = 3
ANY_WORD, PREFIX = "_", "*"

# -- what the customer says -------------------------------------------------------------------

REFUSE = "refuse"  # a refusal, in any language
PRICE_OBJECTION = "price_objection"  # too dear: a refusal unless something else follows
SOFT_REFUSAL = "soft_refusal"  # "nah, I'm good", "leave it": a refusal unless something else follows
CALLBACK = "callback"  # asks to be called (again, later)
BUSY = "busy"  # cannot talk now: a callback when nothing else is said
CONSULT = "consult"  # must ask someone first / will get back
ACCEPT = "accept"  # says yes to a booking, an order, a plan
PAYMENT = "payment"  # says they paid, ordered, or confirm the appointment
INTEREST = "interest"  # asks the price, details, a visit, a trial; says it fits
WRONG_NUMBER = "wrong_number"  # says the agent has the wrong number
NOT_THAT_PERSON = "not_that_person"  # "no Priya here": a wrong number when the agent asked for someone
MACHINE = "machine"  # a voicemail greeting, a carrier or IVR message
ABUSE = "abuse"  # insults
# -- what the agent says ----------------------------------------------------------------------
AGENT_DONE = "agent_done"  # states a booking, order or payment as done
AGENT_PROPOSAL = "agent_proposal"  # offers to book, confirm or fix something
AGENT_ASKS_FOR = "agent_asks_for"  # asks for a named person ("am I speaking with ...")

CUSTOMER_PHRASES: dict[str, tuple[str, ...]] = {
    REFUSE: (
        # English, Indian English
        "not interested", "no interest", "no thanks", "no thank you", "not looking for", "we ll pass",
        "well pass", "i ll pass", "ill pass", "skip it", "remove my number", "delete my number",
        "take me off", "take my number off", "lose my number", "off your list", "dont call", "do not call",
        "never call", "stop calling", "not to call", "don t call", "dont want", "do not want",
        "don t want", "dont need", "do not need", "no need", "not needed", "not required", "not requiring",
        "not buying", "not going to buy", "not going to purchase", "not going to take", "wont buy",
        "already have", "already having", "already purchased", "already bought", "already taken",
        "gone with another", "went with another", "signed up with another", "bought elsewhere",
        "bought from another", "in a different project", "from someone else", "no thank", "we ll skip",
        "get lost",
        # Hindi in Latin script
        "nahi chahiye", "nahin chahiye", "nahi chahie", "nahi lena", "nahi lenge", "nahi lunga",
        "nahi lungi", "nahi karna", "nahi karni", "nahi kharidna", "zaroorat nahi", "jarurat nahi",
        "interest nahi", "interested nahi", "mat karna", "mat karo", "mat kijiye", "phone mat", "call mat",
        "rehne do", "rehne dijiye", "rahne do", "pehle se", "le rakhi", "le rakha", "le liya hai",
        "kuch nahi chahiye", "nahi nahi", "bilkul nahi",
        # Tamil in Latin script
        "venam", "vendam", "vendaam", "vendaamu", "venaam", "interest illa", "interest illai",
        "vaanga maaten", "vaanga matten", "edukka maaten", "pannadheenga", "pannatheenga",
        "pannadeenga", "panna vendaam", "already eduthuten", "eduthachu", "vaangiyachu", "vaangitten",
        "onnum vendaam", "onnum venam", "venaam*", "vendaam*", "renewed with", "badalna nahi",
        "khush hain", "sari varaadhu", "sari varadhu", "not coming", "dont ring", "do not ring",
        "never ring", "say no", "not in the budget", "not in our budget", "not in my budget",
        "decided against", "decided not to", "vaiya phone", "phone vai*", "phone vei", "phone ah vai*",
    ),
    SOFT_REFUSAL: (
        "nah", "nope", "im good", "i am good", "were good", "we are good", "im fine", "were fine",
        "we are fine", "im sorted", "were sorted", "all sorted", "not for me", "leave it", "chhodo",
        "chodo", "chhod do", "jane do", "jaane do", "vidunga", "vittudunga", "pass",
    ),
    PRICE_OBJECTION: (
        "too costly", "too expensive", "very costly", "very expensive", "so expensive", "too much",
        "too high", "beyond our budget", "beyond my budget", "above my budget", "above our budget",
        "out of my budget", "out of budget", "over our budget", "over my budget", "cant afford",
        "can t afford", "cannot afford", "more than we want to spend", "more than i want to spend",
        "way beyond", "bahut mehenga", "bahut mehnga", "bahut zyada", "zyada hai", "mehenga hai",
        "budget nahi", "itna budget", "romba costly", "romba jaasthi", "romba jasthi", "romba adhigam",
        "romba expensive", "konjam adhigam", "itne mein", "too pricey", "pricey",
    ),
    CALLBACK: (
        "call me", "call back", "callback", "call later", "call again", "call after", "call on",
        "call tomorrow", "call next", "call in", "call me back", "ring me", "give me a ring", "give me a call",
        "give me a buzz", "buzz me", "try me again", "try me later", "try again later", "reach out again",
        "reach me", "contact me later", "get in touch later", "pick this up", "talk later", "talk tomorrow",
        "speak later", "follow up", "call then", "call me then", "phone me",
        "phone karna", "phone karo", "phone kariye", "phone kijiye", "call karna", "call karo",
        "call kariye", "call kijiye", "baad mein baat", "baat karte hain", "baat karenge", "baad mein phone",
        "baad mein call", "call pannunga", "call panunga", "call pannu", "phone pannunga", "pesalama",
        "pesalam", "apram pesunga", "apram call", "kal karna", "baje karna", "baje phone", "baje call",
    ),
    BUSY: (
        "i m driving", "im driving", "i am driving", "in a meeting", "into a meeting", "in the middle of",
        "not a good time", "bad time", "busy now", "busy right now", "i m busy", "im busy", "i am busy",
        "cannot talk", "cant talk", "can t talk", "cannot discuss", "not able to hear", "out of station",
        "boarding", "in hospital", "at work", "busy hoon", "gaadi chala", "meeting mein", "office mein hoon",
        "baat nahi kar", "busy ah", "busy a irukken", "busy irukken", "drive pannitu", "office la irukken",
        "konjam busy", "ippo busy", "abhi busy",
    ),
    CONSULT: (
        "discuss with", "check with", "talk to my", "ask my", "run this by", "get back to you",
        "i ll get back", "ill get back", "let me think", "think about it", "wife se baat", "ghar pe baat",
        "se baat karke", "se poochh", "pooch ke", "kitta kettu", "kitta pesi", "discuss pannitu",
        "yosichu sollren",
    ),
    ACCEPT: (
        "book it", "book me", "please book", "please confirm", "confirm the", "lock that in", "lock it in",
        "lock it", "that is fine", "thats fine", "fine only", "block the", "finalise", "finalize",
        "shuru kar", "start kar", "rakh dijiye", "rakh do", "le lete", "le lenge", "le lunga",
        "note pannikkonga", "vandhudren", "varen", "coming", "ok dhaan", "is perfect", "sounds perfect",
        "count me in", "sign us up", "put us down", "put me down", "book that", "book the", "go ahead", "confirm it",
        "its confirmed", "it is confirmed", "sign me up", "put my name",
        "i ll take it", "ill take it", "i will take it", "i ll take", "i will take", "works for me",
        "suits me", "that works", "fix it", "yes please", "reserve one", "reserve it", "do the upgrade",
        "accept the offer", "i ve accepted", "ive accepted", "we ll take", "lets do it", "let s do it",
        "kar do", "kar dijiye", "kar dena", "kar dijie", "pakka kar", "chalega", "theek rahega",
        "thik rahega", "naam likh", "book karo", "book kar", "confirm karo", "confirm kar",
        "book pannidunga", "book pannunga", "pannidunga", "fix pannunga", "fix pannidunga",
        "confirm pannunga", "seat podunga",
    ),
    PAYMENT: (
        "i paid", "i ve paid", "ive paid", "i have paid", "we have paid", "we ve paid", "already paid",
        "paid just now", "paid the", "paid it", "and paid", "transferred the", "have transferred",
        "sent the deposit", "sent the payment", "made the payment", "payment done", "pay by card",
        "bhar diya", "bhar di", "pay kar diya", "payment kar diya", "upi se kiya", "transfer kar diya",
        "gpay la anuppuren", "gpay panniten", "pay panniten", "kattiten", "ho gaya payment",
        "payment ho gaya", "payment kar di", "i ordered", "ive ordered", "i have ordered", "we ordered",
        "we have ordered", "yes confirmed", "confirmed from our side", "order kar diya", "gpay kar",
        "paytm kar", "upi kar", "anuppitten", "anupitten", "anuppiten", "advance bhej", "sending the advance",
        "sent the advance", "paise bhej",
    ),
    INTEREST: (
        "price", "prices", "pricing", "rate", "rates", "cost", "how much", "what is the price", "what s the price", "the price", "price range", "what price",
        "what rate", "what is the rate", "the rate", "the cost", "what does it cost", "cost for",
        "what is the fees", "the fees", "fees kitni", "fee kitni", "emi", "installment", "quotation",
        "a quote", "send me", "send the", "send details", "send brochure", "email me", "mail me",
        "whatsapp me", "on whatsapp", "send them", "send it", "send those", "urgent", "brochure", "floor plan", "floor plans", "details", "trial",
        "test ride", "test drive", "demo", "site visit", "survey", "come and see", "visit",
        "interested", "sounds good", "within my budget", "that fits", "reasonable", "promising",
        "kitna", "kitne", "kitni", "kya rate", "bhej do", "bhejo", "bhejiye", "bhej dijiye",
        "interest hai", "pasand", "dikhao", "evlo", "evvalavu", "enna price", "enna rate", "vilai",
        "anuppunga", "anupunga", "interest irukku", "nalla irukku", "mail pannunga", "details venum",
        "paakalama", "paakanum", "kidaikuma", "irukka", "what would", "how long", "how many", "do you have",
        "is there", "when can", "can someone", "come look", "roughly", "approximately",
        "form link", "procedure", "looking at", "looking for", "whats included", "available",
        "come see", "love to", "kab tak", "dekhne", "aate hain", "aayenge", "milega",
    ),
    WRONG_NUMBER: (
        "wrong number", "wrong person", "wrong no", "dialled wrong", "dialed wrong", "dialled the wrong",
        "no one by that name", "nobody by that name", "galat number", "galat no", "number galat",
        "thappana number", "thappu number", "wrong number la",
    ),
    NOT_THAT_PERSON: (
        "not his number", "not her number", "not their number", "not _ number", "no _ here",
        "no _ is here", "no _ _ here", "is not there", "moved out", "was my account", "got this number",
        "this number is mine", "had this number", "not the person", "number check karo", "yahan koi",
        "koi _ nahi hai", "kaun _", "main _ nahi hoon", "mera number hai", "yaarum illa", "yaarum illai",
        "nu yaarum", "no _ at this number", "ka number nahi", "kisi aur", "inga illa",
        "vera aal*", "old number", "someone else",
    ),
    MACHINE: (
        "leave a message", "leave your message", "leave your name", "after the beep", "after the tone",
        "record your message", "please record", "voice messaging", "voicemail", "voice mail",
        "can t pick up", "cant pick up", "can t take your call", "cant take your call", "unable to take",
        "not available to take", "is not available", "switched off", "not reachable", "out of coverage",
        "coverage area", "number you are calling", "number you have dialled", "number you have dialed",
        "number you have called", "subscriber you are", "the subscriber", "is currently busy",
        "please try again later", "try after some time", "call after some time", "press hash",
        "jis number par", "jis number pe", "dwara dial", "vyast hai", "uplabdh nahi", "kripya",
        "prayas karein", "thodarbu", "vaadikkaiyalar", "ellaikku veliye", "message vidunga",
        "beep ku", "phone edukka mudiyaadhu", "youve reached", "you have reached", "not home",
        "lines vyast", "sabhi lines", "dial karein", "upayogathil illai", "not in use",
        "after the signal",
    ),
    ABUSE: (
        "idiot", "idiots", "stupid", "moron", "morons", "fool", "fools", "useless", "nonsense", "bloody",
        "crooks", "scammer", "scammers", "fraud", "cheat", "clowns", "pathetic", "shut up", "shove",
        "harass*", "pester*", "go to hell", "damn", "rubbish", "pagal", "bewakoof", "bewkoof",
        "bakwas", "bakwaas", "chup kar", "dimaag kharab", "sharam nahi", "tameez", "gadha", "kamine",
        "loosu", "dei", "torture", "yov", "arivu irukka", "arivu illa", "vera vela illaya",
        "vera velai illaya", "piss off", "naaye", "porambokku", "mental", "buzz off", "muppet*", "nerve",
        "saale", "saala", "chor", "abe", "dekh lena", "kameena", "get out",
    ),
}

AGENT_PHRASES: dict[str, tuple[str, ...]] = {
    AGENT_DONE: (
        "booked", "confirmed", "scheduled", "reserved", "placed", "received", "blocked", "activated",
        "active", "renewed", "enrolled", "registered", "all set", "raised the", "is accepted",
        "as accepted", "confirm kar diya", "confirm ho gaya", "confirm ho gayi", "confirm hai",
        "book kar diya", "booking ho gayi", "booking ho gaya", "ho gayi hai", "receive ho gaya",
        "renew ho gayi", "aa gaya hai", "book ho gaya", "book ho gayi", "mil gaya hai", "confirm aayiduchu", "book aayiduchu", "confirm pannitten",
        "confirm panniten", "fix panniten", "fix pannitten", "book panniten", "book pannitten",
        "vandhuduchu", "vanthuduchu", "aayiduchu", "down for", "on the schedule", "booked in", "pakki",
        "pakka hai", "mani fix", "baje fix", "fix aachu", "mil gaye", "mil gaya", "aa gaya", "aa gaye",
        "note panniten",
    ),
    AGENT_PROPOSAL: (
        "shall i book", "should i book", "can i book", "book you in", "shall i confirm", "shall i fix",
        "shall i reserve", "shall i schedule", "want me to book", "like me to book", "book kar doon",
        "book kar du", "confirm kar doon", "book kar dein", "book kar deti", "book kar deta", "book pannatuma", "book pannalama",
        "fix pannalama", "fix pannatuma", "confirm pannatuma", "confirm pannalama", "want it",
        "shuru karein", "start karein", "book karein", "ok va", "okva", "shall we", "should we go ahead",
        "want me to", "shall i go ahead",
    ),
    AGENT_ASKS_FOR: (
        "speaking with", "speaking to", "speak with", "speak to", "is this", "am i talking",
        "se baat", "ji hain", "ji se", "ah pesuradhu", "ah pesuringa", "thaane", "sir ah", "madam ah",
    ),
}

# An interest said outright: it outweighs an earlier refusal of one option ("road facing venaam").
INTEREST_STATED = frozenset({("interested",), ("interest", "hai"), ("interest", "irukku"), ("sounds", "good"),
                             ("nalla", "irukku"), ("pasand",)})
# A reply that opens with one of these says no to what the agent just asked ("no problem" does not).
NOT_A_NO = frozenset({"problem", "worries", "worry", "issue", "issues", "doubt"})
NEGATIVE_OPENERS = frozenset({"no", "nope", "nah", "nahi", "nahin", "illa", "illai", "venam", "vendaam"})
# Words that negate a buying word near them: English ones come before it ("never wanted to
# buy"); Hindi and Tamil ones may also follow it ("zaroorat nahi", "interest illa").
NEGATIONS_BEFORE = frozenset({"not", "never", "dont", "didnt", "doesnt", "wont", "cannot", "nahi",
                              "nahin", "mat"})
NEGATIONS_AFTER = frozenset({"nahi", "nahin", "illa", "illai", "illaa", "maaten", "matten"})
BUYING_WORDS = frozenset({"buy", "buying", "purchase", "purchasing", "want", "wanted", "need",
                          "needed", "interested", "interest", "require", "requiring", "required",
                          "looking", "chahiye", "chahie", "lena", "lenge", "lunga", "lungi", "join",
                          "kharidna", "zaroorat", "jarurat", "venum", "vaanga", "vaangurathu"})
# A short answer that says yes, when it answers an agent's offer to book.
AFFIRMATIONS = frozenset({"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "haan", "ha", "han", "ji",
                          "aama", "aamam", "seri", "sari", "theek", "thik", "fine", "perfect", "great",
                          "alright", "done", "chalega", "pannunga", "please", "correct", "right",
                          "absolutely", "definitely", "kandippa", "bilkul", "badhiya"})
# An agent sentence with one of these offers or plans; it states nothing done.
NOT_DONE = frozenset({"shall", "will", "would", "can", "could", "should", "if", "ll", "doon", "dein",
                      "pannatuma", "pannalama", "kya", "had", "want", "like"})
QUESTION_OPENERS = frozenset({"is", "are", "was", "has", "have", "did", "do", "does", "shall", "should",
                              "can", "could", "would", "will", "may", "kya", "confirm"})
# Capitalized words of an agent's question that are not the name of the person asked for.
NOT_NAMES = frozenset({"hello", "hi", "hey", "i", "am", "is", "this", "the", "mr", "mrs", "ms", "dr", "sir",
                       "madam", "namaste", "vanakkam", "good", "morning", "afternoon", "evening", "calling",
                       "may", "can", "could", "speak", "speaking", "with", "from", "kya", "main", "naan",
                       "ji", "are", "you", "your", "we", "our", "my"})
FILLERS = frozenset({"hello", "hi", "hey", "hmm", "um", "uh", "haan", "ji", "yes", "ok", "okay",
                     "allo", "helo"})

# Clues that a customer's clause speaks to the machine reading the call rather than to the
# agent: such a clause is set aside before anything is read from it. One of the targets with
# one of the verbs (or an outcome word), two targets, a forged "assistant:" turn, or a value
# spelled as the analysis spells it ("Not_Interested", "leadStatus", "WON") make an instruction.
INSTRUCTION_TARGETS = frozenset({
    "instruction", "instructions", "prompt", "programming", "analyzer", "analyser", "classifier",
    "category", "classification", "transcribing", "transcript", "transcriber", "computer", "chatbot",
    "result", "outcome", "google", "alexa", "siri", "chatgpt", "gpt", "llm",
    "leadstatus", "leadscore", "tag", "tags", "developer", "jailbreak", "system", "ai", "bot", "model",
    "summary", "report", "notes", "assistant", "lead", "status", "crm",
})
INSTRUCTION_VERBS = frozenset({"mark", "tag", "classify", "record", "label", "set", "output", "write",
                               "log", "put", "say", "revert", "likho", "likhna", "likh", "podu",
                               "podunga", "ignore", "disregard", "forget", "override", "bhool",
                               "summarize", "summarise", "must", "change"})
OUTCOME_WORDS = frozenset({"purchased", "interested", "won", "lost", "qualified", "contacted",
                           "follow", "answer", "kharid"})
# Spellings of the analysis' own values that no customer says in passing.
VALUE_SPELLINGS = frozenset({"Not_Interested", "No_Answer", "follow_up", "QUALIFIED", "CONTACTED",
                             "WON", "LOST", "leadStatus", "leadScore", "lead_status", "lead_score"})
FORGED_SPEAKERS = ("assistant:", "user:", "system:", "agent:", "customer:", "ai:")

# Times a callback is asked for, in the words the calls use, with their English.
WHEN = {
    "tomorrow": "tomorrow", "kal": "tomorrow", "naalaiku": "tomorrow", "naalaikku": "tomorrow",
    "evening": "in the evening", "shaam": "in the evening", "saayangaalam": "in the evening",
    "saayangalam": "in the evening", "morning": "in the morning", "subah": "in the morning",
    "kaalai": "in the morning", "kalaila": "in the morning", "kaalaila": "in the morning",
    "afternoon": "in the afternoon", "dopahar": "in the afternoon", "lunch": "after lunch",
    "monday": "on Monday", "tuesday": "on Tuesday", "wednesday": "on Wednesday",
    "thursday": "on Thursday", "friday": "on Friday", "saturday": "on Saturday", "sunday": "on Sunday",
    "week": "next week", "hafte": "next week", "month": "next month", "mahine": "next month",
    "later": "later", "baad": "later", "apram": "later",
}


def words(text: str) -> list[str]:
    """Lowercase words; an apostrophe joins ("don't" is "dont", "I'm" is "im")."""
    return _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))


@dataclass(frozen=True)
class Match:
    label: str
    start: int  # word index
    end: int


class PhraseBook:
    """Every phrase of some labels, indexed by its first word, for one pass over a turn's words."""

    def __init__(self, phrases: dict[str, tuple[str, ...]], priority: tuple[str, ...] = ()):
        self._by_first: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        # phrases whose first word is a prefix ("venaam*"), by its first _PREFIX_KEY letters
        self._by_prefix: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self._open_start: list[tuple[str, tuple[str, ...]]] = []  # phrases starting with _
        self._rank = {label: n for n, label in enumerate(priority)}
        for label, texts in phrases.items():
            for text in texts:
                tokens = tuple(text.split())
                first = tokens[0]
                if first == ANY_WORD or (first.endswith(PREFIX) and len(first) <= _PREFIX_KEY):
                    self._open_start.append((label, tokens))
                elif first.endswith(PREFIX):
                    self._by_prefix.setdefault(first[:_PREFIX_KEY], []).append((label, tokens))
                else:
                    self._by_first.setdefault(first, []).append((label, tokens))

    def find(self, tokens: list[str]) -> list[Match]:
        """Non-overlapping matches: where two overlap, the longer wins, then the label ranked
        first (so "dont call" is a refusal, not a callback)."""
        found = []
        for i, token in enumerate(tokens):
            for candidates in (self._by_first.get(token, ()), self._by_prefix.get(token[:_PREFIX_KEY], ()),
                               self._open_start):
                for label, phrase in candidates:
                    if _matches(tokens, i, phrase):
                        found.append(Match(label, i, i + len(phrase)))
        found.sort(key=lambda m: (-(m.end - m.start), self._rank.get(m.label, len(self._rank)), m.start))
        taken = [False] * len(tokens)
        kept = []
        for match in found:
            if not any(taken[match.start:match.end]):
                kept.append(match)
                taken[match.start:match.end] = [True] * (match.end - match.start)
        return sorted(kept, key=lambda m: m.start)


def _matches(tokens: list[str], at: int, phrase: tuple[str, ...]) -> bool:
    if at + len(phrase) > len(tokens):
        return False
    for offset, want in enumerate(phrase):
        token = tokens[at + offset]
        if want == ANY_WORD:
            continue
        if want.endswith(PREFIX):
            if not token.startswith(want[:-1]):
                return False
        elif token != want:
            return False
    return True
