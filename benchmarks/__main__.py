"""`python -m benchmarks [scenario ...] [--quick]`: one table row per scenario and variant,
callsync next to the naive baseline, measured in this one process. Not part of the test run."""
from __future__ import annotations

import argparse
import logging
import os
import time

from benchmarks import backfill_bench, mapping_bench, sync_bench
from benchmarks.baseline import sequential_llm
from benchmarks.harness import CountedMongo, Measurement, ping_ms, wire_server_if
from utils.config import Settings
from utils.table import format_table

# Scenario sizes: (full run, --quick), on a server (the wire server or MONGODB_URI) and on
# mongomock. mongomock has no indexes: every upsert scans its collection, so writing grows with
# the square of the size there; the sizes it cannot reach are left to a server.
SIZES = {
    "first_sync": {"server": (10_000, 1_000), "mongomock": (1_000, 300)},
    "steady_state": {"server": ((10_000, 100_000), (1_000, 10_000)), "mongomock": ((10_000, 100_000), (1_000, 10_000))},
    "steady_new_calls": {"server": ((10_000, 100_000), (1_000, 10_000)), "mongomock": ((10_000,), (1_000,))},
    "full_resync": {"server": ((10_000, 100_000), (1_000, 10_000)), "mongomock": ((1_000, 10_000), (300, 1_000))},
    "changed_resync": {"server": ((10_000,), (1_000,)), "mongomock": ((1_000,), (300,))},
    "backfill": {"server": (10_000, 1_000), "mongomock": (1_000, 300)},
    "backfill_sequential": {"server": (1_000, 300), "mongomock": (1_000, 300)},
    "mapping": {"server": (50_000, 5_000), "mongomock": (50_000, 5_000)},
}
# The backfill's minute, in seconds (Bolna's is 60): the limits' time-scale (backfill_bench).
BACKFILL_MINUTE = 30.0
SCENARIOS = ("first_sync", "steady_state", "full_resync", "changed_resync", "backfill", "mapping", "heuristic",
             "analyzer")
# Asked by name only, each printing its own figures (not rows of the sync table).
OWN_REPORTS = ("hostile",)
HEADERS = ["scenario", "variant", "wall s", "server CPU s", "client CPU s", "Bolna req", "429s", "Mongo RT", "exec/s", "peak MB"]
# `--calls N`: the size of the scenarios measured at one size, in place of SIZES.
_calls: int | None = None


def _size(name: str, quick: bool):
    if _calls and isinstance(SIZES[name]["server"][0], int):
        return _calls
    return SIZES[name]["server" if CountedMongo.server_uri() else "mongomock"][quick]


def _row(scenario: str, variant: str, m: Measurement, *, rate: bool = False) -> list:
    return [scenario, variant, f"{m.seconds:.2f}", f"{m.server_cpu:.2f}" if m.server_cpu is not None else "-",
            f"{m.client_cpu:.2f}" if m.client_cpu else "-",
            m.requests if m.requests else "-",
            m.rate_limited if m.requests else "-",
            m.round_trips if m.round_trips else "-", f"{m.per_second:,.0f}" if rate else "-",
            f"{m.peak_mb:.1f}" if m.peak_mb is not None else "-"]


def first_sync(quick: bool) -> list[list]:
    total = _size("first_sync", quick)
    ours, naive = sync_bench.first_sync(total)
    ratio = naive.round_trips / max(ours.round_trips, 1)
    return [_row(f"first sync {total:,}", "callsync (both jobs)", ours, rate=True),
            _row(f"first sync {total:,}", f"naive ({ratio:.1f}x the round trips)", naive, rate=True)]


def steady_state(quick: bool) -> list[list]:
    rows = []
    for new, sizes in ((0, _size("steady_state", quick)), (100, _size("steady_new_calls", quick))):
        for history in sizes:
            ours, naive = sync_bench.steady_state(history, new)
            rows.append(_row(f"steady {new} new / {history:,}", "callsync (both jobs)", ours))
            rows.append(_row(f"steady {new} new / {history:,}", "naive, from its cursor", naive))
    return rows


def full_resync(quick: bool) -> list[list]:
    return [_row(f"--full re-sync of {history:,}", "callsync (both jobs)", sync_bench.full_resync(history), rate=True)
            for history in _size("full_resync", quick)]


def changed_resync(quick: bool) -> list[list]:
    rows = []
    for history in _size("changed_resync", quick):
        ours, naive = sync_bench.changed_resync(history)
        rows.append(_row(f"--full, {history:,} changed", "callsync (both jobs)", ours, rate=True))
        rows.append(_row(f"--full, {history:,} changed", "naive, one upsert per record", naive, rate=True))
    return rows


def backfill(quick: bool) -> list[list]:
    total = _size("backfill", quick)
    ours, floor = backfill_bench.backfill(total, BACKFILL_MINUTE)
    sequential_total = _size("backfill_sequential", quick)
    naive = backfill_bench.sequential(sequential_total, BACKFILL_MINUTE)
    return [_row(f"backfill {total:,} trimmed", f"floor {floor:.1f} s; callsync at {ours.seconds / floor:.2f}x",
                 ours, rate=True),
            _row(f"backfill {sequential_total:,} trimmed", "naive, one request at a time", naive, rate=True)]


def mapping(quick: bool) -> list[list]:
    total = _size("mapping", quick)
    ours, again, e164, naive = mapping_bench.mapping(total)
    return [_row(f"mapping {total:,}", "callsync, new numbers", ours, rate=True),
            _row(f"mapping {total:,}", "callsync, numbers seen before", again, rate=True),
            _row(f"mapping {total:,}", "callsync, new numbers, all E.164", e164, rate=True),
            _row(f"mapping {total:,}", "naive (no phone cache)", naive, rate=True)]


def heuristic(quick: bool) -> list[list]:
    """The offline analyzer, in this process on one core: no database, no network."""
    from benchmarks import heuristic_bench

    t = heuristic_bench.per_call(quick)
    print(f"offline analyzer (CPU time, one core): {t.mean_ms:.3f} ms per call on average over {t.calls:,} labelled calls "
          f"(99th percentile {t.p99_ms:.2f} ms); {t.longest_ms:.2f} ms for a transcript of "
          f"{heuristic_bench.MAX_CHARS:,} characters, the longest it reads; the word model trained "
          f"in {t.training_ms:.0f} ms, once per process")
    return [_row(f"offline analyzer {t.calls:,} calls",
                 f"{t.mean_ms:.3f} ms/call, p99 {t.p99_ms:.2f}, longest {t.longest_ms:.2f}",
                 Measurement(seconds=t.seconds, records=t.calls), rate=True)]


def analyzer(quick: bool) -> list[list]:
    """callsync's own numbers come from the analyzer's benchmark; the baseline sends the same
    number of requests one after another against the same 1 s latency."""
    from benchmarks import analyzer_bench
    from fakes.groq_server import FakeGroq

    print("analyzer batch (benchmarks.analyzer_bench):")
    started = time.perf_counter()
    analyzer_bench.main()
    ours = Measurement(seconds=time.perf_counter() - started, records=analyzer_bench.CALLS)
    with FakeGroq(latency=analyzer_bench.LATENCY_SECONDS) as fake:
        started = time.perf_counter()
        requests = sequential_llm(fake.base_url, [f"call {n}" for n in range(analyzer_bench.CALLS)],
                                  Settings().groq_model)
        naive = Measurement(seconds=time.perf_counter() - started, requests=requests)
    print()
    return [_row(f"analyzer batch {analyzer_bench.CALLS}", "callsync (incl. setup)", ours),
            _row(f"analyzer batch {analyzer_bench.CALLS}", "sequential LLM calls", naive)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"any of {', '.join(SCENARIOS)} (default: all); or {', '.join(OWN_REPORTS)}: "
                             "what hostile input costs (benchmarks/hostile_bench.py)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, for a smoke run")
    parser.add_argument("--wire-server", action="store_true",
                        help="start the test run's wire server (tests.wire_server: SecantusDB in its own venv) "
                             "and measure against it, as against MONGODB_URI")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="reach the server through a proxy adding this delay each way "
                             "(benchmarks/latency_proxy.py; 1 ms each way: a server in the same region)")
    parser.add_argument("--calls", type=int,
                        help="the size of first_sync, backfill and mapping, in place of the default")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS) - set(OWN_REPORTS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SCENARIOS + OWN_REPORTS)}")
    own = [name for name in args.scenarios if name in OWN_REPORTS]
    args.scenarios = [name for name in args.scenarios if name not in OWN_REPORTS]
    if args.delay_ms and not (args.wire_server or CountedMongo.server_uri()):
        parser.error("--delay-ms needs a server: --wire-server, or MONGODB_URI")
    global _calls
    _calls = args.calls
    logging.disable(logging.WARNING)  # the runs' own logs would bury the table
    if args.wire_server:
        from tests.wire_server import PACKAGE
        backend = f"the wire server ({PACKAGE}, in memory, 127.0.0.1)"
    else:
        backend = "a server at MONGODB_URI" if CountedMongo.server_uri() else "mongomock"
    if args.delay_ms:
        backend += f", reached through a proxy adding {args.delay_ms:g} ms each way (benchmarks/latency_proxy.py)"
    with wire_server_if(args.wire_server, args.delay_ms):
        print("MongoDB: " + backend + ("; round trips counted by command monitoring (pymongo.monitoring)"
                                       if CountedMongo.server_uri() else
                                       "; round trips counted per collection call (fakes.mongo_hooks)"))
        if CountedMongo.server_uri():
            print(f"a ping's round trip: {ping_ms():.2f} ms (median of 100)")
        print()
        if own:
            from benchmarks import hostile_bench
            print("\n".join(hostile_bench.run(args.quick)), flush=True)
        rows = _run(args) if args.scenarios or not own else []
    if rows:
        print()
        print(format_table(HEADERS, rows))
    return 0


def _run(args) -> list[list]:
    rows = []
    for name in args.scenarios or SCENARIOS:
        started = time.perf_counter()
        rows += globals()[name](args.quick)
        load = ", ".join(f"{figure:.1f}" for figure in os.getloadavg())
        print(f"  {name} done in {time.perf_counter() - started:.0f} s (load average {load})", flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
