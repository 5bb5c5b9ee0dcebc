"""The public webhook listener (WEBHOOK_PORT): `POST /webhooks/bolna/<token>`, served by waitress
(a production WSGI server) in a thread of the daemon, apart from the internal health port.

It accepts fast and never loses: a delivery is checked (sender, token, size, JSON with an id and
a date), stored in the inbox, and answered 200; the processor writes it moments later. Nothing a
caller sends produces a traceback or a 500: every failure is an answer chosen here, and a
database that cannot store the delivery answers 503, which Bolna retries.

Who may deliver: Bolna signs nothing, so besides the path's token the documented protection is the
list of addresses it sends from. Behind a reverse proxy the sender is in X-Forwarded-For, which
anyone can write: it is believed only from the configured proxies.

Which account a delivery is for: the token in its URL says. One account has WEBHOOK_TOKEN itself;
with many each has its own, HMAC-SHA256(key=WEBHOOK_TOKEN, message=str(account id)) in hex, so no
token is stored anywhere and one account's URL tells nothing of another's (docs/scaling.md).

Why waitress, and the bounds added to it against connection floods (`ConnectionLimits`,
`BoundedServer`, which serves the health listener too): docs/reliability.md, "Hostile network input".
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import resource
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from pymongo.errors import PyMongoError
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from models.execution import MalformedExecution, parse_execution
from services.run_records import describe_failure
from services.webhooks import DeliveryTally, Inbox, InboxFull, InboxProcessor

log = logging.getLogger(__name__)

PATH_PREFIX = "/webhooks/bolna/"
THREADS = 4
# Bodies larger than this are refused by waitress itself, before the application counts them.
HARD_BODY_FACTOR = 4
# A throttled account's deliveries are asked again after this: time for the processor to drain
# thousands of waiting deliveries.
RETRY_AFTER_SECONDS = 30
# Descriptors kept for the rest of the process (MongoDB's pool, Bolna and Groq clients, files)
# beside a listener's connections.
RESERVED_DESCRIPTORS = 512
ACCEPTS_PER_PASS = 64
# SO_LINGER on, 0 s: close() resets the connection, so no TIME_WAIT is kept for a flood's sockets.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

NOT_FOUND = ("404 Not Found", {"error": "not found"})
JSON = "application/json"


def respond(start_response, status: str, body: dict | bytes, content_type: str, *headers) -> list[bytes]:
    """One whole answer, never cached (a WSGI application's return value)."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(payload))),
                            ("Cache-Control", "no-store"), *headers])
    return [payload]


def _networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class SenderPolicy:
    def __init__(self, allowed: Iterable[str] | None, trusted_proxies: Iterable[str] = ()):
        """`allowed`: addresses or ranges that may deliver; None lets anyone (the token still holds)."""
        self.allowed = None if allowed is None else _networks(allowed)
        self.trusted_proxies = _networks(trusted_proxies)

    def admits(self, peer: str, forwarded_for: str | None) -> bool:
        """The delivering address is allowed: the peer, or, when the peer is a trusted proxy, the
        nearest address in X-Forwarded-For that is not one of the trusted proxies (the hops before
        it were written by the client and prove nothing)."""
        if self.allowed is None:
            return True
        sender = _address(peer)
        if self.is_trusted_proxy(peer) and forwarded_for:
            # A hop that is no address (None): a proxy we trust wrote it, and it is refused.
            hops = reversed(forwarded_for.split(","))
            sender = next((_address(hop) for hop in hops if not self.is_trusted_proxy(hop)), sender)
        return sender is not None and any(sender in network for network in self.allowed)

    def is_trusted_proxy(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and any(address in network for network in self.trusted_proxies)


def account_token(secret: str, account_id: object) -> str:
    return hmac.new(secret.encode(), str(account_id).encode(), hashlib.sha256).hexdigest()


def _digest(token: str) -> bytes:
    # WSGI paths are latin-1 text of the raw bytes.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class AccountRoutes:
    """Each served token, leading to its account's inbox: WEBHOOK_TOKEN itself to the one account,
    or each listed account's own (`account_token`). The map is replaced whole when the accounts are
    read again (`update`): an account that joins gets its URL then, one that leaves loses it."""

    def __init__(self, inbox_of: Callable[[object], Inbox], tokens: dict[str, object] | None = None):
        self._inbox_of = inbox_of
        self.update(tokens or {})

    def update(self, tokens: dict[str, object]) -> None:
        """`tokens`: each token to the id of its account."""
        self._accounts = {_digest(token): account_id for token, account_id in tokens.items()}

    def inbox_for(self, token: str) -> Inbox | None:
        # Looked up by a digest of the token: how long a lookup takes depends on the digest, which
        # tells a guesser nothing about the token, nor how much of a guess was right.
        accounts, digest = self._accounts, _digest(token)  # `update` replaces the map, never changes it
        return self._inbox_of(accounts[digest]) if digest in accounts else None


@dataclass(frozen=True)
class ConnectionLimits:
    connections: int = 4096  # open at once, all peers together
    per_address: int = 32  # open at once from one peer address
    idle_seconds: float = 10.0  # a connection with nothing sent nor answered this long is closed
    request_seconds: float = 15.0  # a request still arriving this long after its first byte is closed
    check_seconds: float = 1.0  # how often the two timeouts above are checked
    backlog: int = 1024  # connections the kernel queues before they are accepted


def raise_descriptor_limit(wanted: int) -> int:
    """The soft limit on open descriptors raised towards `wanted` (never above the hard limit, never
    lowered); the limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


class _Channel(HTTPChannel):
    """A connection that remembers when its current request began."""
    request_began: float | None = None

    def received(self, data):
        if self.request is None and data:
            self.request_began = time.monotonic()
        return super().received(data)


class BoundedServer(TcpWSGIServer):
    """waitress serving `application` from its own loop in a thread named `name`, bounded against
    floods by `limits` (docs/reliability.md): the webhook listener's server and the health listener's."""
    channel_class = _Channel

    def __init__(self, application, name: str, *, host: str, port: int, limits: ConnectionLimits,
                 unbounded_peer: Callable[[str], bool], **options):
        """`unbounded_peer(address)`: True for a peer the per-address bound does not apply to (a
        trusted proxy). `options`: waitress' own settings."""
        self._unbounded_peer = unbounded_peer
        available = raise_descriptor_limit(limits.connections + RESERVED_DESCRIPTORS) - RESERVED_DESCRIPTORS
        if available < limits.connections:
            limits = replace(limits, connections=max(available, 64))
            log.warning("the process may open %d descriptors: the %s holds at most %d connections; "
                        "raise `ulimit -n` for more", available + RESERVED_DESCRIPTORS, name, limits.connections,
                        extra={"event": "webhook_descriptor_limit"})
        self.limits = limits
        # The trigger's pipe is written by other threads (stop, waitress' task threads finishing a
        # response) and closed by stop: once closed, its descriptor numbers may already be another
        # file's, which a late write would corrupt (or fail with EBADF).
        self._trigger_lock = threading.Lock()
        self._trigger_closed = False
        adj = Adjustments(host=host, port=port, connection_limit=limits.connections, ident="",
                          channel_timeout=limits.idle_seconds, cleanup_interval=limits.check_seconds,
                          backlog=limits.backlog, asyncore_use_poll=True, **options)
        super().__init__(application, map={}, adj=adj, sockinfo=adj.listen[0])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.effective_host, int(self.effective_port)  # waitress gives text

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Idempotent: a daemon's stop never raises."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.pull_trigger()  # wakes the loop's poll at once
        self._thread.join(10)
        # Closed once the loop ended, never under a poll running in another thread; the trigger
        # first, under its lock, never under a pull.
        self.task_dispatcher.shutdown()
        self.close()
        wasyncore.close_all(self._map)

    def _serve(self) -> None:
        while not self._stopping.is_set():  # one pass at a time, so a stop is seen
            wasyncore.loop(timeout=1.0, use_poll=True, map=self._map, count=1)

    def handle_accept(self):
        # waitress accepts one connection per pass of its loop, and a pass walks every open
        # connection: under a flood, a delivery waited behind the whole accept queue. Up to a batch
        # at a time here. The connections of each peer are counted afresh, as open now.
        per_peer = Counter(channel.addr[0] for channel in self.active_channels.values())
        for _ in range(ACCEPTS_PER_PASS):
            if len(self._map) >= self.adj.connection_limit:
                return
            try:
                accepted = self.accept()
                if accepted is None:
                    return  # the queue is empty
                conn, addr = accepted
                self.set_socket_options(conn)
            except OSError:
                continue  # the peer left before it was accepted; nothing to serve
            peer = addr[0]
            if per_peer[peer] >= self.limits.per_address and not self._unbounded_peer(peer):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                conn.close()
                continue
            try:
                self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
            except OSError:  # the peer reset it meanwhile
                conn.close()
                continue
            per_peer[peer] += 1

    def maintenance(self, now):
        """waitress closes the idle connections; here also those whose request is arriving too slowly."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.limits.request_seconds
        for channel in self.active_channels.values():
            if channel.request is not None and not channel.requests and channel.request_began < cutoff:
                channel.will_close = True

    def pull_trigger(self) -> None:
        """Wake the loop's poll, unless the server is closed (nothing to wake)."""
        with self._trigger_lock:
            if not self._trigger_closed:
                self.trigger.pull_trigger()

    def close(self) -> None:
        with self._trigger_lock:
            self._trigger_closed = True
            super().close()  # closes the trigger too


class WebhookListener:
    """The WSGI application and the server it runs in. `routes`: the token in the path to the inbox
    of its account; `processor`: woken when a delivery was stored, stopped with the listener;
    `limits`: how many connections, from one address and in all, and for how long
    (docs/reliability.md)."""

    def __init__(self, routes: AccountRoutes, senders: SenderPolicy, tally: DeliveryTally, *,
                 max_body_bytes: int, region: str, host: str, port: int,
                 limits: ConnectionLimits = ConnectionLimits(), processor: InboxProcessor | None = None):
        self.routes = routes
        self.senders = senders
        self.tally = tally
        self.max_body_bytes = max_body_bytes
        self.region = region
        self.processor = processor
        self._server = BoundedServer(
            self, "webhook-listener", host=host, port=port, limits=limits, unbounded_peer=senders.is_trusted_proxy,
            threads=THREADS, max_request_body_size=max_body_bytes * HARD_BODY_FACTOR,
            # X-Forwarded-For is judged by SenderPolicy against WEBHOOK_TRUSTED_PROXIES, not cleared.
            clear_untrusted_proxy_headers=False)
        self.address = self._server.address

    def start(self) -> WebhookListener:
        self._server.start()
        log.info("webhook listener on http://%s:%d%s<token>", *self.address, PATH_PREFIX,
                 extra={"event": "webhook_listening"})
        return self

    def stop(self) -> None:
        self._server.stop()
        # The processor after: what the listener accepted until then is in the inbox, for this
        # processor's last batch or for the next start.
        if self.processor is not None:
            self.processor.stop()

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        headers = []
        try:
            status, body = self._handle(environ)
        except InboxFull:
            # Not stored and not lost: Bolna retries a non-2xx answer, and the poll reads the call anyway.
            self.tally.count("throttled")
            status, body = "429 Too Many Requests", {"error": "too many deliveries of this account waiting"}
            headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
        except PyMongoError as exc:
            log.warning("a webhook delivery could not be stored (%s); answered 503 for Bolna to retry",
                        describe_failure(exc), extra={"event": "webhook_store_failed"})
            status, body = "503 Service Unavailable", {"error": "try again later"}
        except Exception as exc:  # noqa: BLE001 - a bug of ours must not show a caller a traceback
            log.error("webhook delivery failed (%s)", type(exc).__name__, extra={"event": "webhook_error"})
            status, body = "503 Service Unavailable", {"error": "try again later"}
        return respond(start_response, status, body, JSON, *headers)

    def _handle(self, environ: dict) -> tuple[str, dict]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PATH_PREFIX):
            return NOT_FOUND
        if not self.senders.admits(environ.get("REMOTE_ADDR", ""), environ.get("HTTP_X_FORWARDED_FOR")):
            self.tally.count("rejected_sender")
            return "403 Forbidden", {"error": "forbidden"}
        inbox = self.routes.inbox_for(path[len(PATH_PREFIX):])
        if inbox is None:
            self.tally.count("rejected_token")
            return NOT_FOUND
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "POST only"}
        # waitress has the body (up to HARD_BODY_FACTOR times the limit): one byte past the limit tells.
        body = environ["wsgi.input"].read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            self.tally.count("too_large")
            return "413 Content Too Large", {"error": f"the body exceeds {self.max_body_bytes} bytes"}
        try:
            execution = parse_execution(json.loads(body), self.region)
        except (ValueError, RecursionError, MalformedExecution) as exc:
            self.tally.count("malformed")
            reason = str(exc) if isinstance(exc, MalformedExecution) else "the body is not JSON"
            return "400 Bad Request", {"error": reason[:200]}
        if inbox.accept(execution.id, execution.status, execution.updated_at, body):
            self.tally.count("accepted")
            if self.processor is not None:
                self.processor.wake()
            return "200 OK", {"status": "accepted"}
        self.tally.count("duplicate")
        return "200 OK", {"status": "duplicate"}


def serve_webhooks(app) -> WebhookListener:
    """Start the processor and the listener on WEBHOOK_HOST:WEBHOOK_PORT for `app` (a
    worker.app.Runtime: one account or many); stopping the listener stops the processor after it."""
    settings = app.settings
    senders = SenderPolicy(settings.webhook_allowed_ips, settings.webhook_trusted_proxies)
    if senders.allowed is None:
        log.warning("WEBHOOK_ALLOWED_IPS=any: any address may deliver webhooks; only the token keeps others out",
                    extra={"event": "webhook_senders_open"})
    processor = app.webhook_processor.start()
    try:
        return WebhookListener(app.webhook_routes, senders, app.deliveries,
                               max_body_bytes=settings.webhook_max_body_bytes,
                               region=settings.default_phone_region, host=settings.webhook_host,
                               port=settings.webhook_port, processor=processor).start()
    except BaseException:
        processor.stop()
        raise
