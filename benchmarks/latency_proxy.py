"""A TCP proxy on 127.0.0.1 that holds every chunk for a fixed delay in each direction, so a
benchmark against a local server sees the round trip of a real deployment (1 ms each way: a
server in the same region). Throughput is not limited: chunks are forwarded in order, each
`delay` after it was read, however many are in flight.

It runs as its own process (`DelayProxy` starts it), so its work never competes with the
benchmark for the GIL, which would add delay of its own; with threads, not asyncio, whose timers
round a millisecond's wait up to the next one or two:

    python -m benchmarks.latency_proxy --target 127.0.0.1:27017 --delay-ms 1
"""
from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

CHUNK = 256 * 1024


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    """Read chunks as they come; a second thread sends each one `delay` after it was read."""
    chunks: queue.SimpleQueue = queue.SimpleQueue()

    def forward() -> None:
        while (item := chunks.get()) is not None:
            due, data = item
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            try:
                target.sendall(data)
            except OSError:
                break
        for end in (target, source):  # the other side sees the close, and its pump ends too
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    threading.Thread(target=forward, daemon=True).start()
    try:
        while data := source.recv(CHUNK):
            chunks.put((time.monotonic() + delay, data))
    except OSError:
        pass
    chunks.put(None)


def _serve(target: tuple[str, int], delay: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)  # the port, for the parent
    while True:
        client, _ = listener.accept()
        try:
            server = socket.create_connection(target)
        except OSError:
            client.close()
            continue
        for end in (client, server):  # small messages must not wait for Nagle
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, server, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, delay), daemon=True).start()


class DelayProxy:
    """The proxy as a child process in front of `target` (host:port); `port` is where to connect."""

    def __init__(self, target: str, delay_ms: float):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency_proxy", "--target", target, "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.port = int(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to each chunk, each way")
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    _serve((host, int(port)), args.delay_ms / 1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
