"""Execution data sets shaped like the real Bolna API full record (see /work/shared/bolna-api.md).

`generate` builds large deterministic sets for tests and benchmarks; `demo_dataset` is a small
hand-written sample full of the awkward cases the sync has to survive.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

# Each agent works one domain; agents beyond the third reuse the table with a number suffix.
# Dialogue templates are whole strings so a call costs one str.format, which keeps 100k fast.
_DOMAINS = [
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
    dt = dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt
    return dt.isoformat(timespec="milliseconds") + "Z"


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
    domain = _DOMAINS[index % len(_DOMAINS)]
    suffix = f" #{index // len(_DOMAINS) + 1}" if index >= len(_DOMAINS) else ""
    created = iso(now - timedelta(days=90 + index))
    return {"id": _uuid(rng), "agent_name": domain["agent_name"] + suffix, "agent_type": "other",
            "agent_status": "processed", "created_at": created, "updated_at": created}


def _record(rng: random.Random, agent: dict, agent_number: str, created: datetime, customer: str, *,
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
        domain = _DOMAINS[index % len(_DOMAINS)]
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
                executions.append(_record(rng, agent, domain["agent_number"], created, customer, status=status,
                                          now=now))
                continue
            outcome = "booked" if roll < 0.4 else "callback" if roll < 0.6 else "declined"
            transcript, extracted, summary = _conversation(rng, domain, outcome, transcript_chars)
            executions.append(_record(rng, agent, domain["agent_number"], created, customer,
                                      call_type="inbound" if rng.random() < 0.2 else "outbound",
                                      transcript=transcript, extracted_data=extracted, summary=summary, now=now))
    return agent_list, executions


def demo_dataset(now: datetime | None = None) -> tuple[list[dict], list[dict]]:
    """A fixed sample for `main.py demo`: 3 agents, the awkward cases by hand, the rest generated."""
    now = now or datetime.now(timezone.utc)
    agents, executions = generate(agents=3, per_agent=15, seed=2026, now=now, span_days=3.0,
                                  transcript_chars=500)
    estate, clinic, shop = range(3)  # indexes into agents and _DOMAINS
    rng = random.Random(7)

    def call(agent: int, hours_ago: float, customer: str, transcript: str | None, extracted_data=None,
             summary: str | None = None, **kwargs) -> dict:
        created = now - timedelta(hours=hours_ago)
        record = _record(rng, agents[agent], _DOMAINS[agent]["agent_number"], created, customer, now=now,
                         transcript=transcript, extracted_data=extracted_data, summary=summary, **kwargs)
        executions.append(record)
        return record

    # Ravi Sharma calls three times, his number written three ways.
    call(estate, 60, "+91 98765 43210",
         "assistant: Hello, this is Ananya from Skyline Realty. Am I speaking with Ravi Sharma?\n"
         "user: Yes, Ravi here. I saw your ad for the 3 BHK flats in Whitefield. What is the price?\n"
         "assistant: The 3 BHK starts at 1.2 crore all inclusive, ready to move in by March.\n"
         "user: Hmm, that is slightly above my budget. I was thinking around 1 crore.\n"
         "assistant: We also have a 2.5 BHK at 98 lakhs in the same tower. Would you like to see it?\n"
         "user: Let me discuss with my family and get back to you.\n"
         "assistant: Sure, Ravi. I will send the floor plans on WhatsApp. Thank you!\n",
         {"name": "Ravi Sharma", "email": None, "interest": "3 BHK in Whitefield", "budget": "1 crore",
          "appointment_booked": False, "user_interested": True, "callback_user": True, "address": None},
         "Ravi Sharma asked about 3 BHK prices in Whitefield; budget around 1 crore; will call back.")
    call(estate, 30, "9876543210",
         "assistant: Hello Ravi, this is Ananya from Skyline Realty again. Did you discuss the flat with your family?\n"
         "user: Yes, we want to see the 2.5 BHK. Can we come on Saturday?\n"
         "assistant: Saturday at 11 AM is available. Shall I book the site visit?\n"
         "user: Yes, please book it. My email is ravi.sharma@gmail.com.\n"
         "assistant: Done. Your site visit is booked for Saturday at 11 AM. See you there!\n",
         {"name": "Ravi Sharma", "email": "ravi.sharma@gmail.com", "interest": "2.5 BHK in Whitefield",
          "appointment_booked": True, "user_interested": True, "callback_user": False,
          "address": "HSR Layout, Bengaluru"},
         "Ravi Sharma booked a site visit for the 2.5 BHK in Whitefield on Saturday 11 AM.")
    call(estate, 5, "09876543210",
         "user: Hi, this is Ravi. I booked a site visit for Saturday. Can you share the location?\n"
         "assistant: Hello Ravi! Sure, I am sending the location pin on WhatsApp right now.\n"
         "user: Thanks. Is there parking for visitors?\n"
         "assistant: Yes, visitor parking is near gate 2. See you on Saturday.\n",
         '{"name": "Ravi Sharma", "appointment_booked": true, "user_interested": true}',  # a JSON string
         "Ravi Sharma called back for the site location.", call_type="inbound")

    # US numbers, mixed formats; the clinic books an appointment.
    call(clinic, 50, "+1 (415) 555-2671",
         "assistant: Good morning, Dr. Mehta's Clinic, this is Meera. How can I help you?\n"
         "user: Hi, I am visiting Mumbai from San Francisco next week and need a dermatology appointment for my mother.\n"
         "assistant: Sure. Dr. Mehta is available on Tuesday at 10:30 AM. Shall I book it?\n"
         "user: Yes please. Her name is Sunita Kapoor.\n"
         "assistant: Booked for Tuesday at 10:30 AM. The consultation fee is 800 rupees.\n"
         "user: Great, thank you.\n",
         {"name": "Sunita Kapoor", "email": "neha.kapoor@outlook.com", "interest": "dermatology consultation",
          "appointment_booked": True, "appointment_time": "Tuesday 10:30 AM", "user_interested": True,
          "callback_user": False, "address": None},
         "Appointment booked for Sunita Kapoor, dermatology, Tuesday 10:30 AM.")
    call(clinic, 20, "+14155552671",
         "assistant: Hello, this is Meera from Dr. Mehta's Clinic, calling to confirm Sunita Kapoor's appointment on Tuesday.\n"
         "user: Yes, confirmed. We will be there.\n"
         "assistant: Thank you. Please bring any earlier prescriptions.\n",
         {"name": "Sunita Kapoor", "appointment_booked": True, "user_interested": True, "callback_user": False},
         "Appointment confirmed for Tuesday.")
    call(shop, 44, "+1 212-555-0187",
         "assistant: Hi, this is Rohan from ShopKart, calling about your order SK48213377 to New Jersey.\n"
         "user: Oh, I ordered that as a gift for my parents in Pune, not for me.\n"
         "assistant: Understood. The delivery address is Kothrud, Pune, and it will arrive on Thursday.\n"
         "user: Perfect.\n",
         {"name": "Arjun Desai", "interest": "order status", "appointment_booked": False,
          "user_interested": True, "callback_user": False, "address": "Kothrud, Pune"},
         "Order SK48213377 confirmed for delivery in Pune on Thursday.")

    # Awkward shapes the sync must not choke on.
    call(clinic, 12, "+91 99887 76655", "user: hi\n", None, None)  # hung up at once
    call(estate, 40, "+91 91234 56789",
         "assistant: Hello, Skyline Realty. You had enquired about plots in Devanahalli.\n"
         "user: Yes, my budget is around 50 lakhs. Send me details.\n",
         "{name: Ravi, budget",  # malformed: not JSON at all
         "Enquiry about plots in Devanahalli.")
    call(shop, 36, "+91 70123 45678",
         "assistant: Hi, this is Rohan from ShopKart about your order SK10293847.\n"
         "user: I am not interested in any offers, please don't call.\n",
         None, "Customer not interested.")  # extracted_data null
    missing = call(shop, 26, "8123456789",
                   "assistant: Hi, this is Rohan from ShopKart. Your order will be delivered today.\n"
                   "user: Okay, thanks.\n", summary="Delivery today confirmed.")
    del missing["extracted_data"]  # some records carry no extracted_data key at all
    call(clinic, 16, "12345",  # not a phone number
         "assistant: Good evening, Dr. Mehta's Clinic.\nuser: Wrong number, sorry.\n",
         {"user_interested": False}, "Wrong number.")
    call(estate, 0.05, "+91 98450 12345", None, status="in-progress")
    call(clinic, 3, "+91 90000 11111", None, status="no-answer")
    call(shop, 10, "+91 97400 55667",  # "completed", yet nobody spoke
         "assistant: Hi, this is Rohan from ShopKart calling about your order. Please call us back on this number.\n",
         {"user_interested": False}, "Reached voicemail.", voicemail=True)
    call(estate, 8, "+91 98440 22334",
         "assistant: Hello, this is Ananya from Skyline Realty. Are you looking for a flat in Sarjapur Road?\n"
         "user: Yes, a 3 BHK, around 50 lakhs if possible, it is urgent, we want to move in before Diwali.\n"
         "assistant: We have ready-to-move units from 55 lakhs. Shall I send the details?\n"
         "user: Yes, send them.\n",
         {"lead_info": {  # the nested shape rolling out from Sept 2026
             "budget": {"subjective": "around 50 lakhs", "objective": 5000000, "confidence": 0.8,
                        "confidence_label": "high",
                        "reasoning_subjective": "The user said 'around 50 lakhs' for a 3 BHK.",
                        "reasoning_objective": "50 lakhs = 5,000,000 rupees.", "validation": "passed"},
             "urgency": {"subjective": "wants to move in before Diwali", "objective": "high", "confidence": 0.6,
                         "confidence_label": "medium", "reasoning_subjective": "Mentions a deadline.",
                         "reasoning_objective": None, "validation": None},
         }},
         "Lead wants a 3 BHK on Sarjapur Road around 50 lakhs before Diwali.")
    call(shop, 2, "+91 88776 65544",
         "user: Hello, my order SK55512345 shows delivered but I did not get it.\n"
         "assistant: I am sorry, Pooja. I have raised a complaint and the courier will call you within 24 hours.\n"
         "user: Okay, please make it quick.\n",
         {"name": "Pooja Nair", "interest": "missing delivery", "appointment_booked": False,
          "user_interested": True, "callback_user": True, "address": "Kakkanad, Kochi"},
         "Pooja Nair reported a missing delivery; complaint raised.", call_type="inbound")

    executions.sort(key=lambda e: e["created_at"])
    return agents, executions

