"""Command line: `run` (the daemon), `once`, `demo`, `status`, `reanalyze`, `evaluate`, `forget`, `review`,
`webhook-url`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from datetime import datetime, timedelta

from pymongo.errors import ConfigurationError, ConnectionFailure, PyMongoError

from services.run_records import describe_failure
from utils.clock import naive_utc
from utils.config import ConfigError, Settings, load_settings, secret_texts
from utils.logging import redact, setup_logging
from worker.app import JOB_NAMES

log = logging.getLogger("callsync")


class UsageError(Exception):
    """A command that cannot start with this configuration; the message says what to do."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Bolna -> MongoDB call-intelligence sync worker")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="the daemon: both jobs every SYNC_INTERVAL_MINUTES (default)")
    once = commands.add_parser("once", help="run the jobs now, print each run record as a JSON line")
    once.add_argument("--job", choices=JOB_NAMES, help="only this job")
    once.add_argument("--full", action="store_true", help="ignore the cursors and backfill BACKFILL_DAYS")
    demo = commands.add_parser("demo", help="zero-configuration demo against a local fake Bolna API and in-memory MongoDB")
    demo.add_argument("--tenants", type=_positive, help="many-accounts mode: N accounts in `users`, each with its "
                                                        "own Bolna key, synced as replicas sync them")
    status = commands.add_parser("status", help="last runs, queue depth, tags and lead statuses; with many "
                                                "accounts, the accounts by state (--account: one account's)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=_positive, default=50, help="with many accounts: list at most N (default 50)")
    reanalyze = commands.add_parser("reanalyze", help="put calls back in the analysis queue")
    which = reanalyze.add_mutually_exclusive_group(required=True)
    which.add_argument("--call-id", help="one call, by Bolna execution id")
    which.add_argument("--since", type=_date, help="every call made since this date (YYYY-MM-DD or ISO 8601, UTC)")
    evaluate = commands.add_parser("evaluate", help="the analyzer's accuracy on the labelled call set "
                                                    "(Groq with GROQ_API_KEY, else the offline heuristic)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.add_argument("--limit", type=_positive, help="only the first N labelled calls")
    evaluate.add_argument("--dataset", help="another labelled set (JSON lines, as evaluation/labelled_calls.jsonl)")
    review = commands.add_parser("review", help="stage moves waiting for a person (confidence below "
                                                "AUTO_ASSIGN_MIN_CONFIDENCE), oldest first")
    review.add_argument("--json", action="store_true", help="machine-readable output")
    review.add_argument("--limit", type=_positive, default=100, help="at most N entries (default 100)")
    forget = commands.add_parser("forget", help="erase a person's number everywhere and keep it out of later syncs")
    forget.add_argument("--phone", required=True, help="the number, in any spelling")
    forget.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    forget.add_argument("--as-stored", action="store_true",
                        help="the exact text of a number that is not valid (stored as received)")
    for command in (status, reanalyze, review, forget):
        command.add_argument("--account", help="with TENANT_SOURCE=mongodb: the account (its id in "
                                               "TENANTS_COLLECTION) this command is about")
    hook = commands.add_parser("webhook-url", help="the webhook URL to configure at Bolna (WEBHOOK_PUBLIC_URL + "
                                                   "token); --apply sets it on the agent")
    hook.add_argument("--agent", help="the Bolna agent id")
    hook.add_argument("--apply", action="store_true", help="set it on the agent through Bolna's API")
    hook.add_argument("--account", help="with TENANT_SOURCE=mongodb: the account whose URL it is (its own token "
                                        "and, with --apply, its Bolna key)")
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


def _require_server(settings: Settings, command: str, needs_bolna: bool = True) -> None:
    if not settings.mongodb_uri:
        if command in ("status", "review", "webhook-url"):
            raise UsageError(f"MONGODB_URI is not set: `{command}` reads the database the daemon writes. "
                             "Set MONGODB_URI (see .env.example).")
        raise UsageError("MONGODB_URI is not set: this command writes to MongoDB and will not keep data "
                         "in memory. Set MONGODB_URI (see .env.example), or try `python main.py demo`.")
    if needs_bolna and not settings.bolna_api_key and settings.tenant_source == "env":
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
            if args.tenants:
                from worker.demo_accounts import run_accounts_demo
                return run_accounts_demo(settings, args.tenants)
            from worker.demo import run_demo
            return run_demo(settings)
        if command == "evaluate":
            from worker.evaluate import run_evaluation
            return run_evaluation(settings, args)
        if command == "webhook-url":
            return _webhook_url(settings, args)
        _require_server(settings, command, needs_bolna=command in ("run", "once"))
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


def _build(settings: Settings, *, prepare: bool = True, account: str | None = None, many: bool = False):
    """`prepare=False` for read-only commands: no index builds, no marking of other runs.
    `account`: with many accounts, the one the command is about (required there, unless `many`:
    then every account, as the daemon runs them)."""
    from worker.app import Runtime, connect

    tenant_id = None
    client = None
    if account is not None and settings.tenant_source != "mongodb":
        raise UsageError("--account names one of many accounts: it needs TENANT_SOURCE=mongodb")
    if settings.tenant_source == "mongodb" and (account is not None or not many):
        if account is None:
            raise UsageError("TENANT_SOURCE=mongodb: name the account with --account ID")
        client = connect(settings)
        try:
            tenant_id = _account_id(client[settings.mongodb_db], settings, account)
        except UsageError:
            client.close()
            raise
    runtime = Runtime.build(settings, mongo_client=client, tenant_id=tenant_id)
    if prepare:
        runtime.prepare()
    return runtime


def _run(settings: Settings, _args) -> int:
    from worker.daemon import run_daemon

    return run_daemon(_build(settings, many=True))


def _once(settings: Settings, args) -> int:
    """The jobs once now, each run record printed as a JSON line. With many accounts, every
    account's, whatever their due times (each account's next slot then follows from it)."""
    many = settings.tenant_source == "mongodb"
    if many and (args.job or args.full):
        raise UsageError("--job and --full run one account's jobs: with TENANT_SOURCE=mongodb, they are not offered")
    runtime = _build(settings, many=True)
    failed = False
    printing = threading.Lock()  # accounts are synced side by side: one whole line at a time

    def show(record: dict) -> None:
        nonlocal failed
        with printing:
            failed |= record["status"] == "failed"
            print(json.dumps(record, default=str), flush=True)

    runtime.subscribe(show)
    try:
        if many:
            runtime.work(ahead=timedelta(minutes=settings.sync_interval_minutes))
        else:
            for name in [args.job] if args.job else JOB_NAMES:
                runtime.run_job(name, full=args.full)
    finally:
        runtime.close()
    return 1 if failed else 0


def _status(settings: Settings, args) -> int:
    from worker.status import collect, show

    runtime = _build(settings, prepare=False, account=args.account, many=True)
    try:
        return show(collect(runtime, args.limit), args.json)
    finally:
        runtime.close()


def _reanalyze(settings: Settings, args) -> int:
    app = _build(settings, account=args.account)
    try:
        count = app.account.call_queue.requeue(call_id=args.call_id, since=args.since)
    finally:
        app.close()
    print(f"{count} call(s) queued for analysis on the next run")
    return 0 if count or args.since else 1


def _forget(settings: Settings, args) -> int:
    from services.privacy.hashing import hasher_for, require_hasher
    from worker.forget import BadNumber, parse_number, run_forget

    try:
        phone = parse_number(args.phone, settings.default_phone_region, as_stored=args.as_stored)
    except BadNumber as exc:
        raise UsageError(str(exc)) from None
    if not args.dry_run:
        require_hasher(hasher_for(settings.privacy_hash_key))  # before anything is read or written
    app = _build(settings, account=args.account)
    try:
        print(run_forget(settings, app.db, phone, dry_run=args.dry_run))
    finally:
        app.close()
    return 0


def _review(settings: Settings, args) -> int:
    from worker.review import show_reviews

    app = _build(settings, prepare=False, account=args.account)
    try:
        return show_reviews(app.db, as_json=args.json, limit=args.limit)
    finally:
        app.close()


def _webhook_url(settings: Settings, args) -> int:
    """Needs no database with one account: only the settings, and Bolna's API with --apply."""
    from worker.webhook_url import WebhookUrlError, check_settings, run_webhook_url

    if args.account is not None and settings.tenant_source != "mongodb":
        raise UsageError("--account names one of many accounts: it needs TENANT_SOURCE=mongodb")
    try:
        check_settings(settings)
        account = None
        if settings.tenant_source == "mongodb":
            if args.account is None:
                raise UsageError("TENANT_SOURCE=mongodb: each account has its own URL; name it with --account ID")
            _require_server(settings, "webhook-url", needs_bolna=False)
            account = _listed_account(settings, args.account)
        return run_webhook_url(settings, args.agent, args.apply, account)
    except WebhookUrlError as exc:
        raise UsageError(str(exc)) from None


def _listed_account(settings: Settings, text: str):
    """The account `text` names, as the daemon serves it (TENANTS_FILTER, its keys readable)."""
    from services.tenancy.source import TenantSource
    from services.tenancy.tenant import UnusableTenant
    from worker.app import connect

    client = connect(settings)
    try:
        db = client[settings.mongodb_db]
        tenant = TenantSource(settings, db).find(_account_id(db, settings, text))
    except UnusableTenant as exc:
        raise UsageError(str(exc)) from None
    finally:
        client.close()
    if tenant is None:
        raise UsageError(f"account {text!r} is not served: TENANTS_FILTER does not list it")
    return tenant


def _account_id(db, settings: Settings, text: str) -> object:
    """The stored `_id` `--account` names: an ObjectId when it is one's 24 hex digits and such an
    account exists (a CRM written in JavaScript stores those), else the text itself."""
    from bson import ObjectId

    accounts = db[settings.tenants_collection]
    for candidate in ([ObjectId(text)] if ObjectId.is_valid(text) else []) + [text]:
        if accounts.find_one({"_id": candidate}, {"_id": 1}) is not None:
            return candidate
    raise UsageError(f"no account {text!r} in the {accounts.name!r} collection")


_COMMANDS = {"run": _run, "once": _once, "status": _status, "reanalyze": _reanalyze, "forget": _forget,
             "review": _review}
