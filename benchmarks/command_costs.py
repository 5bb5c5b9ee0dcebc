"""Where a first sync's database time goes, by command: both jobs over N new calls on a server
(the wire server with --wire-server, else MONGODB_URI), every command's duration as the server
answered it (pymongo command monitoring), summed by command, collection and filter fields.

    python -m benchmarks.command_costs --wire-server [--calls 10000]

Not part of the test run. Prints the wall time and a table, most expensive first."""
from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict

from pymongo import monitoring

from benchmarks import sync_bench
from benchmarks.harness import CountedMongo, Measurement, wire_server_if


class CommandCosts(monitoring.CommandListener):
    """Seconds, counts and operations (statements or documents) per (command, collection, filter fields, update form: a
    pipeline, or a document's operators)."""

    def __init__(self):
        self.costs: dict[tuple, list] = defaultdict(lambda: [0, 0.0, 0])
        self._started: dict[int, tuple] = {}

    def started(self, event):
        command = event.command
        target = command.get(event.command_name)
        key = (event.command_name, target if isinstance(target, str) else "")
        documents = len(command.get("updates") or command.get("documents") or [None])
        if event.command_name == "update":
            first = command["updates"][0]
            key += (",".join(sorted(first["q"])),
                    "pipeline" if isinstance(first["u"], list) else "document " + ",".join(sorted(first["u"])))
        self._started[event.request_id] = key, documents

    def succeeded(self, event):
        key, documents = self._started.pop(event.request_id, (None, 0))
        if key is not None:
            self.costs[key][0] += 1
            self.costs[key][1] += event.duration_micros / 1e6
            self.costs[key][2] += documents

    def failed(self, event):
        self._started.pop(event.request_id, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.command_costs", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--wire-server", action="store_true", help="start the test run's wire server and use it")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    costs = CommandCosts()
    monitoring.register(costs)  # before the benchmark's client is made: it is registered on it
    with wire_server_if(args.wire_server):
        if not CountedMongo.server_uri():
            parser.error("a server is needed: --wire-server, or MONGODB_URI")
        agents, executions = sync_bench._dataset(args.calls, span_days=20, seed=101)
        with sync_bench.fake_bolna(agents, executions) as bolna:
            started = time.monotonic()
            measured = sync_bench._ours(bolna, agents, Measurement(records=len(executions)), memory=False)
            wall = time.monotonic() - started
    print(f"first sync of {args.calls:,} calls: {wall:.1f} s wall, {measured.round_trips:,} round trips\n")
    print(f"{'seconds':>8}  {'count':>6}  {'ops':>6}  command")
    for key, (count, seconds, documents) in sorted(costs.costs.items(), key=lambda item: -item[1][1])[:15]:
        print(f"{seconds:8.2f}  {count:6d}  {documents:6d}  {' '.join(part for part in key if part)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
