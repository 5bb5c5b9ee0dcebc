"""Contacts routed into pipeline stages (issue 11): the routing priorities, downgrade protection,
WON stickiness, update modes, the confidence threshold and review entries, and a person's locks
winning over the daemon's writes, races included (mongomock here, and again on the wire server,
tests/test_mongodb_integration_pipelines.py)."""
import json
from datetime import datetime

import pytest

from fakes.mongo_hooks import WRITE_METHODS, HookedClient
from models.pipeline import (BLOCKED, KEPT, MOVED, PLACED, REVIEW, MalformedPipeline, decide, parse_pipeline,
                             pipeline_for, route)
from services.analyzer.schema import Analysis, analysis_document
from services.analyzer.write_back import record_decision
from services.database import PIPELINES, STAGE_REVIEWS
from services.pipelines import PipelineCatalog
from tests.conftest import TEST_DB
from tests.helpers import AGENT, build_app, execution
from tests.test_service import run_main
from worker.cli import show_reviews

NOW = datetime(2026, 11, 1, 12, 0)
PHONE = "+919876543210"

SALES = {"_id": "sales", "name": "Sales", "updateMode": "UPDATE_EXISTING", "stages": [
    {"id": "new", "name": "New Lead", "type": "LEAD"},
    {"id": "qualified", "name": "Qualified", "type": "IN_PROGRESS", "scoreRange": {"min": 31, "max": 60}},
    {"id": "negotiation", "name": "Negotiation", "type": "IN_PROGRESS", "scoreRange": {"min": 61, "max": 79},
     "description": "price and terms under discussion"},
    {"id": "won", "name": "Won", "type": "WON"},
    {"id": "lost", "name": "Lost", "type": "LOST"},
]}
PIPELINE = parse_pipeline(SALES)


def analysis(*, score=50, tag="Interested", status="QUALIFIED", confidence=90, recommended=None, fallback=False):
    result = Analysis(tag=tag, summary="Asked about the flat.", lead_score=score, lead_status=status,
                      sentiment="positive", confidence=confidence, reasoning="Asked the price.",
                      recommended_stage=recommended)
    return analysis_document("ok", attempted_at=NOW, model="heuristic" if fallback else "openai/gpt-oss-20b",
                             used_fallback=fallback, analysis=result)


# -- the pipeline documents -----------------------------------------------------------------------

def test_a_stage_without_a_range_takes_its_types():
    stages = {stage.id: (stage.minimum, stage.maximum) for stage in PIPELINE.stages}
    assert stages == {"new": (0, 30), "qualified": (31, 60), "negotiation": (61, 79), "won": (81, 100), "lost": (0, 20)}
    assert PIPELINE.update_mode == "UPDATE_EXISTING" and parse_pipeline({**SALES, "updateMode": None}).update_mode == "SKIP_EXISTING"


@pytest.mark.parametrize("change, problem", [
    ({"stages": []}, "no stages"),
    ({"stages": [{"id": "a", "name": "A", "type": "MAYBE"}]}, "type 'MAYBE'"),
    ({"stages": [{"id": "a", "name": "A", "type": "LEAD", "scoreRange": {"min": 50, "max": 10}}]}, "scoreRange"),
    ({"stages": [{"id": "a", "name": "A", "type": "LEAD"}, {"id": "a", "name": "B", "type": "WON"}]}, "share an id"),
    ({"updateMode": "ALWAYS"}, "updateMode"),
])
def test_a_malformed_pipeline_is_refused_saying_why(change, problem):
    with pytest.raises(MalformedPipeline, match=problem):
        parse_pipeline({**SALES, **change})


def test_an_agents_own_pipeline_wins_over_the_one_for_every_agent():
    everyone = parse_pipeline(SALES)
    support = parse_pipeline({**SALES, "_id": "support", "agentIds": ["agent-9"]})
    assert pipeline_for("agent-9", [everyone, support]) is support
    assert pipeline_for("agent-1", [everyone, support]) is everyone
    assert pipeline_for("agent-1", [support]) is None


# -- routing, in priority order ------------------------------------------------------------------

@pytest.mark.parametrize("score, tag, status, recommended, stage, rule", [
    (40, "Purchased", "QUALIFIED", "New Lead", "won", "status"),       # (1) the outcome, over everything
    (95, "Interested", "WON", None, "won", "status"),
    (70, "Not_Interested", "CONTACTED", None, "lost", "status"),
    (45, "Interested", "QUALIFIED", "Negotiation", "qualified", "score_range"),  # (2) over the recommendation
    (10, "follow_up", "NEW", None, "new", "score_range"),              # an open stage, not LOST (0-20)
    (90, "Interested", "QUALIFIED", "negotiation", "negotiation", "recommendation"),  # (3) case-insensitive
    (90, "Interested", "QUALIFIED", "Nowhere", "negotiation", "nearest_midpoint"),  # (4)
])
def test_routing_priorities(score, tag, status, recommended, stage, rule):
    routed = route(PIPELINE, score=score, tag=tag, lead_status=status, recommended=recommended)
    assert (routed.stage.id, routed.rule) == (stage, rule)


def staged(stage_id, score=None):
    contact = {"stage": {"id": stage_id, "pipelineId": "sales"}}
    return {**contact, "leadScore": score} if score is not None else contact


@pytest.mark.parametrize("contact, result, action", [
    (staged("negotiation", 85), analysis(score=25), BLOCKED),   # >= 80 never to a stage starting below 50
    (staged("negotiation", 55), analysis(score=10), BLOCKED),   # >= 50 never below 20
    (staged("negotiation", 55), analysis(score=45), MOVED),     # Qualified starts at 31: allowed
    (staged("won", 40), analysis(score=20, tag="Not_Interested"), BLOCKED),  # WON is a person's to change
    (staged("qualified", 40), analysis(score=70), MOVED),
    ({}, analysis(score=70), PLACED),
    (staged("qualified", 40), analysis(score=45), KEPT),        # already there
])
def test_downgrade_protection_and_won_stickiness(contact, result, action):
    assert decide(PIPELINE, contact, result, 60).action == action


@pytest.mark.parametrize("contact", [
    {"leadScore": 90},  # scored by an earlier analysis that placed it nowhere (a review)
    {"leadScore": 90, "stage": {"id": "gone", "pipelineId": "sales"}},  # a stage the pipeline no longer has
])
def test_a_first_placement_is_no_downgrade_whatever_the_earlier_score(contact):
    lost = decide(PIPELINE, contact, analysis(score=10, tag="Not_Interested", status="LOST"), 60)
    assert (lost.action, lost.route.stage.id, lost.current) == (PLACED, "lost", None)
    assert decide(PIPELINE, {"leadScore": 55}, analysis(score=10), 60).action == PLACED  # New Lead


def test_a_contact_staged_in_another_pipeline_is_left_there():
    other = {"stage": {"id": "won", "pipelineId": "support"}, "leadScore": 90}
    assert decide(PIPELINE, other, analysis(score=10, tag="Not_Interested"), 60).action == KEPT


def test_skip_existing_places_only_contacts_without_a_stage():
    skip = parse_pipeline({**SALES, "updateMode": "SKIP_EXISTING"})
    assert decide(skip, {}, analysis(score=70), 60).action == PLACED
    kept = decide(skip, staged("new", 10), analysis(score=70), 60)
    assert kept.action == KEPT and "SKIP_EXISTING" in kept.reason


def test_below_the_confidence_threshold_a_person_reviews_the_move():
    assert decide(PIPELINE, {}, analysis(score=70, confidence=59), 60).action == REVIEW
    assert decide(PIPELINE, {}, analysis(score=70, confidence=60), 60).action == PLACED


# -- applied to the CRM ------------------------------------------------------------------------------

@pytest.fixture
def rules(db):
    db[PIPELINES].insert_one(SALES)
    return PipelineCatalog(db[PIPELINES]).for_agent("agent-1"), 60


def apply(db, rules, call_id, result, *, at=NOW, round=0):
    call = {"callId": call_id, "agentId": "agent-1", "customerPhone": PHONE, "customerPhoneValid": True,
            "callAt": at, "analysisRound": round}
    return record_decision(db, call, result, NOW, *rules)


def contact(db):
    return db.contacts.find_one({"phone": PHONE})


def activities(db, kind):
    return list(db.activities.find({"type": kind}, {"_id": 0}))


def test_an_analysis_places_the_contact_and_audits_it(db, rules):
    assert apply(db, rules, "c1", analysis(score=70))
    stage = contact(db)["stage"]
    assert (stage["id"], stage["name"], stage["type"], stage["pipelineId"], stage["rule"], stage["callId"]) == \
        ("negotiation", "Negotiation", "IN_PROGRESS", "sales", "score_range", "c1")
    [entry] = activities(db, "stage_change")
    assert (entry["action"], entry["from"], entry["to"]["id"], entry["rule"], entry["callId"]) == \
        ("placed", None, "negotiation", "score_range", "c1")
    assert entry["confidence"] == 90 and entry["model"] == "openai/gpt-oss-20b" and entry["usedFallback"] is False


def test_a_blocked_downgrade_is_logged_not_applied(db, rules):
    apply(db, rules, "c1", analysis(score=85, recommended="Negotiation"), at=NOW.replace(hour=9))
    assert contact(db)["stage"]["id"] == "negotiation"
    apply(db, rules, "c2", analysis(score=20), at=NOW.replace(hour=10))
    assert contact(db)["stage"]["id"] == "negotiation" and contact(db)["leadScore"] == 20
    [blocked] = activities(db, "stage_blocked")
    assert blocked["to"]["id"] == "new" and "scored 85" in blocked["reason"] and blocked["callId"] == "c2"


def test_a_contact_scored_high_but_never_placed_is_placed_by_its_route(db, rules):
    """An unsure first analysis scores the contact 90 and leaves it for review, without a stage;
    the next call is a refusal: nothing to downgrade, so the contact is placed in Lost."""
    apply(db, rules, "c1", analysis(score=90, confidence=40), at=NOW.replace(hour=9))
    assert "stage" not in contact(db) and contact(db)["leadScore"] == 90
    apply(db, rules, "c2", analysis(score=10, tag="Not_Interested", status="LOST"), at=NOW.replace(hour=10))
    assert (contact(db)["stage"]["id"], contact(db)["stage"]["rule"]) == ("lost", "status")
    [placed] = activities(db, "stage_change")
    assert (placed["action"], placed["from"], placed["to"]["id"], placed["callId"]) == ("placed", None, "lost", "c2")
    assert not activities(db, "stage_blocked")


def test_an_unsure_analysis_opens_one_review_entry_and_moves_nothing(db, rules):
    apply(db, rules, "c1", analysis(score=70, confidence=40))
    assert "stage" not in contact(db)
    apply(db, rules, "c1", analysis(score=70, confidence=40))  # a retake of the same attempt
    [review] = db[STAGE_REVIEWS].find({}, {"_id": 0})
    assert (review["status"], review["suggestedStage"]["id"], review["leadScore"], review["callId"]) == \
        ("open", "negotiation", 70, "c1")
    assert review["contactId"] == contact(db)["_id"] and review["reasoning"] == "Asked the price."
    db[STAGE_REVIEWS].update_one({}, {"$set": {"status": "dismissed"}})  # a person's answer
    apply(db, rules, "c1", analysis(score=70, confidence=40))
    assert db[STAGE_REVIEWS].find_one()["status"] == "dismissed"


def test_without_a_pipeline_contacts_get_no_stage(db):
    rules = PipelineCatalog(db[PIPELINES]).for_agent("agent-1"), 60
    apply(db, rules, "c1", analysis(score=70))
    assert "stage" not in contact(db) and not activities(db, "stage_change")


def test_locked_fields_on_a_contact_are_held_back_as_suggestions(db, rules):
    db.contacts.insert_one({"phone": PHONE, "tag": "Purchased", "stage": {"id": "qualified", "pipelineId": "sales"},
                            "locked": ["tag", "stage"]})
    apply(db, rules, "c1", analysis(score=70, tag="follow_up"))
    stored = contact(db)
    assert stored["tag"] == "Purchased" and stored["stage"]["id"] == "qualified"
    assert stored["leadScore"] == 70  # not locked: written
    assert stored["suggested"]["tag"] == {"value": "follow_up", "callId": "c1", "at": NOW}
    assert stored["suggested"]["stage"]["value"]["id"] == "negotiation"
    [held] = activities(db, "held_back")
    assert set(held["fields"]) == {"tag", "stage"} and held["callId"] == "c1"
    assert not activities(db, "stage_change")


def test_a_lock_set_while_the_daemon_writes_wins(mongo, rules):
    """A person sets the tag (and locks it) between the daemon's read and its write."""
    raw = mongo[TEST_DB]
    raw.contacts.insert_one({"phone": PHONE, "tag": "follow_up"})
    edits = []

    def person_edits_first(collection, method):
        if collection == "contacts" and method in ("update_one", "find_one_and_update") and not edits:
            edits.append(raw.contacts.update_one({"phone": PHONE}, {"$set": {"tag": "Purchased"},
                                                                   "$addToSet": {"locked": "tag"}}))

    racing = HookedClient(mongo, person_edits_first)[TEST_DB]
    apply(racing, rules, "c1", analysis(score=70, tag="Interested"))
    stored = raw.contacts.find_one({"phone": PHONE})
    assert edits and stored["tag"] == "Purchased" and stored["suggested"]["tag"]["value"] == "Interested"
    assert stored["leadScore"] == 70 and stored["stage"]["id"] == "negotiation"


@pytest.mark.parametrize("existing", [False, True], ids=["new contact", "staged contact"])
def test_a_crash_after_the_contact_write_loses_no_audit_and_the_retake_doubles_none(mongo, rules, existing):
    """The process ends at the first write after the contact's: the retake (the same settled
    decision, applied again) finds the decision's activity and its stage move, exactly once."""
    raw = mongo[TEST_DB]
    if existing:
        raw.contacts.insert_one({"phone": PHONE, "leadScore": 40, "stage": {"id": "qualified", "pipelineId": "sales"}})
    contact_writes = []

    def crash_after_the_contact_write(collection, method):
        if method not in WRITE_METHODS:
            return
        if contact_writes:
            raise KeyboardInterrupt
        if collection == "contacts":
            contact_writes.append(method)

    crashing = HookedClient(mongo, crash_after_the_contact_write)[TEST_DB]
    decided = analysis(score=70)
    with pytest.raises(KeyboardInterrupt):
        apply(crashing, rules, "c1", decided)
    assert contact(raw)["stage"]["id"] == "negotiation"  # the contact was written

    assert apply(raw, rules, "c1", decided)
    [decision] = activities(raw, "ai_analysis")
    assert decision["changes"]["leadScore"] == {"from": 40 if existing else None, "to": 70}
    assert decision["appliedToContact"] is True
    [moved] = activities(raw, "stage_change")
    assert (moved["from"] or {}).get("id") == ("qualified" if existing else None)
    assert moved["to"]["id"] == "negotiation" and moved["action"] == (MOVED if existing else PLACED)
    assert len(contact(raw)["pastConversations"]) == 1


def test_a_decision_made_on_a_contact_that_changed_before_its_write_is_made_again(mongo, rules):
    """Another call's analysis lands between this decision's read and its write: the decision is
    taken again on the contact as it now is, and its activity says what it really changed."""
    raw = mongo[TEST_DB]
    raw.contacts.insert_one({"phone": PHONE, "leadScore": 40})
    other = []

    def another_analysis_first(collection, method):
        if collection == "contacts" and method in ("update_one", "find_one_and_update") and not other:
            other.append(apply(HookedClient(mongo)[TEST_DB], rules, "older", analysis(score=50),
                               at=datetime(2026, 10, 1)))

    apply(HookedClient(mongo, another_analysis_first)[TEST_DB], rules, "c1", analysis(score=70))
    decision = raw.activities.find_one({"type": "ai_analysis", "callId": "c1"})
    assert other and decision["changes"]["leadScore"] == {"from": 50, "to": 70}
    assert contact(raw)["leadScore"] == 70


def test_a_hold_the_decision_made_again_does_not_make_leaves_no_held_back_entry(mongo, rules):
    """The tag is locked when the decision is made; before its write a person unlocks it and
    another call's analysis lands: the decision, made again, writes the tag, and no entry says a
    lock kept it out."""
    raw = mongo[TEST_DB]
    raw.contacts.insert_one({"phone": PHONE, "tag": "Purchased", "locked": ["tag"]})
    other = []

    def unlocked_and_another_analysis_first(collection, method):
        if collection == "contacts" and method in ("update_one", "find_one_and_update") and not other:
            raw.contacts.update_one({"phone": PHONE}, {"$pull": {"locked": "tag"}})
            other.append(apply(HookedClient(mongo)[TEST_DB], rules, "older", analysis(score=50, tag="follow_up"),
                               at=datetime(2026, 10, 1)))

    apply(HookedClient(mongo, unlocked_and_another_analysis_first)[TEST_DB], rules, "c1", analysis(tag="Interested"))
    assert other and contact(raw)["tag"] == "Interested" and "suggested" not in contact(raw)
    assert not activities(raw, "held_back")


# -- a person's locks on customers, through the CRM sync ---------------------------------------------

def sync_one_booked_call(settings, mongo, bolna_server, hook=None):
    bolna = bolna_server([execution(PHONE, call_id="booked", extracted={"appointment_booked": True, "name": "Ravi"})],
                         [AGENT])
    app = build_app(settings.with_overrides(bolna_base_url=bolna.base_url), mongo, bolna,
                    **({"hook": hook} if hook else {}))
    assert app.run_job("crm_sync")["status"] == "ok"


def test_locked_customer_fields_are_held_back_as_suggestions(settings, mongo, bolna_server):
    raw = mongo[TEST_DB]
    raw.customers.insert_one({"phone": PHONE, "status": "Interested", "name": "Ravi Kumar",
                              "locked": ["status", "name"]})
    sync_one_booked_call(settings, mongo, bolna_server)
    [customer] = raw.customers.find()
    assert (customer["status"], customer["name"], customer["callCount"]) == ("Interested", "Ravi Kumar", 1)
    assert customer["suggested"]["status"]["value"] == "Booked" and customer["suggested"]["name"]["value"] == "Ravi"
    assert customer["suggested"]["status"]["callId"] == "booked"
    [held] = raw.activities.find({"type": "held_back"})
    assert held["fields"] == {"status": "Booked", "name": "Ravi"} and held["callId"] == "booked"
    assert not list(raw.activities.find({"type": "status_change"}))


@pytest.mark.parametrize("jobs", [("crm_sync", "call_processor"), ("call_processor", "crm_sync")])
def test_a_call_held_back_on_its_customer_and_its_contact_is_audited_for_both(settings, mongo, bolna_server, jobs):
    """One call whose values a lock holds on its customer (the CRM sync) and on its contact (the
    analysis): each job's `held_back` entry is kept, whichever runs first."""
    raw = mongo[TEST_DB]
    raw.customers.insert_one({"phone": PHONE, "status": "Interested", "name": "Ravi Kumar", "locked": ["status", "name"]})
    raw.contacts.insert_one({"phone": PHONE, "leadScore": -1, "locked": ["leadScore"]})
    bolna = bolna_server([execution(PHONE, call_id="booked", extracted={"appointment_booked": True, "name": "Ravi"})],
                         [AGENT])
    app = build_app(settings, mongo, bolna)
    for job in jobs:
        assert app.run_job(job)["status"] == "ok"
    score = raw.contacts.find_one()["suggested"]["leadScore"]["value"]
    entries = list(raw.activities.find({"type": "held_back"}))
    logged = {(name, value) for entry in entries for name, value in entry["fields"].items()}
    assert logged == {("status", "Booked"), ("name", "Ravi"), ("leadScore", score)}, "a held-back value is lost"
    held = {entry["record"]: entry for entry in entries}
    assert len(entries) == 2 and {record: entry["fields"] for record, entry in held.items()} == {
        "customer": {"status": "Booked", "name": "Ravi"}, "contact": {"leadScore": score}}
    assert held["customer"]["customerId"] == raw.customers.find_one()["_id"] and "contactId" not in held["customer"]
    assert held["contact"]["contactId"] == raw.contacts.find_one()["_id"] and "customerId" not in held["contact"]


def test_a_customer_lock_set_while_the_sync_writes_wins(settings, mongo, bolna_server):
    raw = mongo[TEST_DB]
    raw.customers.insert_one({"phone": PHONE, "status": "Contacted"})
    edits = []

    def person_edits_first(collection, method):
        if collection == "customers" and method == "bulk_write" and not edits:
            edits.append(raw.customers.update_one({"phone": PHONE}, {"$set": {"status": "Not Interested"},
                                                                     "$addToSet": {"locked": "status"}}))

    sync_one_booked_call(settings, mongo, bolna_server, hook=person_edits_first)
    [customer] = raw.customers.find()
    assert edits and customer["status"] == "Not Interested"
    assert customer["suggested"]["status"]["value"] == "Booked" and customer["name"] == "Ravi"


# -- main.py review ----------------------------------------------------------------------------------

def test_review_lists_the_open_entries_oldest_first_with_the_number_masked(db, rules, capsys):
    apply(db, rules, "c1", analysis(score=70, confidence=40))
    other = {"callId": "c2", "agentId": "agent-1", "customerPhone": "+919811122233", "customerPhoneValid": True,
             "callAt": NOW, "analysisRound": 0}
    record_decision(db, other, analysis(score=20, confidence=30), NOW, *rules)
    db[STAGE_REVIEWS].update_one({"callId": "c2"}, {"$set": {"status": "accepted"}})

    assert show_reviews(db, as_json=True, limit=10) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert (entry["callId"], entry["suggestedStage"]["name"], entry["leadScore"], entry["confidence"]) == \
        ("c1", "Negotiation", 70, 40)
    assert entry["customerPhone"] != PHONE and entry["customerPhone"].endswith(PHONE[-4:])
    show_reviews(db, as_json=False, limit=10)
    table = capsys.readouterr().out
    assert "1 open stage review(s)" in table and "Negotiation" in table and PHONE not in table


def test_review_needs_the_database():
    result = run_main("review")
    assert result.returncode == 2 and result.stderr.startswith("callsync: MONGODB_URI is not set: `review`")
