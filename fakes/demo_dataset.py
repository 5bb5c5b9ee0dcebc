"""The bundled sample of `main.py demo`: generated calls of three agents plus the awkward cases
written by hand, each kind in its own function."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Callable

from fakes.dataset import DOMAINS, build_record, generate

ESTATE, CLINIC, SHOP = range(3)  # indexes into the agents and DOMAINS
Call = Callable[..., dict]  # call(agent, hours_ago, customer, transcript, extracted_data, summary, **fields)


def demo_dataset(now: datetime | None = None) -> tuple[list[dict], list[dict]]:
    """A fixed sample for `main.py demo`: 3 agents, the awkward cases by hand, the rest generated."""
    now = now or datetime.now(timezone.utc)
    agents, executions = generate(agents=3, per_agent=15, seed=2026, now=now, span_days=3.0,
                                  transcript_chars=500)
    rng = random.Random(7)

    def call(agent: int, hours_ago: float, customer: str, transcript: str | None, extracted_data=None,
             summary: str | None = None, **kwargs) -> dict:
        created = now - timedelta(hours=hours_ago)
        record = build_record(rng, agents[agent], DOMAINS[agent]["agent_number"], created, customer, now=now,
                         transcript=transcript, extracted_data=extracted_data, summary=summary, **kwargs)
        executions.append(record)
        return record

    _one_customer_three_spellings(call)
    _numbers_from_abroad(call)
    _awkward_shapes(call)
    executions.sort(key=lambda e: e["created_at"])
    return agents, executions


def _one_customer_three_spellings(call: Call) -> None:
    """Ravi Sharma calls three times, his number written three ways."""
    call(ESTATE, 60, "+91 98765 43210",
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
    call(ESTATE, 30, "9876543210",
         "assistant: Hello Ravi, this is Ananya from Skyline Realty again. Did you discuss the flat with your family?\n"
         "user: Yes, we want to see the 2.5 BHK. Can we come on Saturday?\n"
         "assistant: Saturday at 11 AM is available. Shall I book the site visit?\n"
         "user: Yes, please book it. My email is ravi.sharma@gmail.com.\n"
         "assistant: Done. Your site visit is booked for Saturday at 11 AM. See you there!\n",
         {"name": "Ravi Sharma", "email": "ravi.sharma@gmail.com", "interest": "2.5 BHK in Whitefield",
          "appointment_booked": True, "user_interested": True, "callback_user": False,
          "address": "HSR Layout, Bengaluru"},
         "Ravi Sharma booked a site visit for the 2.5 BHK in Whitefield on Saturday 11 AM.")
    call(ESTATE, 5, "09876543210",
         "user: Hi, this is Ravi. I booked a site visit for Saturday. Can you share the location?\n"
         "assistant: Hello Ravi! Sure, I am sending the location pin on WhatsApp right now.\n"
         "user: Thanks. Is there parking for visitors?\n"
         "assistant: Yes, visitor parking is near gate 2. See you on Saturday.\n",
         '{"name": "Ravi Sharma", "user_interested": true}',  # a JSON string; still Booked: a question ranks lower
         "Ravi Sharma called back for the site location.", call_type="inbound")


def _numbers_from_abroad(call: Call) -> None:
    """US numbers, mixed formats; the clinic books an appointment."""
    call(CLINIC, 50, "+1 (415) 555-2671",
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
    call(CLINIC, 20, "+14155552671",
         "assistant: Hello, this is Meera from Dr. Mehta's Clinic, calling to confirm Sunita Kapoor's appointment on Tuesday.\n"
         "user: Yes, confirmed. We will be there.\n"
         "assistant: Thank you. Please bring any earlier prescriptions.\n",
         {"name": "Sunita Kapoor", "appointment_booked": True, "user_interested": True, "callback_user": False},
         "Appointment confirmed for Tuesday.")
    call(SHOP, 44, "+1 212-555-0187",
         "assistant: Hi, this is Rohan from ShopKart, calling about your order SK48213377 to New Jersey.\n"
         "user: Oh, I ordered that as a gift for my parents in Pune, not for me.\n"
         "assistant: Understood. The delivery address is Kothrud, Pune, and it will arrive on Thursday.\n"
         "user: Perfect.\n",
         {"name": "Arjun Desai", "interest": "order status", "appointment_booked": False,
          "user_interested": True, "callback_user": False, "address": "Kothrud, Pune"},
         "Order SK48213377 confirmed for delivery in Pune on Thursday.")


def _awkward_shapes(call: Call) -> None:
    """Shapes the sync must not choke on."""
    call(CLINIC, 12, "+91 99887 76655", "user: hi\n", None, None)  # hung up at once
    call(ESTATE, 40, "+91 91234 56789",
         "assistant: Hello, Skyline Realty. You had enquired about plots in Devanahalli.\n"
         "user: Yes, my budget is around 50 lakhs. Send me details.\n",
         "{name: Ravi, budget",  # malformed: not JSON at all
         "Enquiry about plots in Devanahalli.")
    call(SHOP, 36, "+91 70123 45678",
         "assistant: Hi, this is Rohan from ShopKart about your order SK10293847.\n"
         "user: I am not interested in any offers, please don't call.\n",
         None, "Customer not interested.")  # extracted_data null
    missing = call(SHOP, 26, "8123456789",
                   "assistant: Hi, this is Rohan from ShopKart. Your order will be delivered today.\n"
                   "user: Okay, thanks.\n", summary="Delivery today confirmed.")
    del missing["extracted_data"]  # some records carry no extracted_data key at all
    call(CLINIC, 16, "12345",  # not a phone number
         "assistant: Good evening, Dr. Mehta's Clinic.\nuser: Wrong number, sorry.\n",
         {"user_interested": False}, "Wrong number.")
    call(ESTATE, 0.05, "+91 98450 12345", None, status="in-progress")
    call(CLINIC, 3, "+91 90000 11111", None, status="no-answer")
    call(SHOP, 10, "+91 97400 55667",  # "completed", yet nobody spoke
         "assistant: Hi, this is Rohan from ShopKart calling about your order. Please call us back on this number.\n",
         {"user_interested": False}, "Reached voicemail.", voicemail=True)
    call(ESTATE, 8, "+91 98440 22334",
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
    call(SHOP, 2, "+91 88776 65544",
         "user: Hello, my order SK55512345 shows delivered but I did not get it.\n"
         "assistant: I am sorry, Pooja. I have raised a complaint and the courier will call you within 24 hours.\n"
         "user: Okay, please make it quick.\n",
         {"name": "Pooja Nair", "interest": "missing delivery", "appointment_booked": False,
          "user_interested": True, "callback_user": True, "address": "Kakkanad, Kochi"},
         "Pooja Nair reported a missing delivery; complaint raised.", call_type="inbound")
