"""The webhook listener under connection floods (slowloris): idle and slow clients are dropped,
one address holds a bounded number of connections, and a delivery is still answered at once while
a thousand idle connections are held open. Over real sockets on 127.0.0.0/8 (every address in it
is this machine's loopback, so a test can connect from many)."""
from __future__ import annotations

import selectors
import socket
import time
from contextlib import contextmanager

import pytest

from services.database import WEBHOOK_INBOX
from tests.helpers import build_app
from tests.test_webhooks import bolna, deliver, hook_settings, started, state_of  # noqa: F401 - fixtures
from worker.webhook_listener import ConnectionLimits, SenderPolicy, WebhookListener, raise_descriptor_limit

pytestmark = pytest.mark.timeout(120)

FLOOD = 1000
PER_ADDRESS = ConnectionLimits().per_address


def _address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def idle_connections(target: tuple[str, int], count: int, sources: list[str]):
    """`count` connections to `target` that send nothing, spread over the `sources` addresses;
    every one closed when the block ends."""
    # Both ends of each connection are in this process: the client's socket and the listener's.
    needed = 2 * count + 256
    if raise_descriptor_limit(needed) < needed:
        pytest.fail(f"this test needs {needed} open descriptors; the hard limit (ulimit -Hn) is lower")
    held: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((sources[n % len(sources)], 0))
            sock.settimeout(10)
            try:
                sock.connect(target)
            except ConnectionResetError:
                pass  # refused by the listener before connect() returned: closed_by_server sees it
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_by_server(sockets: list[socket.socket], within: float, expected: int | None = None) -> set:
    """The sockets the server closed (end of stream or reset) within `within` seconds, or as soon
    as `expected` of them were."""
    closed: set = set()
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        give_up = time.monotonic() + within
        while (expected is None or len(closed) < expected) and time.monotonic() < give_up:
            for key, _ in selector.select(timeout=max(0.0, give_up - time.monotonic())):
                try:
                    data = key.fileobj.recv(1)
                except OSError:  # reset, or refused before connect() returned
                    data = b""
                if not data:
                    closed.add(key.fileobj)
                    selector.unregister(key.fileobj)
    return closed


def test_a_delivery_is_accepted_within_a_second_while_1000_idle_connections_are_held(
        hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app, processor=False)
    # From 50 addresses, 20 each: within the per-address bound, so what is tested is the flood.
    sources = [f"127.0.1.{n}" for n in range(1, 51)]
    with idle_connections(_address(base), FLOOD, sources) as flood:
        # Once this is answered, every connection opened before it was accepted by the listener.
        assert deliver(base, state_of("warm-up", "completed", 3)).status_code == 200
        started_at = time.monotonic()
        answer = deliver(base, state_of("f-1", "completed", 3))
        elapsed = time.monotonic() - started_at
        assert answer.status_code == 200 and answer.json() == {"status": "accepted"}
        assert elapsed < 1.0, f"answered in {elapsed:.2f} s under {FLOOD} idle connections"
        # The flood is still held open, not shed to make room.
        assert not closed_by_server(flood, within=0.2)
    assert app.db[WEBHOOK_INBOX].count_documents({"callId": "f-1"}) == 1


def test_one_address_holds_a_bounded_number_of_connections_and_others_are_served(
        hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app, processor=False)
    extra = 5
    with idle_connections(_address(base), PER_ADDRESS + extra, ["127.0.2.1"]) as from_one:
        refused = closed_by_server(from_one, within=5.0, expected=extra)
        assert len(refused) == extra, f"{len(refused)} of {PER_ADDRESS + extra} refused"
        kept = [sock for sock in from_one if sock not in refused]
        assert not closed_by_server(kept, within=0.3)  # the bound's worth stays open
        # Another address is served meanwhile.
        assert deliver(base, state_of("p-1", "completed", 3)).status_code == 200
    assert app.db[WEBHOOK_INBOX].count_documents({"callId": "p-1"}) == 1


def test_idle_and_trickling_clients_are_dropped_after_a_short_timeout(hook_settings, mongo, bolna):
    app = build_app(hook_settings, mongo, bolna)
    limits = ConnectionLimits(idle_seconds=1.0, request_seconds=2.0, check_seconds=0.2)
    listener = WebhookListener(app.webhook_routes, SenderPolicy(("127.0.0.1",)), app.deliveries,
                               max_body_bytes=hook_settings.webhook_max_body_bytes, region="IN",
                               host="127.0.0.1", port=0, limits=limits).start()
    try:
        with idle_connections(listener.address, 2, ["127.0.0.1"]) as (idle, trickling):
            request = b"POST /webhooks/bolna/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            started_at = time.monotonic()
            dropped: dict = {}
            # A byte every 0.25 s keeps the trickling one active: only the request's deadline ends it.
            for byte in request * 2:
                if trickling in dropped or time.monotonic() - started_at > 8:
                    break
                try:
                    trickling.send(bytes([byte]))
                except OSError:
                    dropped[trickling] = time.monotonic() - started_at
                    break
                for sock in closed_by_server([s for s in (idle, trickling) if s not in dropped], within=0.25):
                    dropped[sock] = time.monotonic() - started_at
            assert idle in dropped and dropped[idle] < 1.0 + 1.5
            assert trickling in dropped and 2.0 <= dropped[trickling] < 2.0 + 1.5
    finally:
        listener.stop()


def test_a_trusted_proxy_is_not_bounded_per_address(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app, processor=False, webhook_trusted_proxies=("127.0.3.0/24",))
    with idle_connections(_address(base), PER_ADDRESS + 5, ["127.0.3.1"]) as from_proxy:
        assert deliver(base, state_of("x-1", "completed", 3)).status_code == 200  # all accepted by now
        assert not closed_by_server(from_proxy, within=0.3)
