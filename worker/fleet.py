"""Many accounts (TENANT_SOURCE=mongodb): the accounts of the CRM, synced by every replica that
runs this image, sharing the work through MongoDB with no configuration.

Every few seconds a replica re-reads the account list when it is due (TENANT_REFRESH_SECONDS),
then claims due accounts from the tenant schedule under a lease (services/tenancy/schedule.py),
TENANT_CONCURRENCY at a time, and runs both jobs for each with that account's own keys, limits and
view of the database (`AccountApp`). The lease is renewed while the jobs run; a replica that dies
stops renewing, and another takes its accounts over once the lease has run out. An account whose
Bolna key is refused is set aside until its key changes, and never holds up the others.

With WEBHOOK_PORT, each listed account has its own webhook URL (worker/webhook_listener.py); the
replica's one inbox processor writes every account's deliveries into that account's records.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Callable

from pymongo.database import Database

from services.bolna_client import BolnaAuthError, BolnaClient
from services.database import LLM_QUOTA, TENANT_SCHEDULE, WEBHOOK_INBOX, tenant_view
from services.run_records import describe_failure, failed_with
from services.server_clock import ServerClock
from services.tenancy.lease import LeaseKeeper
from services.tenancy.llm_quota import LlmQuota
from services.tenancy.schedule import TenantClaim, TenantSchedule
from services.tenancy.source import TenantSource
from services.tenancy.tenant import Tenant
from services.webhooks import LEASE_SECONDS, AccountWriters, Inbox
from utils.clock import utcnow
from utils.config import Settings
from utils.logging import log_context
from worker.app import AccountApp, Runtime, build_writers, new_owner
from worker.jobs import CALL_PROCESSOR, JOB_NAMES, ScheduledJob
from worker.health import RunMetrics, observe_accounts
from worker.webhook_listener import AccountRoutes

log = logging.getLogger(__name__)

ACCOUNTS_PASS = "accounts"  # the daemon's one scheduled job with many accounts


def account_settings(settings: Settings, tenant: Tenant, llm_limit: int | None = None) -> Settings:
    """The daemon's settings with what the account brings: its keys, agents, region and limits."""
    changes: dict = {"bolna_api_key": tenant.bolna_api_key, "bolna_agent_ids": tenant.agent_ids}
    if tenant.groq_api_key:
        changes["groq_api_keys"] = (tenant.groq_api_key,)
    if tenant.phone_region:
        changes["default_phone_region"] = tenant.phone_region
    if llm_limit is not None:
        changes["llm_batch_limit"] = llm_limit
    if tenant.bolna_requests_per_minute:
        # Below Bolna's limits for the organisation, never above them.
        changes["bolna_listing_rate_per_minute"] = min(settings.bolna_listing_rate_per_minute,
                                                       tenant.bolna_requests_per_minute)
        changes["bolna_rate_per_minute"] = min(settings.bolna_rate_per_minute, tenant.bolna_requests_per_minute)
    return settings.with_overrides(**changes)


class Fleet(Runtime):
    def __init__(self, settings: Settings, db: Database, mongo_client=None,
                 clock: Callable[[], datetime] | None = None):
        """`clock`: what leases and quota windows are measured by; the database server's unless given."""
        self.settings = settings
        self.db = db
        self.mongo_client = mongo_client
        self.owner = new_owner()
        self.stop = threading.Event()
        self.clock = clock = clock or ServerClock(db).now
        interval = timedelta(minutes=settings.sync_interval_minutes)
        self.source = TenantSource(settings, db)
        self.schedule = TenantSchedule(db[TENANT_SCHEDULE], self.owner, settings.tenant_lease_seconds,
                                       interval.total_seconds(), clock=clock)
        self.quota = (LlmQuota(db[LLM_QUOTA], settings.llm_global_limit, interval, clock)
                      if settings.llm_global_limit is not None else None)
        # Across accounts: counts by job and status, and accounts by state; never by account
        # (bounded cardinality).
        metrics = RunMetrics(JOB_NAMES, queue_depth=None, llm_configured=bool(settings.groq_api_keys),
                             refresh_after_runs=False)
        observe_accounts(metrics, self.schedule.counts)
        self._tenants: dict[object, Tenant] = {}
        self._loaded_at: float | None = None
        self._refresh_lock = threading.Lock()
        self._progress_at: datetime | None = None
        # Webhooks: every account's deliveries land in one inbox, each entry under its account.
        self._serve(metrics, Inbox(db[WEBHOOK_INBOX], self.owner, LEASE_SECONDS, clock=clock), self._writers_for,
                    lambda token: AccountRoutes(token, self.inbox_of), tenant_view(db, None))  # the replica's tally

    def prepare(self) -> None:
        super().prepare()
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the accounts when the last read is TENANT_REFRESH_SECONDS old: new accounts join
        the schedule, a changed key lifts a refusal, accounts gone are retired."""
        with self._refresh_lock:
            if not force and self._loaded_at is not None and (
                    time.monotonic() - self._loaded_at < self.settings.tenant_refresh_seconds):
                return
            listed = self.source.load()
            self.schedule.register([(tenant.id, tenant.key_fingerprint) for tenant in listed.tenants])
            self._tenants = {tenant.id: tenant for tenant in listed.tenants}
            if self.webhook_routes is not None:
                self.webhook_routes.update(self._tenants)
            self._loaded_at = time.monotonic()
            log.info("%d account(s) listed, %d skipped", len(listed.tenants), len(listed.skipped),
                     extra={"event": "tenants_loaded"})

    def work(self, ahead: timedelta = timedelta(0)) -> int:
        """One pass (the daemon's job every TENANT_POLL_SECONDS): sync due accounts, a few at a
        time, until none is due or the daemon stops. Returns how many were synced. `ahead`: also
        the accounts due within that time (`main.py once` passes an interval: every account)."""
        with self._running():
            self.refresh()
            due_by = self.schedule.clock() + ahead if ahead else None
            with ThreadPoolExecutor(self.settings.tenant_concurrency, thread_name_prefix="account") as pool:
                synced = sum(pool.map(lambda _: self._drain(due_by), range(self.settings.tenant_concurrency)))
            self._progress_at = utcnow()
            return synced

    def _drain(self, due_by: datetime | None) -> int:
        synced = 0
        while not self.stop.is_set() and (claim := self.schedule.claim_due(due_by)) is not None:
            try:
                with log_context(account=str(claim.tenant_id)):
                    self.sync(claim, due_by)
                synced += 1
            except Exception as exc:  # noqa: BLE001 - one account's failure must not end the pass for the others
                log.exception("account %s: its sync failed; it is tried again at its next slot", claim.tenant_id,
                              extra={"event": "tenant_failed"})
                _quietly(self.schedule.finish, claim, {"status": "failed", "error": describe_failure(exc)}, due_by)
        return synced

    def sync(self, claim: TenantClaim, due_by: datetime | None = None) -> None:
        """Both jobs for the claimed account, under its lease; the schedule records the result
        (its next slot after `due_by`, the pass's horizon, so the pass does not meet it again)."""
        tenant = self._tenant(claim.tenant_id)
        if tenant is None:  # retired by the new read (a release alone would be claimed again at once)
            self.schedule.release(claim)
            return
        grant = self.quota.take(tenant.llm_batch_limit or self.settings.llm_batch_limit) if self.quota else None
        settings = account_settings(self.settings, tenant, grant.count if grant else tenant.llm_batch_limit)
        lease = LeaseKeeper(self.schedule, claim, self.stop)
        # The account's jobs stop on the lease's stop: the process's, or the lease's own end.
        app = AccountApp(settings, self.db, BolnaClient.from_settings(settings, stop=lease.stop), tenant.id)
        self.attach(app)
        runs: list[dict] = []
        try:
            with lease:
                for job in JOB_NAMES:
                    runs.append(app.run_job(job))
                    if _refused(runs[-1]) or self.stop.is_set() or lease.lost:
                        break
        finally:
            app.close()
            if grant is not None:
                grant.settle(_llm_used(runs))
        self._record(claim, tenant, runs, lease.lost, due_by)
        self._progress_at = utcnow()

    def _record(self, claim: TenantClaim, tenant: Tenant, runs: list[dict], lease_lost: bool,
                due_by: datetime | None) -> None:
        if lease_lost:  # logged by the lease; whoever holds the account now records its own sync
            return
        if any(_refused(run) for run in runs):
            log.warning("account %s: Bolna refused its key; set aside until the key changes", tenant.label,
                        extra={"event": "tenant_refused"})
            self.schedule.mark_refused(claim, "Bolna refused the account's API key",
                                       key_fingerprint=tenant.key_fingerprint)
        elif len(runs) < len(JOB_NAMES):  # stopping: another replica (or this one, restarted) syncs it soon
            self.schedule.release(claim)
        else:
            self.schedule.finish(claim, {"status": _worst(runs), "runs": {run["job"]: run["_id"] for run in runs},
                                         "errors": sum(run.get("errorCount", 0) for run in runs)}, after=due_by)

    def scheduled_jobs(self) -> list[ScheduledJob]:
        return [ScheduledJob(ACCOUNTS_PASS, self.work, self.settings.tenant_poll_seconds)]

    def last_success_at(self, job: str) -> datetime | None:
        """Health: when this replica last got on, by finishing an account's sync or a pass that
        found none due. Under a standing backlog no pass ends, and the replica is healthy while it
        keeps finishing accounts; one that finishes nothing is not. (Each account's own runs are in
        /metrics and `status`.)"""
        return self._progress_at

    def _writers_for(self, tenant_id) -> AccountWriters | None:
        """The writers of a delivery's account; None when the account is no longer listed."""
        tenant = self._tenant(tenant_id)
        return None if tenant is None else build_writers(tenant_view(self.db, tenant.id),
                                                         account_settings(self.settings, tenant))

    def _tenant(self, tenant_id) -> Tenant | None:
        """The listed account; one unknown to this replica's last read (listed by another replica's
        newer read, or gone since ours) after reading the list again, None if it is gone."""
        if tenant_id not in self._tenants:
            self.refresh(force=True)
        return self._tenants.get(tenant_id)


def _quietly(finish, claim: TenantClaim, result: dict, due_by: datetime | None) -> None:
    try:
        finish(claim, result, after=due_by)
    except Exception:  # noqa: BLE001 - MongoDB away: the lease runs out and another claim takes it
        log.warning("could not record an account's failed sync", exc_info=True)


def _refused(run: dict) -> bool:
    return failed_with(run, BolnaAuthError)


def _worst(runs: list[dict]) -> str:
    statuses = {run["status"] for run in runs}
    return next((status for status in ("failed", "partial") if status in statuses), "ok")


def _llm_used(runs: list[dict]) -> int:
    counts = next((run.get("counts", {}) for run in runs if run["job"] == CALL_PROCESSOR), {})
    return int(counts.get("analyzed", 0) + counts.get("failed", 0))
