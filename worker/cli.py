"""Command line: `run` (the daemon), `once`, `demo` (worker/demo.py), `status`, `reanalyze`,
`evaluate` (worker/evaluate.py), `forget`, `review`, `webhook-url`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from contextlib import closing
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import ConfigurationError, ConnectionFailure, PyMongoError

from services.accounts.source import AccountSource, UnusableAccount
from services.bolna_client import BolnaClient, BolnaError
from services.database import STAGE_REVIEWS
from services import privacy
from services.run_records import describe_failure
from utils.clock import naive_utc
from utils.config import ConfigError, Settings, load_settings, secret_texts
from utils.logging import redact, setup_logging
from utils.phone import Phone, mask_phone, normalize_phone
from utils.table import format_table
from worker.app import JOB_NAMES, Runtime, connect
from worker.daemon import run_daemon
from worker.evaluate import run_evaluation
from worker.status import collect, show, to_json
from worker.webhook_listener import PATH_PREFIX, account_token

log = logging.getLogger(__name__)

# What `forget` does to each collection's records of the number.
ERASED = {
    "customers": "deleted", "customerCalls": "deleted (links counting the calls)",
    "calls": "kept without number, transcript, recording, extracted data or analysis text",
    "contacts": "deleted", "activities": "deleted (status changes, AI decisions, stage moves)",
    "stageReviews": "deleted (stage suggestions waiting for a person)",
    "followUps": "no longer fetched by id",
    "webhookInbox": "deleted (webhook deliveries waiting to be processed)",
}
REVIEW_COLUMNS = ("createdAt", "contactId", "customerPhone", "callId", "pipelineId", "currentStage", "suggestedStage",
                  "leadScore", "confidence", "reasoning")


class UsageError(Exception):
    """A command that cannot start with this configuration; the message says what to do."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Bolna -> MongoDB call-intelligence sync worker")
    parser.set_defaults(account=None)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="the daemon: both jobs every SYNC_INTERVAL_MINUTES (default)")
    once = commands.add_parser("once", help="run the jobs now, print each run record as a JSON line")
    once.add_argument("--job", choices=JOB_NAMES, help="only this job")
    once.add_argument("--full", action="store_true", help="ignore the cursors and backfill BACKFILL_DAYS")
    demo = commands.add_parser("demo", help="zero-configuration demo against a local fake Bolna API and in-memory MongoDB")
    # --tenants: its former name, still accepted.
    demo.add_argument("--accounts", "--tenants", type=_positive,
                      help="many-accounts mode: N accounts in `users`, each with its own Bolna key, synced as "
                           "replicas sync them")
    status = commands.add_parser("status", help="last runs, queue depth, tags and lead statuses; with many "
                                                "accounts, the accounts by state (--account: one account's)")
    status.add_argument("--limit", type=_positive, default=50, help="with many accounts: list at most N (default 50)")
    reanalyze = commands.add_parser("reanalyze", help="put calls back in the analysis queue")
    which = reanalyze.add_mutually_exclusive_group(required=True)
    which.add_argument("--call-id", help="one call, by Bolna execution id")
    which.add_argument("--since", type=_date, help="every call made since this date (YYYY-MM-DD or ISO 8601, UTC)")
    evaluate = commands.add_parser("evaluate", help="the analyzer's accuracy on the labelled call set "
                                                    "(Groq with GROQ_API_KEY, else the offline heuristic)")
    evaluate.add_argument("--limit", type=_positive, help="only the first N labelled calls")
    evaluate.add_argument("--dataset", help="another labelled set (JSON lines, as evaluation/labelled_calls.jsonl)")
    review = commands.add_parser("review", help="stage moves waiting for a person (confidence below "
                                                "AUTO_ASSIGN_MIN_CONFIDENCE), oldest first")
    review.add_argument("--limit", type=_positive, default=100, help="at most N entries (default 100)")
    for command in (status, evaluate, review):
        command.add_argument("--json", action="store_true", help="machine-readable output")
    forget = commands.add_parser("forget", help="erase a person's number everywhere and keep it out of later syncs")
    forget.add_argument("--phone", required=True, help="the number, in any spelling")
    forget.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    forget.add_argument("--as-stored", action="store_true",
                        help="the exact text of a number that is not valid (stored as received)")
    hook = commands.add_parser("webhook-url", help="the webhook URL to configure at Bolna (WEBHOOK_PUBLIC_URL + "
                                                   "token); --apply sets it on the agent")
    hook.add_argument("--agent", help="the Bolna agent id")
    hook.add_argument("--apply", action="store_true", help="set it on the agent through Bolna's API")
    for command in (status, reanalyze, review, forget, hook):
        command.add_argument("--account", help="with ACCOUNT_SOURCE=mongodb: the account (its id in "
                                               "ACCOUNTS_COLLECTION) this command is about")
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r}") from None
    # Stored times are naive UTC; a given zone is converted, no zone means UTC.
    return naive_utc(moment)


def _require_server(settings: Settings, command: str) -> None:
    if not settings.mongodb_uri:
        if command in ("status", "review", "webhook-url"):
            raise UsageError(f"MONGODB_URI is not set: `{command}` reads the database the daemon writes. "
                             "Set MONGODB_URI (see .env.example).")
        raise UsageError("MONGODB_URI is not set: this command writes to MongoDB and will not keep data "
                         "in memory. Set MONGODB_URI (see .env.example), or try `python main.py demo`.")
    if command in ("run", "once") and not settings.bolna_api_key and settings.account_source == "env":
        raise UsageError("BOLNA_API_KEY is not set (see .env.example), or try `python main.py demo`.")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format,
                      secrets=secret_texts(settings),
                      # evaluate's stdout is its report (JSON with --json), once's its run records, one
                      # JSON object a line: their logs go beside them, to stderr.
                      stream=sys.stderr if command in ("evaluate", "once") else None)
        if command == "demo":
            from worker.demo import run_demo
            return run_demo(settings, args.accounts)
        if command == "evaluate":
            return run_evaluation(settings, args)
        many = settings.account_source == "mongodb"
        if args.account is not None and not many:
            raise UsageError("--account names one of many accounts: it needs ACCOUNT_SOURCE=mongodb")
        if command != "webhook-url" or many:  # webhook-url needs no database with one account
            _require_server(settings, command)
        if many and args.account is None and command in ("reanalyze", "forget", "review", "webhook-url"):
            raise UsageError("ACCOUNT_SOURCE=mongodb: name the account with --account ID")
        return _COMMANDS[command](settings, args)
    except (ConfigError, UsageError) as exc:
        print(f"callsync: {exc}", file=sys.stderr)
        return 2
    except (ConnectionFailure, ConfigurationError) as exc:
        # Down at start-up (or, for mongodb+srv://, its DNS records not found): one clear line and
        # a failure exit, so a supervisor retries later.
        reason = str(exc).split(" (configured timeouts")[0][:300] or type(exc).__name__
        print(f"callsync: MongoDB is not reachable (MONGODB_URI): {redact(reason)}", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        # E.g. an index that existing data prevents, or a user without the rights to build it.
        details = getattr(exc, "details", None) or {}
        reason = redact(str(details.get("errmsg", "")))[:300]
        print(f"callsync: MongoDB refused the start-up ({describe_failure(exc)}): {reason}", file=sys.stderr)
        return 1


def _build(settings: Settings, *, prepare: bool = True, account: str | None = None):
    """What a command runs on: the accounts the daemon serves (ACCOUNT_SOURCE), or the one of many
    that `account` names. `prepare=False` for read-only commands: no index builds, no marking of
    other runs."""
    client = None
    account_id = None
    if account is not None:
        client = connect(settings)
        try:
            account_id = _account_id(client[settings.mongodb_db], settings, account)
        except UsageError:
            client.close()
            raise
    runtime = Runtime.build(settings, mongo_client=client, account_id=account_id)
    if prepare:
        runtime.prepare()
    return runtime


def _run(settings: Settings, _args) -> int:
    return run_daemon(_build(settings))


def _once(settings: Settings, args) -> int:
    """The jobs once now, each run record printed as a JSON line. With many accounts, every
    account's, whatever their due times (each account's next slot then follows from it)."""
    many = settings.account_source == "mongodb"
    if many and (args.job or args.full):
        raise UsageError("--job and --full run one account's jobs: with ACCOUNT_SOURCE=mongodb, they are not offered")
    failed = False
    printing = threading.Lock()  # accounts are synced side by side: one whole line at a time

    def show(record: dict) -> None:
        nonlocal failed
        with printing:
            failed |= record["status"] == "failed"
            print(json.dumps(record, default=str), flush=True)

    with closing(_build(settings)) as runtime:
        runtime.subscribe(show)
        if many:
            runtime.work(ahead=timedelta(minutes=settings.sync_interval_minutes))
        else:
            for name in [args.job] if args.job else JOB_NAMES:
                runtime.run_job(name, full=args.full)
    return 1 if failed else 0


def _status(settings: Settings, args) -> int:
    with closing(_build(settings, prepare=False, account=args.account)) as runtime:
        return show(collect(runtime, args.limit), args.json)


def _reanalyze(settings: Settings, args) -> int:
    with closing(_build(settings, account=args.account)) as app:
        count = app.account.call_queue.requeue(call_id=args.call_id, since=args.since)
    print(f"{count} call(s) queued for analysis on the next run")
    return 0 if count or args.since else 1


def _forget(settings: Settings, args) -> int:
    """Erase one person's number everywhere and keep it out of later syncs
    (services/privacy.py). The number is never printed: only its last four digits."""
    phone = _phone(args.phone, settings.default_phone_region, as_stored=args.as_stored)
    # Checked before anything is read or written.
    hasher = None if args.dry_run else privacy.hasher_for(settings.privacy_hash_key, required=True)
    shown = mask_phone(phone.key)
    with closing(_build(settings, account=args.account)) as app:
        try:
            if args.dry_run:
                counts = privacy.Eraser(app.db, settings.default_phone_region).find_person(phone).counts()
                header = f"{shown}: dry run, nothing changed. An erasure would affect:"
            else:
                counts = privacy.forget(app.db, phone, hasher, settings.default_phone_region)
                header = (f"{shown}: erased, and on the suppression list: later syncs skip this number."
                          + ("" if any(counts.values()) else " Nothing was left to remove."))
        except privacy.AgentLineError as exc:
            print(f"callsync: {exc}", file=sys.stderr)
            return 1
    rows = [[name, counts[name], ERASED[name]] for name in privacy.COLLECTIONS]
    print(header + "\n" + format_table(["collection", "documents", "what happens"], rows, max_width=80))
    return 0


def _phone(text: str, region: str, *, as_stored: bool) -> Phone:
    """Any spelling of a valid number; `as_stored`: the exact text of an invalid one, which the
    daemon keeps as received (`phoneValid: false`)."""
    if as_stored:
        if not text.strip():
            raise UsageError("--phone is empty")
        return Phone(raw=text, e164=None)
    phone = normalize_phone(text, region)
    if phone is None:
        raise UsageError("--phone has no digits: give the person's number, in any spelling "
                         "(international with +, or national as dialled)")
    if not phone.valid:
        raise UsageError(f"--phone {mask_phone(text)} is not a valid number in DEFAULT_PHONE_REGION={region}: "
                         "write it with its country code (+...), or, to erase records stored under exactly "
                         "this text (numbers the daemon could not read are kept as received), add --as-stored")
    return phone


def _review(settings: Settings, args) -> int:
    with closing(_build(settings, prepare=False, account=args.account)) as app:
        return show_reviews(app.db, as_json=args.json, limit=args.limit)


def show_reviews(db: Database, *, as_json: bool, limit: int) -> int:
    """The stage moves the analysis was not sure enough to make, waiting for a person to accept or
    dismiss them in the CRM front end (`stage_reviews`, status `open`); oldest first, as the
    `status_createdAt` index reads them."""
    cursor = db[STAGE_REVIEWS].find({"status": "open"}, {name: 1 for name in REVIEW_COLUMNS},
                                    sort=[("createdAt", 1)], limit=limit)
    reviews = [{**review, "customerPhone": mask_phone(review.get("customerPhone") or "")} for review in cursor]
    if as_json:
        print(to_json(reviews))
        return 0
    if not reviews:
        print("no open stage reviews")
        return 0
    print(f"{len(reviews)} open stage review(s), oldest first (accept or dismiss them in the CRM)")
    print(format_table(
        ["created", "contact", "phone", "call", "from", "suggested", "score", "confidence", "reasoning"],
        [[r.get("createdAt"), str(r.get("contactId")), r["customerPhone"], r.get("callId"),
          (r.get("currentStage") or {}).get("name"), (r.get("suggestedStage") or {}).get("name"),
          r.get("leadScore"), r.get("confidence"), r.get("reasoning")] for r in reviews], max_width=40))
    return 0


def _webhook_url(settings: Settings, args) -> int:
    """The URL to configure at Bolna for this daemon's listener (WEBHOOK_PUBLIC_URL + the token
    path), and with `--apply` set on the agent through Bolna's API (`PATCH /v2/agent/{id}`,
    `agent_config.webhook_url`). With many accounts the URL is the account's own (its token
    derived from WEBHOOK_TOKEN, worker/webhook_listener.py) and `--apply` uses the account's Bolna
    key. The URL holds the token: it is printed for the person who asked, and never logged."""
    if not settings.webhook_public_url:
        raise UsageError("WEBHOOK_PUBLIC_URL is not set: the listener's base URL as Bolna reaches it, "
                         "e.g. https://hooks.example.com (your reverse proxy; see the README, Webhooks)")
    if not settings.webhook_token:
        raise UsageError("WEBHOOK_TOKEN is not set: e.g. `openssl rand -hex 24`, the same the daemon runs with")
    token = settings.webhook_token
    if settings.account_source == "mongodb":
        # The account as the daemon serves it (ACCOUNTS_FILTER, its keys readable).
        with closing(connect(settings)) as client:
            db = client[settings.mongodb_db]
            try:
                account = AccountSource(settings, db).find(_account_id(db, settings, args.account))
            except UnusableAccount as exc:
                raise UsageError(str(exc)) from None
        if account is None:
            raise UsageError(f"account {args.account!r} is not served: ACCOUNTS_FILTER does not list it")
        token = account_token(settings.webhook_token, account.id)
        settings = settings.with_overrides(bolna_api_key=account.bolna_api_key)
    url = f"{settings.webhook_public_url}{PATH_PREFIX}{token}"
    if not args.apply:
        print(url)
        if args.agent:
            print(f"(not changed yet: run again with --apply to set it on agent {args.agent})")
        return 0
    if not args.agent:
        raise UsageError("--apply needs --agent: the Bolna agent whose webhook URL to set")
    if not settings.bolna_api_key:
        raise UsageError("BOLNA_API_KEY is not set: --apply changes the agent through Bolna's API")
    with closing(BolnaClient.from_settings(settings)) as client:
        try:
            client.set_webhook_url(args.agent, url)
        except BolnaError as exc:
            print(f"callsync: Bolna did not set the webhook URL of agent {args.agent}: {exc}", file=sys.stderr)
            return 1
    log.info("webhook URL of agent %s set to %s%s<token>", args.agent, settings.webhook_public_url, PATH_PREFIX,
             extra={"event": "webhook_url_set"})
    print(f"agent {args.agent}: webhook URL set to {url}")
    return 0


def _account_id(db, settings: Settings, text: str) -> object:
    """The stored `_id` `--account` names: an ObjectId when it is one's 24 hex digits and such an
    account exists (a CRM written in JavaScript stores those), else the text itself."""
    accounts = db[settings.accounts_collection]
    for candidate in ([ObjectId(text)] if ObjectId.is_valid(text) else []) + [text]:
        if accounts.find_one({"_id": candidate}, {"_id": 1}) is not None:
            return candidate
    raise UsageError(f"no account {text!r} in the {accounts.name!r} collection")


_COMMANDS = {"run": _run, "once": _once, "status": _status, "reanalyze": _reanalyze, "forget": _forget,
             "review": _review, "webhook-url": _webhook_url}
