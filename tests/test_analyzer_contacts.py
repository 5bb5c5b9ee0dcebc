"""Write-back of an analysis to `contacts` and `activities`, and `reanalyze`'s requeue."""
from datetime import datetime, timedelta, timezone

import pytest

from services.analyzer.write_back import PAST_CONVERSATIONS_KEPT, record_decision
from services.analyzer.schema import Analysis, analysis_document
from tests.helpers import requeue
from utils.phone import normalize_phone

NOW = datetime(2026, 6, 1, 12, 0)


def decision(tag="Interested", score=70, extra=None, fallback=False):
    analysis = Analysis(tag=tag, summary=f"Summary for {tag}", lead_score=score, lead_status="QUALIFIED",
                        sentiment="positive", confidence=80, reasoning="Asked the price.", extra=extra or {})
    return analysis_document("ok", attempted_at=NOW, model="heuristic" if fallback else "llama",
                             used_fallback=fallback, analysis=analysis)


def apply(db, call_id, analysis, phone="+919876543210", at=NOW):
    stored = normalize_phone(phone)  # as the call's document keeps it
    call = {"callId": call_id, "customerPhone": stored.key if stored else None,
            "customerPhoneValid": bool(stored and stored.valid), "callAt": at}
    return record_decision(db, call, analysis, NOW, None, 60)  # no pipeline


def test_the_contact_stored_under_an_older_spelling_of_the_number_is_updated(db):
    legacy_id = db.contacts.insert_one({"phone": "09876543210", "name": "Ravi", "tag": "follow_up"}).inserted_id
    assert apply(db, "c1", decision())
    assert db.contacts.count_documents({}) == 1
    contact = db.contacts.find_one({"_id": legacy_id})
    assert (contact["name"], contact["tag"], contact["leadScore"], contact["lastAnalyzedAt"]) == \
        ("Ravi", "Interested", 70, NOW)


def test_a_new_contact_is_keyed_by_e164_or_by_the_raw_text_of_an_invalid_number(db):
    apply(db, "c1", decision(), phone="+919876543210")
    apply(db, "c2", decision(), phone="12345")
    assert db.contacts.find_one({"phone": "+919876543210"})["phoneValid"] is True
    assert db.contacts.find_one({"phone": "12345"})["phoneValid"] is False


def test_no_customer_number_means_no_contact_and_no_activity(db):
    assert apply(db, "c1", decision(), phone=None) is False
    assert db.contacts.count_documents({}) == 0 and db.activities.count_documents({}) == 0


def test_past_conversations_keep_the_newest_calls_without_duplicates(db):
    for number in range(PAST_CONVERSATIONS_KEPT + 5):
        apply(db, f"c{number}", decision(), at=NOW + timedelta(minutes=number))
    apply(db, "c24", decision(tag="Purchased"), at=NOW + timedelta(minutes=24))  # re-analysis
    apply(db, "old", decision(), at=NOW - timedelta(days=30))  # a late backfill, older than all kept
    past = db.contacts.find_one()["pastConversations"]
    assert [entry["callId"] for entry in past] == [f"c{n}" for n in range(5, 25)]
    assert past[-1] == {"callId": "c24", "summary": "Summary for Purchased", "tag": "Purchased",
                        "at": NOW + timedelta(minutes=24)}


def test_each_decision_is_an_activity_saying_what_changed(db):
    apply(db, "c1", decision(score=40, extra={"budget": "50 lakhs", "parking": None}))
    apply(db, "c2", decision(score=75, extra={"budget": None, "parking": True}, fallback=True))
    first, second = db.activities.find({}, sort=[("callId", 1)])
    contact = db.contacts.find_one()
    assert first["contactId"] == second["contactId"] == contact["_id"]
    assert first["changes"]["extra.budget"] == {"from": None, "to": "50 lakhs"}
    assert second["changes"] == {"leadScore": {"from": 40, "to": 75}, "extra.parking": {"from": None, "to": True}}
    assert (second["reasoning"], second["confidence"], second["model"], second["usedFallback"]) == \
        ("Asked the price.", 80, "heuristic", True)
    # An extra field this call did not mention keeps what an earlier call found.
    assert contact["extra"] == {"budget": "50 lakhs", "parking": True}


def test_an_unset_heuristic_tag_leaves_the_contacts_tag(db):
    apply(db, "c1", decision(tag="Interested"))
    apply(db, "c2", decision(tag=None))
    assert db.contacts.find_one()["tag"] == "Interested"


# -- requeue -------------------------------------------------------------------------------------

def add_processed(db, call_id, at):
    db.calls.insert_one({"callId": call_id, "callAt": at, "terminal": True, "processed": True, "attempts": 2,
                         "acquired_by": "x", "acquired_token": "t", "analysis": {"status": "failed"}})


def test_requeue_puts_one_call_or_calls_since_a_date_back_in_the_queue(db):
    add_processed(db, "old", NOW - timedelta(days=3))
    add_processed(db, "new", NOW - timedelta(hours=1))
    assert requeue(db, call_id="old") == 1
    old = db.calls.find_one({"callId": "old"})
    assert (old["processed"], old["attempts"], "acquired_token" in old) == (False, 0, False)
    assert old["analysis"] == {"status": "failed"}  # kept until the new attempt replaces it
    assert db.calls.find_one({"callId": "new"})["processed"] is True

    assert requeue(db, since=NOW - timedelta(days=1)) == 1
    assert db.calls.find_one({"callId": "new"})["processed"] is False
    assert requeue(db, call_id="missing") == 0


def test_requeue_since_an_aware_time_compares_in_utc(db):
    add_processed(db, "c1", NOW)
    ist = timezone(timedelta(hours=5, minutes=30))
    assert requeue(db, since=datetime(2026, 6, 1, 17, 31, tzinfo=ist)) == 0  # 12:01 UTC
    assert requeue(db, since=datetime(2026, 6, 1, 17, 30, tzinfo=ist)) == 1


def test_requeue_needs_exactly_one_selector(db):
    with pytest.raises(ValueError):
        requeue(db)
    with pytest.raises(ValueError):
        requeue(db, call_id="c1", since=NOW)


def test_requeue_drops_a_settled_decision_so_the_new_round_is_analyzed_afresh(db):
    db.calls.insert_one({"callId": "c1", "callAt": NOW, "terminal": True, "processed": False, "attempts": 1,
                         "settled": True, "acquired_by": "x", "acquired_token": "t", "analysis": {"status": "ok"}})
    assert requeue(db, call_id="c1") == 1
    stored = db.calls.find_one({"callId": "c1"})
    assert "settled" not in stored and "acquired_token" not in stored and stored["analysisRound"] == 1
