"""Execution data sets shaped like the real Bolna API full record (see /work/shared/bolna-api.md).

`generate` builds large deterministic sets for tests and benchmarks; `fakes/demo_dataset.py` adds
to a small one the awkward cases the sync has to survive, written by hand.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from utils.clock import naive_utc

# Each agent works one domain; agents beyond the third reuse the table with a number suffix.
# Dialogue templates are whole strings so a call costs one str.format, which keeps 100k fast.
DOMAINS = [
    {
        "agent_name": "Ananya - Skyline Realty Sales",
        "agent_number": "+918045671234",
        "interests": ["2 BHK in Whitefield", "3 BHK in Sarjapur Road", "villa plot in Devanahalli",
                      "3 BHK in Hinjewadi", "2 BHK in Thane West"],
        "booked": (
            "assistant: Hello, this is Ananya calling from Skyline Realty. Am I speaking with {name}?\n"
            "user: Yes, {first} here. Tell me.\n"
            "assistant: You had enquired about a {interest} on our website. Is this a good time to talk?\n"
            "user: Yes, yes. What is the price?\n"
            "assistant: It starts at {price} lakhs all inclusive, and possession is by December next year.\n"
            "user: Okay, that is within my budget. Is covered parking included?\n"
            "assistant: Yes, one covered parking is included, and there is a clubhouse with a gym and a pool. "
            "Shall I book a site visit for you this {day}?\n"
            "user: {day} is fine, around 11 in the morning.\n"
            "assistant: Done, your site visit is booked for {day} at 11 AM. Could I have your email for the confirmation?\n"
            "user: It is {email}.\n"
            "assistant: Thank you, {first}. Our executive will share the location on WhatsApp. Have a nice day!\n"
        ),
        "callback": (
            "assistant: Hello, this is Ananya calling from Skyline Realty. Am I speaking with {name}?\n"
            "user: Yes, but I am driving right now.\n"
            "assistant: Sorry to disturb you. You had enquired about a {interest}. When can I call you back?\n"
            "user: Call me in the evening, after 7. And send me the brochure with the price list.\n"
            "assistant: Sure, I will send the brochure on WhatsApp and call you after 7 PM. Thank you!\n"
        ),
        "declined": (
            "assistant: Hello, this is Ananya calling from Skyline Realty. Am I speaking with {name}?\n"
            "user: Yes, who is this?\n"
            "assistant: You had enquired about a {interest} some time back. Are you still looking for a home?\n"
            "user: No, we already bought a flat last month. I am not interested.\n"
            "assistant: Congratulations! Sorry for the trouble, I will update our records. Have a good day.\n"
        ),
    },
    {
        "agent_name": "Meera - Dr. Mehta's Clinic Appointments",
        "agent_number": "+912261234567",
        "interests": ["dermatology consultation", "general physician visit", "dental cleaning",
                      "follow-up for blood test reports", "paediatric check-up"],
        "booked": (
            "assistant: Good morning, Dr. Mehta's Clinic, this is Meera. How can I help you?\n"
            "user: Hi, I want to book an appointment for a {interest}.\n"
            "assistant: Sure. May I have the patient's full name?\n"
            "user: {name}.\n"
            "assistant: Thank you. Dr. Mehta is available on {day} at 10:30 AM or 5 PM. Which one suits you?\n"
            "user: 5 PM on {day} please. What is the consultation fee?\n"
            "assistant: The consultation fee is 800 rupees, payable at the clinic. I have booked you for {day} at 5 PM.\n"
            "user: Okay. Should I bring my old reports?\n"
            "assistant: Yes, please bring any previous prescriptions and reports. Can I have an email for the reminder?\n"
            "user: {email}.\n"
            "assistant: Done. You will get a reminder one hour before. Take care, {first}.\n"
        ),
        "callback": (
            "assistant: Good morning, Dr. Mehta's Clinic, this is Meera. How can I help you?\n"
            "user: What are the clinic timings on Sunday?\n"
            "assistant: On Sundays we are open from 9 AM to 1 PM. Would you like to book a {interest}?\n"
            "user: Let me check with my wife first. Can you call me back tomorrow?\n"
            "assistant: Of course. I will call you tomorrow morning. Thank you for calling.\n"
        ),
        "declined": (
            "assistant: Hello, this is Meera from Dr. Mehta's Clinic. You had asked about a {interest}.\n"
            "user: Oh, I already went to another clinic near my house in {city}.\n"
            "assistant: I hope you are feeling better. Shall I keep your number for future appointments?\n"
            "user: No, it is fine. Not needed.\n"
            "assistant: Alright, {first}. Take care.\n"
        ),
    },
    {
        "agent_name": "Rohan - ShopKart Order Support",
        "agent_number": "+918067891234",
        "interests": ["delivery reschedule", "order status", "cash on delivery confirmation",
                      "return pickup", "address change"],
        "booked": (
            "assistant: Hi, this is Rohan from ShopKart. I am calling about your order number {order}. Am I speaking with {first}?\n"
            "user: Yes. Is my order coming today?\n"
            "assistant: Your order is out for delivery, but the courier could not find the address yesterday. "
            "Can you confirm your address?\n"
            "user: It is {address}. Near the temple.\n"
            "assistant: Thank you. Would you like the delivery today evening or on {day}?\n"
            "user: {day} is better, I will be home the whole day.\n"
            "assistant: Done, the delivery is scheduled for {day}. The amount to pay on delivery is {amount} rupees.\n"
            "user: Okay, fine.\n"
            "assistant: You will get an SMS with the delivery partner's number. Thank you for shopping with ShopKart!\n"
        ),
        "callback": (
            "assistant: Hi, this is Rohan from ShopKart, calling about your order number {order}.\n"
            "user: I am in a meeting. Can you call later?\n"
            "assistant: Sure. Just one thing: is {address} still the right delivery address?\n"
            "user: Yes, yes. Call me after lunch.\n"
            "assistant: I will call you back after 2 PM. Thank you.\n"
        ),
        "declined": (
            "assistant: Hi, this is Rohan from ShopKart, calling about your order number {order}. Would you like to "
            "add an extended warranty for {amount} rupees?\n"
            "user: No, I don't want any warranty. And stop calling me again and again.\n"
            "assistant: I am sorry about that. I have noted that you are not interested. Have a good day.\n"
        ),
    },
]

# Exchanges inserted after the greeting to pad a short dialogue towards transcript_chars.
_FILLER = [
    "user: Sorry, can you repeat that? The network is weak here.\n"
    "assistant: No problem, let me say that again slowly.\n",
    "user: Hello? Am I audible?\nassistant: Yes, I can hear you clearly now.\n",
    "user: One minute, let me note this down.\nassistant: Sure, take your time.\n",
]

_SUMMARIES = {
    "booked": "The customer {name} was interested and booked ({interest}) for {day}.",
    "callback": "The customer {name} asked for a call back later regarding {interest}.",
    "declined": "The customer {name} was not interested ({interest}).",
}

_FIRST_NAMES = ["Ravi", "Priya", "Arjun", "Sneha", "Vikram", "Ananya", "Rahul", "Kavya", "Suresh",
                "Deepa", "Amit", "Pooja", "Karthik", "Lakshmi", "Imran", "Fatima", "John", "Emily"]
_LAST_NAMES = ["Sharma", "Iyer", "Reddy", "Patel", "Nair", "Gupta", "Khan", "Menon", "Rao",
               "Singh", "Das", "Joshi", "Smith", "Fernandes"]
_CITIES = ["Bengaluru", "Pune", "Mumbai", "Hyderabad", "Chennai", "Kochi", "Ahmedabad", "Jaipur"]
_STREETS = ["12, 4th Cross, Indiranagar", "Flat 302, Green Park Apartments, Baner",
            "45 MG Road", "B-17, Sector 5, Salt Lake", "7/2 Anna Salai", "21 Link Road, Andheri West"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_US_AREA_CODES = ["415", "212", "646", "312", "408", "617", "206", "512"]
_PROVIDERS = ["plivo", "twilio", "exotel"]
_UNANSWERED = {"no-answer": "No Answer", "busy": "Busy", "failed": "Call failed"}
_RECORDINGS_URL = "https://bolna-recordings.s3.amazonaws.com"


def iso(dt: datetime) -> str:
    """UTC ISO 8601 with milliseconds and 'Z', as the Bolna API writes timestamps."""
    return naive_utc(dt).isoformat(timespec="milliseconds") + "Z"


def _format_number(country: str, digits: str, style: int) -> str:
    """One of the ways customers' numbers show up; `digits` is the national number."""
    if country == "IN":
        formats = (f"+91 {digits[:5]} {digits[5:]}", f"0{digits}", digits, f"91{digits}", f"+91{digits}")
    else:
        area, exchange, line = digits[:3], digits[3:6], digits[6:]
        formats = (f"+1 ({area}) {exchange}-{line}", f"+1{digits}", f"+1 {area}-{exchange}-{line}")
    return formats[style % len(formats)]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_digits(rng: random.Random) -> tuple[str, str]:
    """(country, national number): mostly Indian mobiles, some US numbers."""
    if rng.random() < 0.8:
        return "IN", f"{rng.choice('6789')}{rng.randrange(10**9):09d}"
    return "US", f"{rng.choice(_US_AREA_CODES)}{rng.randrange(200, 1000)}{rng.randrange(10**4):04d}"


def _agent(rng: random.Random, index: int, now: datetime) -> dict:
    domain = DOMAINS[index % len(DOMAINS)]
    suffix = f" #{index // len(DOMAINS) + 1}" if index >= len(DOMAINS) else ""
    created = iso(now - timedelta(days=90 + index))
    return {"id": _uuid(rng), "agent_name": domain["agent_name"] + suffix, "agent_type": "other",
            "agent_status": "processed", "created_at": created, "updated_at": created}


def build_record(rng: random.Random, agent: dict, agent_number: str, created: datetime, customer: str, *,
            status: str = "completed", call_type: str = "outbound", transcript: str | None = None,
            extracted_data=None, summary: str | None = None, voicemail: bool = False,
            now: datetime | None = None) -> dict:
    """One full execution record; duration, cost and telephony data follow from the transcript."""
    execution_id = _uuid(rng)
    spoke = bool(transcript)
    # Roughly 14 spoken characters per second, plus ringing and greeting time.
    duration = round(len(transcript) / 14 + rng.uniform(3, 12), 1) if spoke else 0.0
    terminal = status not in ("in-progress", "ringing", "initiated", "queued")
    # A call's final record lands 2-3 minutes after hang-up; never in the future, though.
    updated = created + timedelta(seconds=duration + (rng.uniform(120, 180) if terminal else 1))
    if now is not None:
        updated = min(updated, now)
    if status in _UNANSWERED:
        hangup_by, hangup_reason = "provider", _UNANSWERED[status]
    else:
        hangup_by = rng.choice(("user", "assistant"))
        hangup_reason = "Call recipient hungup" if hangup_by == "user" else "Assistant hangup"
    outbound = call_type == "outbound"
    return {
        "id": execution_id,
        "agent_id": agent["id"],
        "batch_id": None,
        "status": status,
        "error_message": "Call failed at the provider" if status == "failed" else None,
        "conversation_duration": duration,
        "total_cost": round(duration / 60 * 9.5 + (0.4 if spoke else 0.0), 2),
        "created_at": iso(created),
        "updated_at": iso(updated),
        "answered_by_voice_mail": voicemail,
        "transcript": transcript,
        "summary": summary,
        "extracted_data": extracted_data,
        "telephony_data": {
            "duration": str(round(duration)),
            "to_number": customer if outbound else agent_number,
            "from_number": agent_number if outbound else customer,
            "recording_url": f"{_RECORDINGS_URL}/{execution_id}.mp3" if spoke and terminal else None,
            "call_type": call_type,
            "provider": rng.choice(_PROVIDERS),
            "hangup_by": hangup_by if terminal else None,
            "hangup_reason": hangup_reason if terminal else None,
        },
        "context_details": {},
    }


def _fit(text: str, target: int) -> str:
    """Pad `text` with filler exchanges after the greeting, or cut it at a line end, to ~target chars."""
    if len(text) >= target:
        cut = text.rfind("\n", 0, target)
        return text[:cut + 1] if cut > 0 else text[:text.index("\n") + 1]
    greeting_end = text.index("\n") + 1
    padding, size = [], len(text)
    while size + len(_FILLER[len(padding) % len(_FILLER)]) <= target:
        padding.append(_FILLER[len(padding) % len(_FILLER)])
        size += len(padding[-1])
    return text[:greeting_end] + "".join(padding) + text[greeting_end:]


def _conversation(rng: random.Random, domain: dict, outcome: str, target_chars: int) -> tuple[str, dict, str]:
    """A (transcript, extracted_data, summary) triple that agree with each other."""
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    city = rng.choice(_CITIES)
    values = {
        "first": first, "name": f"{first} {last}", "city": city, "interest": rng.choice(domain["interests"]),
        "day": rng.choice(_DAYS), "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@gmail.com",
        "price": rng.randrange(45, 180, 5), "order": f"SK{rng.randrange(10**7, 10**8)}",
        "amount": rng.randrange(299, 4999), "address": f"{rng.choice(_STREETS)}, {city}",
    }
    extracted = {
        "name": values["name"],
        "email": values["email"] if outcome == "booked" else None,
        "interest": values["interest"],
        "appointment_booked": outcome == "booked",
        "user_interested": outcome != "declined",
        "callback_user": outcome == "callback",
        "address": values["address"] if outcome != "declined" else None,
    }
    transcript = _fit(domain[outcome].format(**values), target_chars)
    return transcript, extracted, _SUMMARIES[outcome].format(**values)


def generate(agents: int = 3, per_agent: int = 100, *, seed: int = 1, now: datetime | None = None,
             span_days: float = 6.0, transcript_chars: int = 600,
             repeat_ratio: float = 0.2) -> tuple[list[dict], list[dict]]:
    """(agents, executions), deterministic for `seed`, created_at spread over the span_days before now."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    agent_list = [_agent(rng, i, now) for i in range(agents)]
    customers: list[tuple[str, str, int]] = []  # (country, national digits, first format used)
    executions = []
    for index, agent in enumerate(agent_list):
        domain = DOMAINS[index % len(DOMAINS)]
        for _ in range(per_agent):
            if customers and rng.random() < repeat_ratio:
                country, digits, style = rng.choice(customers)
                style += rng.randrange(1, 3)  # a different format from the customer's first call
            else:
                country, digits = _random_digits(rng)
                style = rng.randrange(5)
                customers.append((country, digits, style))
            created = now - timedelta(seconds=rng.random() * span_days * 86400)
            customer = _format_number(country, digits, style)
            roll = rng.random()
            if roll < 0.11:  # unanswered outbound calls
                status = "no-answer" if roll < 0.06 else "busy" if roll < 0.09 else "failed"
                executions.append(build_record(rng, agent, domain["agent_number"], created, customer, status=status,
                                          now=now))
                continue
            outcome = "booked" if roll < 0.4 else "callback" if roll < 0.6 else "declined"
            transcript, extracted, summary = _conversation(rng, domain, outcome, transcript_chars)
            executions.append(build_record(rng, agent, domain["agent_number"], created, customer,
                                      call_type="inbound" if rng.random() < 0.2 else "outbound",
                                      transcript=transcript, extracted_data=extracted, summary=summary, now=now))
    return agent_list, executions
