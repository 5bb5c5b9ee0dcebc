"""A model-based test of the sync and analysis invariants (issue 23): Hypothesis' stateful testing
drives a simulated Bolna (the fake, over real HTTP) and two daemons on one database through calls
created at any time on Bolna's clock, calls finishing late, listings changing between pages, pages
of any size, 7-day windows, a clock offset of up to +-20 minutes, time passing, webhook
deliveries (in any order, stale states too), a crash at any database write followed by a restart,
a race at any write between the two daemons, a claim that expires while its worker waits for the
LLM, lead scores that move contacts up and down a sales pipeline, and a person locking or
unlocking a customer's field, between steps or at any write of a daemon's sync. After every step the safety
invariants hold; at quiescence (the jobs run until nothing changes, with no crash) every invariant
holds exactly.

Time is the world's: `time_machine` moves the clock of this process (the daemons', the fakes'),
Bolna's runs `clock_offset` apart from it. Profiles (CALLSYNC_HYPOTHESIS_PROFILE): the default is
bounded for the normal test run; `long` runs many more examples. The wire-server test runs a
smaller profile against a real server.
"""
from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone

import mongomock
import pytest
import time_machine
from pymongo import MongoClient
from hypothesis import HealthCheck, settings as hypothesis_settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from fakes.bolna_api import RateLimits
from fakes.bolna_server import FakeBolna
from fakes.dataset import iso
from fakes.groq_server import FakeGroq
from fakes.mongo_hooks import HookedClient, WriteTrap
from models.locks import HELD_BACK, HELD_ON_CUSTOMER, LOCKED, SUGGESTED, held_back_key
from models.customer import PENDING_HELD_BACK, StatusRanks, customer_call
from models.execution import MalformedExecution, parse_execution, parse_time
from services import lease
from services.analyzer.run import claim_lease_seconds
from services.analyzer.write_back import ACTIVITY_TYPE, STAGE_CHANGE
from services.database import (ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, PIPELINES, SYNC_STATE,
                               WEBHOOK_INBOX)
from services.sync_state import PENDING_MAX_AGE
from services.webhooks import LEASE_SECONDS as INBOX_LEASE_SECONDS
from services.writers import STATUS_CHANGE
from tests.conftest import RAISED_LIMITS, TEST_DB
from tests.faults import assert_customers_match, customer_call_ids, expected_customers
from tests.helpers import requeue
from tests.test_pipelines import SALES
from utils.config import ExtraField
from utils.phone import normalize_phone
from worker.app import CALL_PROCESSOR, CRM_SYNC, JOB_NAMES, Runtime

pytestmark = pytest.mark.timeout(900)

AGENT_ID = "agent-m"
AGENT = {"id": AGENT_ID, "agent_name": "Model", "agent_status": "processed"}
# Three customers, each under several spellings (the sync normalizes them to one key).
PHONES = (("+91 98765 43210", "09876543210", "919876543210"),
          ("+91 91234 56789", "9123456789"),
          ("+1 (415) 555-0134", "+14155550134"))
LISTING = r"/executions$"  # an agent's listing, not one call's record
# How a record written before numbers were normalized spells each (services/writers.py).
LEGACY_SPELLINGS = ("09876543210", "9123456789", "(415) 555-0134")
UNFINISHED = ("queued", "ringing", "in-progress")
OUTCOMES = ("booked", "callback", "declined", "interested", "no-answer", "voicemail")
# The analysis writes this marker onto the contact (an extra field the fake LLM answers): a
# worker whose claim was taken over answers STALE, every other answer LIVE.
MARKER = "writer"
LIVE, STALE = "live", "stale"
RANKS = StatusRanks()
# Which call (or state of a call) a rule takes: an index into what exists then, modulo its length.
# Drawn with the same bounds whatever exists, because what exists may differ between two runs of
# one example (whether a change armed between pages fired before a crash depends on the read-ahead
# thread); a draw bounded by it made Hypothesis stop on FlakyStrategyDefinition.
PICK = st.integers(0, 30)
# At which database write a crash or a race strikes. Most runs of a task make only a few writes (three
# when nothing is new, a few more for a page of calls or one analysis): drawn over 0-24 alike, three
# crashes in four never fired. Half the draws fall within the first three writes; the rest reach the
# later writes of a long catch-up.
AT_WRITE = st.integers(0, 2) | st.integers(0, 24)
# The customer fields a person locks in the model: the status and a profile field its calls set.
LOCKABLE = ("status", "name")

PROFILES = {
    # The normal test run: bounded so the whole module stays well under a minute on mongomock.
    # Fewer, longer examples than 30 of 20 steps, in about the same time: a crash or a race needs
    # a daemon's run among the steps, and strikes more often in a run with more calls to write.
    "default": dict(max_examples=25, stateful_step_count=35),
    "long": dict(max_examples=400, stateful_step_count=40),
    "wire": dict(max_examples=4, stateful_step_count=12),
}


def profile(name: str) -> hypothesis_settings:
    chosen = os.environ.get("CALLSYNC_HYPOTHESIS_PROFILE", "default")
    limits = PROFILES["long"] if chosen == "long" else PROFILES[name]
    return hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck), **limits)


class Figures:
    """What a run of the machine exercised, printed at the end (docs/reliability.md quotes them)."""
    examples = steps = crashes = races = expiries = webhooks = stage_changes = locks = 0


def _record(call_id: str, created, status: str, phone: str, outcome: str | None, updated) -> dict:
    """One execution as Bolna holds it: unfinished, or final with what the call extracted.
    Each profile value names its call, so "the newest value per field" is checkable."""
    terminal = status not in UNFINISHED
    spoke = terminal and outcome not in ("no-answer", "voicemail")
    extracted = None
    if spoke:
        extracted = {"name": f"Name of {call_id}", "interest": f"interest of {call_id}",
                     "appointment_booked": outcome == "booked", "callback_user": outcome == "callback"}
        if outcome in ("declined", "interested"):
            extracted["user_interested"] = outcome == "interested"
    return {
        "id": call_id, "agent_id": AGENT_ID, "status": status,
        "conversation_duration": 42.0 if spoke else 0.0, "total_cost": 1.0,
        "created_at": iso(created), "updated_at": iso(updated),
        "answered_by_voice_mail": outcome == "voicemail",
        "transcript": _transcript(outcome) if spoke else None,
        "extracted_data": extracted,
        "telephony_data": {"to_number": phone, "from_number": "+918045671234", "call_type": "outbound",
                           "duration": "42" if spoke else "0", "recording_url": None},
    }


# How many times the customer speaks in a call of each outcome: the fake LLM scores a lead by it
# (40 + 10 a turn), so one number's calls move its contact between the pipeline's stages.
CUSTOMER_TURNS = {"booked": 4, "interested": 3, "callback": 1, "declined": 0}


def _transcript(outcome: str) -> str:
    turns = ["I want to book a site visit for a 2 BHK on Saturday, please call me back with the price.",
             "Is parking included?", "What about the loan?", "Saturday at ten works."][:CUSTOMER_TURNS[outcome]]
    return "assistant: Hello, Skyline Realty here.\n" + "".join(f"user: {turn}\n" for turn in turns)


def _final_status(outcome: str) -> str:
    return "no-answer" if outcome == "no-answer" else "completed"


class SyncModel(RuleBasedStateMachine):
    """One example: a fresh Bolna account, a fresh database, two daemons (A and B) on it."""

    bolna: FakeBolna
    groq: FakeGroq
    base_settings = None
    new_mongo = staticmethod(mongomock.MongoClient)
    accounts = itertools.count(1)

    def __init__(self):
        super().__init__()
        Figures.examples += 1
        self.traveller = time_machine.travel(datetime.now(timezone.utc), tick=True)
        self.clock = self.traveller.start()
        self.key = f"model-key-{next(self.accounts)}-{os.getpid()}"
        self.account = self.bolna.add_account(self.key, [AGENT], [])
        self.mongo = self.new_mongo()
        self.mongo.drop_database(TEST_DB)
        self.ids = itertools.count(1)
        self.history: dict[str, list[dict]] = {}  # every state of every call, as Bolna held it
        self.created: set[str] = set()
        self.advanced = timedelta(0)
        self.workers: list[Runtime] = []
        self.traps: list[WriteTrap] = []
        self.cues: list[dict] = []
        self.score: int | None = None  # the lead score the LLM answers (None: the fake's own)
        self.groq.extra = self._answer(LIVE)
        self.groq.clear_request_actions()
        self.skew = timedelta(0)
        self.initial_status: dict[str, str] = {}  # a legacy record's status, before any change
        self.locked_ever: set[tuple[str, str]] = set()  # (number, field) a person locked at some time

    # -- set-up ---------------------------------------------------------------------------------

    @initialize(skew_minutes=st.integers(-20, 20), overlap=st.sampled_from([0, 10]),
                page_size=st.integers(1, 4),
                earlier=st.lists(st.tuples(st.floats(0.01, 7.9), st.integers(0, len(PHONES) - 1),
                                           st.sampled_from(OUTCOMES)), max_size=4),
                legacy=st.booleans(), pipeline=st.booleans())
    def start(self, skew_minutes, overlap, page_size, earlier, legacy, pipeline):
        """Bolna's clock `skew_minutes` off the daemons'; calls made over the last 8 days, their
        customers already stored by an old version (`legacy`) under another spelling; with
        `pipeline`, each analysis places the contact in a stage of the sales pipeline (and audits
        it)."""
        self.skew = timedelta(minutes=skew_minutes)
        self.bolna.clock_offset = self.skew
        self.settings = self.base_settings.with_overrides(
            bolna_api_key=self.key, bolna_page_size=page_size, sync_overlap_minutes=overlap, backfill_days=8)
        for days, phone, outcome in earlier:
            created = self.bolna.now() - timedelta(days=days)
            self._add(created, _final_status(outcome), phone, outcome, created + timedelta(minutes=3))
        if pipeline:
            self.mongo[TEST_DB][PIPELINES].insert_one(dict(SALES))
        self.workers = [self._build(index) for index in range(2)]
        if legacy:
            self._store_legacy_customers()

    def _store_legacy_customers(self) -> None:
        """Each number's final calls so far as a record of an old version holds them: under an
        unnormalized spelling, counted in a `callIds` array."""
        by_phone: dict[str, list] = {}
        for execution in _terminal_calls(self.account.ground_truth(), self.settings.default_phone_region).values():
            if execution.customer_phone is not None:
                by_phone.setdefault(execution.customer_phone.key, []).append(execution)
        for key, executions in by_phone.items():
            calls = [customer_call(execution) for execution in executions]
            best = max(calls, key=lambda call: (RANKS.of(call.status), call.at, call.call_id))
            newest = max(calls, key=lambda call: (call.at, call.call_id))
            spelling = LEGACY_SPELLINGS[next(i for i, spellings in enumerate(PHONES)
                                             if parse_phone_key(spellings[0]) == key)]
            profile = {name: value for call in sorted(calls, key=lambda call: (call.at, call.call_id))
                       for name, value in call.profile.items()}
            self.workers[0].db[CUSTOMERS].insert_one({
                "phone": spelling, "callIds": [call.call_id for call in calls], "callCount": len(calls),
                "status": best.status, "statusAt": best.at, "statusCallId": best.call_id,
                "lastCallAt": newest.at, "lastCallId": newest.call_id, **profile})
            self.initial_status[key] = best.status

    def _build(self, index: int) -> Runtime:
        """Daemon `index` (re)started: a new Runtime on the same database, every write through its hooks."""
        if index < len(self.traps):
            # The daemon's own parts only: the database client is the other daemon's too.
            self.workers[index].account.close()
        trap, cue = WriteTrap(), {}
        if index < len(self.traps):
            self.traps[index], self.cues[index] = trap, cue
        else:
            self.traps.append(trap)
            self.cues.append(cue)

        def hook(collection: str, method: str) -> None:
            trap(collection, method)
            if cue and method in ("bulk_write", "insert_one", "insert_many", "update_one", "update_many",
                                  "replace_one", "find_one_and_update", "delete_one", "delete_many") \
                    and cue.get("collection", collection) == collection:
                cue["remaining"] -= 1
                if cue["remaining"] < 0:
                    action = cue.pop("action")
                    cue.clear()
                    action()

        app = Runtime.build(self.settings.with_overrides(bolna_base_url=self.bolna.base_url),
                            mongo_client=HookedClient(self.mongo, hook))
        app.prepare()
        return app

    def teardown(self):
        try:
            if self.workers:
                self._quiesce()
                self._check_exact()
        finally:
            for app in self.workers:
                app.account.close()
            self.groq.clear_request_actions()
            self.bolna.clear_actions(api_key=self.key)
            self.traveller.stop()
            if not isinstance(self.mongo, mongomock.MongoClient):
                self.mongo.drop_database(TEST_DB)

    # -- Bolna's side ---------------------------------------------------------------------------

    def _add(self, created, status, phone_index, outcome, updated=None) -> str:
        number = next(self.ids)
        call_id = f"m-{number:03d}"
        phone = PHONES[phone_index][number % len(PHONES[phone_index])]
        # No two calls at the same millisecond: "the newest call" is then always one call.
        while iso(created) in self.created:
            created -= timedelta(milliseconds=1)
        self.created.add(iso(created))
        record = _record(call_id, created, status, phone, outcome, updated or created)
        self.account.add_execution(record)
        self.history[call_id] = [record]
        return call_id

    def _finish(self, call_id: str, outcome: str) -> None:
        current = self.account.execution(call_id)
        phone = current["telephony_data"]["to_number"]
        created = parse_time(current["created_at"])
        done = _record(call_id, created, _final_status(outcome), phone, outcome, self.bolna.now())
        self.account.update_execution(call_id, **{k: v for k, v in done.items() if k != "id"})
        self.history[call_id].append(self.account.execution(call_id))

    def _unfinished(self) -> list[str]:
        return sorted(call_id for call_id, record in self.account.ground_truth().items()
                      if record["status"] in UNFINISHED)

    @precondition(lambda self: self.workers)
    @rule(unfinished=st.booleans(), phone=st.integers(0, len(PHONES) - 1), outcome=st.sampled_from(OUTCOMES))
    def create_call(self, unfinished, phone, outcome):
        """A call made now by Bolna's clock (listed from that moment on, as Bolna lists a call from
        its start); a final one is a short call that ended at once."""
        created = self.bolna.now()
        status = "in-progress" if unfinished else _final_status(outcome)
        self._add(created, status, phone, None if unfinished else outcome,
                  created + timedelta(seconds=0 if unfinished else 40))

    @precondition(lambda self: self.workers)
    @rule(pick=PICK, outcome=st.sampled_from(OUTCOMES))
    def finish_call(self, pick, outcome):
        """An unfinished call ends (late, maybe hours or days after it started)."""
        unfinished = self._unfinished()
        if unfinished:
            self._finish(unfinished[pick % len(unfinished)], outcome)

    @precondition(lambda self: self.workers)
    @rule(what=st.sampled_from(["new final", "new unfinished", "finish"]), phone=st.integers(0, len(PHONES) - 1),
          outcome=st.sampled_from(OUTCOMES), paging_seconds=st.integers(1, 3), pages_first=st.integers(0, 2))
    def change_between_pages(self, what, phone, outcome, paging_seconds, pages_first):
        """After `pages_first` more listing pages were served, paging has taken a few seconds and
        Bolna changes: what the next page (and those after it) list is the changed listing."""
        def change():
            self.clock.shift(timedelta(seconds=paging_seconds))
            if what == "finish" and self._unfinished():
                self._finish(self._unfinished()[0], outcome)
            elif what != "finish":
                self._add(self.bolna.now(), "in-progress" if what == "new unfinished" else _final_status(outcome),
                          phone, None if what == "new unfinished" else outcome)

        def after(pages: int):
            action = change if pages == 0 else lambda: after(pages - 1)
            self.bolna.on_request(LISTING, action, api_key=self.key)
        after(pages_first)

    @precondition(lambda self: self.workers and self._backfill_recorded())
    @rule(step=st.sampled_from([timedelta(seconds=20), timedelta(minutes=4), timedelta(minutes=30),
                                timedelta(hours=7), timedelta(days=7) - timedelta(hours=1)]))
    def advance_time(self, step):
        """Time passes (the daemons may be down meanwhile): within an example, less than the age at
        which an unfinished call is no longer followed (`PENDING_MAX_AGE`, by design)."""
        if self.advanced + step < PENDING_MAX_AGE - timedelta(hours=12):
            self.advanced += step
            self.clock.shift(step)

    def _backfill_recorded(self) -> bool:
        """Whether a first sync has recorded where the agent's backfill starts: from then on the
        calls made before the start are within every job's first sync, however late it completes.
        (Before, a restart backfills from its own time, as a daemon that never ran does.)"""
        return self.workers[0].db[SYNC_STATE].count_documents({"backfillFrom": {"$exists": True}}) > 0

    # -- the daemons' side ----------------------------------------------------------------------

    def _task(self, worker: int, task: str) -> None:
        app = self.workers[worker]
        if task == "webhooks":
            app.webhook_processor.process_batch()
        else:
            app.run_job(task)

    @precondition(lambda self: self.workers)
    @rule(worker=st.integers(0, 1), job=st.sampled_from(JOB_NAMES))
    def run_job(self, worker, job):
        self._task(worker, job)

    @precondition(lambda self: self.workers)
    @rule(pick=PICK, version=PICK, worker=st.integers(0, 1), process=st.booleans())
    def deliver_webhook(self, pick, version, worker, process):
        """Bolna posts a state of a call (maybe an older one, late); the listener stores it in the
        inbox as it does before answering, and the processor writes it (now or later)."""
        if not self.history:
            return
        states = self.history[sorted(self.history)[pick % len(self.history)]]
        self._deliver(worker, states[version % len(states)])
        if process:
            self.workers[worker].webhook_processor.process_batch()

    def _deliver(self, worker: int, record: dict) -> None:
        """What the listener does with a delivery before it answers: parsed, stored in the inbox."""
        execution = parse_execution(record, self.settings.default_phone_region)
        self.workers[worker].inbox.accept(execution.id, execution.status, execution.updated_at,
                                          json.dumps(record).encode())
        Figures.webhooks += 1

    @precondition(lambda self: self.workers)
    @rule(worker=st.integers(0, 1), task=st.sampled_from([*JOB_NAMES, "webhooks"]), at_write=AT_WRITE)
    def crash_and_restart(self, worker, task, at_write):
        """The daemon dies at its `at_write`-th database write, and is started again."""
        trap = self.traps[worker]
        trap.arm(at_write, KeyboardInterrupt)  # a BaseException: nothing in the daemon catches it
        try:
            self._task(worker, task)
        except KeyboardInterrupt:
            Figures.crashes += 1
            self.workers[worker] = self._build(worker)
        else:
            trap.arm(10 ** 9, KeyboardInterrupt)  # never reached: disarmed

    @precondition(lambda self: self.workers)
    @rule(task=st.sampled_from([*JOB_NAMES, "webhooks"]), other=st.sampled_from([*JOB_NAMES, "webhooks"]),
          at_write=AT_WRITE, delivered=st.none() | st.integers(0, 30))
    def race(self, task, other, at_write, delivered):
        """Daemon B runs `other` whole while daemon A is about to make its `at_write`-th write;
        with `delivered`, Bolna has just posted that call's current state to B's listener."""
        def meanwhile():
            Figures.races += 1  # counted when it strikes, as crashes are: A reached its `at_write`-th write
            if delivered is not None and self.history:
                self._deliver(1, self.account.execution(sorted(self.history)[delivered % len(self.history)]))
            self._task(1, other)
        self.cues[0].update(remaining=at_write, action=meanwhile)
        try:
            self._task(0, task)
        finally:
            self.cues[0].clear()

    @precondition(lambda self: self.workers)
    @rule()
    def claim_expires_while_analyzing(self):
        """A waits for the LLM so long that its claim's lease expires; B takes the call over and
        analyzes it. A's answer then arrives (marked STALE when its claim was indeed taken)."""
        lease_length = timedelta(seconds=claim_lease_seconds(self.settings) + 1)
        first = self.workers[0]

        def meanwhile():
            Figures.expiries += 1
            self.clock.shift(lease_length)
            if not isinstance(self.mongo, mongomock.MongoClient):
                self._expire_leases()
            self._task(1, CALL_PROCESSOR)
            still_held = first.db[CALLS].count_documents({lease.BY: first.owner}) > 0
            self.groq.extra = self._answer(LIVE if still_held else STALE)
            # A's next request is under a new, live claim.
            self.groq.on_request(lambda: setattr(self.groq, "extra", self._answer(LIVE)))

        self.groq.on_request(meanwhile)
        try:
            self._task(0, CALL_PROCESSOR)
        finally:
            self.groq.clear_request_actions()
            self.groq.extra = self._answer(LIVE)

    def _answer(self, marker: str) -> dict:
        """What the fake LLM adds to its analyses: the marker, and the lead score chosen."""
        return {MARKER: marker, **({} if self.score is None else {"leadScore": self.score})}

    @rule(score=st.sampled_from([None, 15, 90]))
    def lead_score(self, score):
        """The LLM scores the next leads `score` (None: by the call, see CUSTOMER_TURNS): with a
        pipeline, a contact moves up or down a stage, or is kept from moving down."""
        self.score = score
        self.groq.extra = self._answer(LIVE)

    @precondition(lambda self: self.workers)
    @rule(phone=st.integers(0, len(PHONES) - 1), field=st.sampled_from(LOCKABLE), lock=st.booleans(),
          at_write=st.none() | st.integers(0, 3))
    def person_locks(self, phone, field, lock, at_write):
        """A person locks (or unlocks) a customer's field in the front end: now, or while daemon A
        syncs, before its `at_write`-th write to `customers` (0: after it read the first page's
        customers, before their upsert)."""
        key = parse_phone_key(PHONES[phone][0])

        def edit():
            Figures.locks += 1
            if lock:
                self.locked_ever.add((key, field))
            # As the front end writes, outside the daemons' hooks (serialized on mongomock as they are).
            HookedClient(self.mongo)[TEST_DB][CUSTOMERS].update_one(
                {"phone": key}, {"$addToSet" if lock else "$pull": {LOCKED: field}})
        if at_write is None:
            edit()
            return
        self.cues[0].update(remaining=at_write, action=edit, collection=CUSTOMERS)
        try:
            self._task(0, CRM_SYNC)
        finally:
            self.cues[0].clear()

    @precondition(lambda self: self.workers)
    @rule(pick=PICK)
    def reanalyze(self, pick):
        """`main.py reanalyze` of one call: a new analysis round."""
        if self.history:
            requeue(self.workers[0].db, call_id=sorted(self.history)[pick % len(self.history)])

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def safe_after_every_step(self):
        Figures.steps += 1
        if self.workers:
            check_safety(self.workers[0].db, self.account.ground_truth(), self.settings.default_phone_region,
                         self.initial_status, self.locked_ever)

    def _expire_leases(self) -> None:
        """Every claim's lease over. The clock moved past them already; a real server's clock does
        not follow this process's, so its leases are ended as tests/test_faults_mongo.py ends them."""
        for name in (CALLS, WEBHOOK_INBOX):
            self.workers[0].db[name].update_many({lease.UNTIL: {"$ne": None}},
                                                 {"$set": {lease.UNTIL: datetime(2000, 1, 1)}})

    def _fingerprint(self) -> tuple:
        db = self.workers[0].db
        return tuple(sorted(map(repr, db[name].find({}, {"_id": 0, "updatedAt": 0, "at": 0, "lastAnalyzedAt": 0,
                                                        **{name: 0 for name in lease.RELEASED}})))
                     for name in (CALLS, CUSTOMERS, CUSTOMER_CALLS, CONTACTS, ACTIVITIES))

    def _quiesce(self) -> None:
        """No crash, no race: every lease of a dead or slow daemon runs out, then both jobs and the
        inbox run until the database stops changing."""
        for cue in self.cues:
            cue.clear()
        for trap in self.traps:
            trap.arm(10 ** 9, KeyboardInterrupt)
        self.bolna.clear_actions(api_key=self.key)
        self.groq.clear_request_actions()
        self.clock.shift(timedelta(seconds=max(claim_lease_seconds(self.settings), INBOX_LEASE_SECONDS) + 1))
        self._expire_leases()
        before = None
        for _ in range(6):
            for worker in range(2):
                self._task(worker, "webhooks")
            for job in JOB_NAMES:
                self._task(0, job)
            after = self._fingerprint()
            if after == before:
                return
            before = after
        raise AssertionError("the jobs never stopped changing the database")

    def _check_exact(self) -> None:
        check_exact(self.workers[0].db, self.account.ground_truth(), self.settings.default_phone_region,
                    self.initial_status, self.locked_ever)


# -- the invariants, each with the rule it checks -------------------------------------------------

def parse_phone_key(raw: str) -> str:
    return normalize_phone(raw, "IN").key


def _terminal_calls(truth: dict[str, dict], region: str) -> dict[str, object]:
    parsed = {}
    for call_id, record in truth.items():
        try:
            execution = parse_execution(record, region)
        except MalformedExecution:
            continue
        if execution.terminal:
            parsed[call_id] = execution
    return parsed


def _links(db) -> dict[str, list[dict]]:
    by_phone: dict[str, list[dict]] = {}
    for link in db[CUSTOMER_CALLS].find():
        by_phone.setdefault(link["phone"], []).append(link)
    return by_phone


def check_safety(db, truth: dict[str, dict], region: str, initial: dict[str, str],
                 locked: set[tuple[str, str]]) -> None:
    """What holds at every moment, even right after a crash: nothing stored twice or invented, no
    call behind what it was, callCount never above the calls counted, the status and each field
    never from a call older than one already applied, no contact written by a stale claim, no
    analysis logged twice, every status change a real one, every value logged as held back one
    its call gave, on a field a person locked. A field a person locked is left out of the status
    and field checks: what it holds is the person's."""
    calls = list(db[CALLS].find({}, {"callId": 1, "status": 1, "bolnaUpdatedAt": 1}))
    assert len({c["callId"] for c in calls}) == len(calls), "a call was stored twice"
    for call in calls:
        assert call["callId"] in truth, f"call {call['callId']} invented"
        assert call["bolnaUpdatedAt"] <= parse_time(truth[call["callId"]]["updated_at"]), "a call from the future"
    terminal = _terminal_calls(truth, region)
    expected = expected_customers(truth, region)
    links = _links(db)
    customers = list(db[CUSTOMERS].find())
    assert len({c["phone"] for c in customers}) == len(customers), "a number has two customers"
    for customer in customers:
        if "callIds" in customer:
            continue  # a legacy record as an old version left it, not merged yet
        linked = links.get(customer["phone"], [])
        linked_ids = {link["callId"] for link in linked}
        assert linked_ids <= expected.get(customer["phone"], set()), "a call counted on the wrong customer"
        assert customer["callCount"] <= len(linked), "callCount above the calls linked"
        applied = [terminal[link["callId"]] for link in linked if link["applied"]]
        every = [terminal[call_id] for call_id in linked_ids]
        _check_status(customer, applied, every, locked)
        _check_fields(customer, applied, every, locked)
    _check_held_back(db, terminal, locked, exact=False)
    _check_contacts(db, exact=False)
    _check_analysis_activities(db, exact=False)
    _check_status_changes(db, initial, exact=False)
    _check_stage_changes(db, exact=False)


def check_exact(db, truth: dict[str, dict], region: str, initial: dict[str, str],
                locked: frozenset[tuple[str, str]] = frozenset()) -> None:
    """At quiescence: every final call stored once in its final state, every count exact, every
    status, field, contact and activity what the calls say."""
    terminal = _terminal_calls(truth, region)
    stored = {c["callId"]: c for c in db[CALLS].find({}, {"callId": 1, "status": 1, "bolnaUpdatedAt": 1})}
    lost = sorted(set(terminal) - set(stored))
    assert not lost, f"final calls never stored: {lost}"
    for call_id, execution in terminal.items():
        record = truth[call_id]
        assert (stored[call_id]["status"], stored[call_id]["bolnaUpdatedAt"]) == \
            (record["status"], parse_time(record["updated_at"])), f"call {call_id} is not in its final state"
    linked, expected = customer_call_ids(db), expected_customers(truth, region)
    counted = {call_id for ids in linked.values() for call_id in ids}
    wanted = {call_id for ids in expected.values() for call_id in ids}
    assert linked == expected, (f"the calls counted on customers are not Bolna's final calls: never counted "
                                f"{sorted(wanted - counted)}, not final or on another number {sorted(counted - wanted)}")
    assert_customers_match(db, truth, region)  # one link per terminal call, each applied; callCount exact
    links = _links(db)
    for customer in db[CUSTOMERS].find():
        every = [terminal[link["callId"]] for link in links.get(customer["phone"], [])]
        _check_status(customer, every, every, locked)
        _check_fields(customer, every, every, locked)
    _check_held_back(db, terminal, locked, exact=True)
    _check_contacts(db, exact=True)
    _check_analysis_activities(db, exact=True)
    _check_status_changes(db, initial, exact=True)
    _check_stage_changes(db, exact=True)


def _check_status(customer: dict, applied: list, every: list, locked: set[tuple[str, str]]) -> None:
    """The status is the highest by precedence of the calls counted: at least that of those
    applied, at most that of every call linked (a crash between the two leaves it in between)."""
    if not every or (customer["phone"], "status") in locked:
        return
    rank = RANKS.of(customer.get("status"))
    assert rank <= max(RANKS.of(customer_call(e).status) for e in every), "a status no counted call gave"
    if applied:
        best = max(RANKS.of(customer_call(e).status) for e in applied)
        assert rank >= best, f"status {customer.get('status')!r} is below a counted call's (rank {best})"


def _check_fields(customer: dict, applied: list, every: list, locked: set[tuple[str, str]]) -> None:
    """Each profile field holds the newest value: from a counted call no older than the newest
    applied call that names the field."""
    profiles = [(e.created_at, e.id, customer_call(e).profile) for e in every]
    newest_applied = {}
    for execution in applied:
        for name in customer_call(execution).profile:
            newest_applied[name] = max(newest_applied.get(name, (execution.created_at, execution.id)),
                                       (execution.created_at, execution.id))
    for name, floor in newest_applied.items():
        if (customer["phone"], name) in locked:
            continue
        sources = [(at, call_id) for at, call_id, profile in profiles
                   if profile.get(name) == customer.get(name) and (at, call_id) >= floor]
        assert sources, f"customer field {name!r} = {customer.get(name)!r} is not its newest value"


def _check_held_back(db, terminal: dict[str, object], locked: set[tuple[str, str]], *, exact: bool) -> None:
    """Every value a `held_back` activity names is the one its call gave, on a field a person
    locked on that call's number; every value a lock holds under `suggested` is logged, or
    recorded on its customer for the writer to log (a crash in between); at quiescence none is
    left pending."""
    # The model locks customer fields only: a contact's entry would be a value no lock held.
    for activity in db[ACTIVITIES].find({"type": HELD_BACK}):
        assert activity.get("record") == HELD_ON_CUSTOMER, "a held-back entry of a record never locked"
        call = customer_call(terminal[activity["callId"]])
        said = {"status": call.status, **call.profile}
        for name, value in activity["fields"].items():
            assert (activity["customerPhone"], name) in locked, f"a held-back {name!r} on a field never locked"
            assert said.get(name) == value, f"a held-back {name!r} its call {activity['callId']} did not give"
    for customer in db[CUSTOMERS].find({}, {"phone": 1, SUGGESTED: 1, PENDING_HELD_BACK: 1}):
        pending = {(entry["callId"], entry["field"]) for entry in customer.get(PENDING_HELD_BACK) or []}
        assert not (exact and pending), "a held-back value left unlogged on a customer"
        for name, held in (customer.get(SUGGESTED) or {}).items():
            logged = db[ACTIVITIES].find_one(held_back_key(held["callId"], 0, HELD_ON_CUSTOMER))
            assert (held["callId"], name) in pending or (logged and logged["fields"].get(name) == held["value"]), \
                f"a value a lock held back ({name!r} of call {held['callId']}) is not logged"


def _check_contacts(db, *, exact: bool) -> None:
    """A contact reflects only analyses written under a live claim: never a STALE answer, and (once
    its newest analyzed call is finished) exactly that call's stored analysis."""
    analyzed = {}
    for call in db[CALLS].find({"processed": True, "analysis.summary": {"$exists": True}}):
        if call.get("customerPhone"):
            analyzed.setdefault(call["customerPhone"], []).append(call)
    for contact in db[CONTACTS].find():
        marker = (contact.get("extra") or {}).get(MARKER)
        assert marker != STALE, "the contact holds an analysis written after its claim was taken over"
        calls = analyzed.get(contact["phone"])
        if not calls:
            assert not exact, "a contact without an analyzed call"
            continue
        newest = max(calls, key=lambda call: call["callAt"])
        if contact.get("analyzedCallAt") != newest["callAt"]:
            assert not exact, "the contact does not follow its newest analyzed call"
            continue
        analysis = newest["analysis"]
        assert marker == (analysis.get("extra") or {}).get(MARKER), "the contact holds another analysis than its call's"
        assert contact.get("tag") == analysis["tag"], "the contact's tag is not its newest call's"


def _check_analysis_activities(db, *, exact: bool) -> None:
    """At most one `ai_analysis` activity per call and round; exactly one for the round each
    analyzed call is in."""
    counts = Counter((a["callId"], a.get("round", 0)) for a in db[ACTIVITIES].find({"type": ACTIVITY_TYPE}))
    twice = [key for key, count in counts.items() if count > 1]
    assert not twice, f"an analysis logged twice: {twice}"
    if not exact:
        return
    for call in db[CALLS].find({"processed": True, "analysis.summary": {"$exists": True},
                                "customerPhone": {"$ne": None}}):
        key = (call["callId"], call.get("analysisRound", 0))
        assert counts[key] == 1, f"analysis of call {key[0]} round {key[1]} has no activity"


def _check_status_changes(db, initial: dict[str, str], *, exact: bool) -> None:
    """`status_change` activities are exactly the changes made. A status only moves to a higher
    (rank, call time), so in that order a customer's changes chain from no status (or a legacy
    record's, `initial`) to the current one: none twice, none from a status it did not hold."""
    by_phone: dict[str, list[dict]] = {}
    for activity in db[ACTIVITIES].find({"type": STATUS_CHANGE}):
        by_phone.setdefault(activity["customerPhone"], []).append(activity)
    customers = {c["phone"]: c for c in db[CUSTOMERS].find({}, {"phone": 1, "status": 1})}
    for phone, changes in by_phone.items():
        status = initial.get(phone)
        for change in sorted(changes, key=lambda change: (RANKS.of(change["to"]), change["callAt"], change["callId"])):
            assert change.get("from") == status, \
                f"a status change from {change.get('from')!r} logged where the status was {status!r}"
            status = change["to"]
        if exact:
            assert phone in customers and customers[phone].get("status") == status, \
                "the status changes do not end at the customer's status"
    if exact:
        for phone, customer in customers.items():
            if customer.get("status") not in (None, initial.get(phone)):
                assert phone in by_phone, "a customer's status never recorded as a change"


def _check_stage_changes(db, *, exact: bool) -> None:
    """`stage_change` activities are exactly the stage moves made: at most one per call and round,
    none from a stage to itself; at quiescence each contact's moves chain from no stage to its
    current one (out of no stage once more than into it, into the current stage once more than
    out of it, as many in as out for every other stage), and no contact that is not stored has any."""
    changes = list(db[ACTIVITIES].find({"type": STAGE_CHANGE}))
    counts = Counter((change["callId"], change.get("round", 0)) for change in changes)
    twice = [key for key, count in counts.items() if count > 1]
    assert not twice, f"a stage change logged twice: {twice}"
    moves: dict[object, Counter] = {}
    for change in changes:
        source, target = ((change.get(end) or {}).get("id") for end in ("from", "to"))
        assert source != target, f"a stage change from {source!r} to itself"
        moves.setdefault(change["contactId"], Counter()).update({source: -1, target: 1})
    if not exact:
        return
    Figures.stage_changes += len(changes)
    for contact in db[CONTACTS].find({}, {"stage": 1}):
        current = (contact.get("stage") or {}).get("id")
        balance = {stage: count for stage, count in moves.pop(contact["_id"], Counter()).items() if count}
        assert balance == ({} if current is None else {None: -1, current: 1}), \
            f"the stage changes logged ({balance}) do not lead to the contact's stage {current!r}"
    assert not moves, "stage changes logged for a contact that is not stored"


# -- the tests ------------------------------------------------------------------------------------

@pytest.fixture
def model_settings(settings):
    return settings.with_overrides(
        groq_api_keys=("groq-key",), llm_batch_mode="off", llm_concurrency=1, llm_calls_per_run=20,
        llm_batch_deadline_seconds=20.0, llm_timeout_seconds=10.0, http_max_attempts=2,
        analysis_extra_fields=(ExtraField(MARKER, "Which worker wrote this (test marker)"),),
        privacy_hash_key="a-test-key-of-32-characters-long", run_retention_days=365)


@pytest.fixture
def machine(model_settings):
    """SyncModel bound to one fake Bolna and one fake Groq for the whole test."""
    for name in ("examples", "steps", "crashes", "races", "expiries", "webhooks", "stage_changes", "locks"):
        setattr(Figures, name, 0)
    with FakeBolna([AGENT], [], api_key="unused-key", rate_limits=RateLimits(**RAISED_LIMITS)) as bolna, \
            FakeGroq(extra={MARKER: LIVE}) as groq:
        groq_settings = model_settings.with_overrides(groq_base_url=groq.base_url)
        yield type("BoundSyncModel", (SyncModel,), {"bolna": bolna, "groq": groq, "base_settings": groq_settings})
    print(f"\nmodel: {Figures.examples} examples, {Figures.steps} steps, {Figures.crashes} crashes injected, "
          f"{Figures.races} races, {Figures.expiries} claims expired mid-analysis, {Figures.webhooks} webhooks, "
          f"{Figures.stage_changes} stage changes audited at quiescence, {Figures.locks} locks set or lifted")


def test_sync_and_analysis_invariants_hold_under_crashes_races_and_clocks(machine):
    run_state_machine_as_test(machine, settings=profile("default"))


@pytest.mark.timeout(900)
def test_the_invariants_hold_on_a_real_server(machine, mongodb_uri):
    """A smaller profile against the test run's wire server (or MONGODB_URI): atomicity and
    conditional writes as a server does them, not as mongomock emulates them."""
    client = MongoClient(mongodb_uri, tz_aware=False, serverSelectionTimeoutMS=5000)
    try:
        on_server = type("ServerSyncModel", (machine,), {"new_mongo": staticmethod(lambda: client)})
        run_state_machine_as_test(on_server, settings=profile("wire"))
    finally:
        client.drop_database(TEST_DB)
        client.close()
