"""The public webhook listener (WEBHOOK_PORT): `POST /webhooks/bolna/<token>`, served by waitress
(a production WSGI server) in a thread of the daemon, apart from the internal health port.

It accepts fast and never loses: a delivery is checked (sender, token, size, JSON with an id and
a date), stored in the inbox, and answered 200; the processor writes it moments later. Nothing a
caller sends produces a traceback or a 500: every failure is an answer chosen here, and a
database that cannot store the delivery answers 503, which Bolna retries."""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Iterable

from pymongo.errors import PyMongoError
from waitress import wasyncore

from models.execution import MalformedExecution, parse_execution
from services.run_records import describe_failure
from services.webhooks.inbox import Inbox, InboxFull
from services.webhooks.routes import AccountRoutes, SingleRoute
from services.webhooks.senders import SenderPolicy
from services.webhooks.tally import DeliveryTally
from worker.bounded_server import BoundedServer, ConnectionLimits

log = logging.getLogger(__name__)

PATH_PREFIX = "/webhooks/bolna/"
THREADS = 4
# Bodies larger than this are refused by waitress itself, before the application counts them.
HARD_BODY_FACTOR = 4
# A throttled account's deliveries are asked again after this: time for the processor to drain
# thousands of waiting deliveries.
RETRY_AFTER_SECONDS = 30

Answer = tuple[str, dict]
NOT_FOUND: Answer = ("404 Not Found", {"error": "not found"})


class WebhookApp:
    """The WSGI application. `routes`: the token in the path to the inbox of its account (a
    SingleRoute or AccountRoutes); `on_accept`: called after a delivery was stored (wakes the processor)."""

    def __init__(self, routes: SingleRoute | AccountRoutes, senders: SenderPolicy, tally: DeliveryTally, *,
                 max_body_bytes: int, region: str, on_accept: Callable[[], None] = lambda: None):
        self.routes = routes
        self.senders = senders
        self.tally = tally
        self.max_body_bytes = max_body_bytes
        self.region = region
        self.on_accept = on_accept

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
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                                ("Cache-Control", "no-store"), *headers])
        return [payload]

    def _handle(self, environ: dict) -> Answer:
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
        body = self._body(environ)
        if body is None:
            self.tally.count("too_large")
            return "413 Content Too Large", {"error": f"the body exceeds {self.max_body_bytes} bytes"}
        return self._accept(body, inbox)

    def _body(self, environ: dict) -> bytes | None:
        """The body, or None when it is over the limit (told by Content-Length when sent)."""
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            return None
        body = environ["wsgi.input"].read(self.max_body_bytes + 1)
        return None if len(body) > self.max_body_bytes else body

    def _accept(self, body: bytes, inbox: Inbox) -> Answer:
        try:
            execution = parse_execution(json.loads(body), self.region)
        except (ValueError, RecursionError, MalformedExecution) as exc:
            self.tally.count("malformed")
            reason = str(exc) if isinstance(exc, MalformedExecution) else "the body is not JSON"
            return "400 Bad Request", {"error": reason[:200]}
        if inbox.accept(execution.id, execution.status, execution.updated_at, body):
            self.tally.count("accepted")
            self.on_accept()
            return "200 OK", {"status": "accepted"}
        self.tally.count("duplicate")
        return "200 OK", {"status": "duplicate"}


class WebhookListener:
    def __init__(self, app: WebhookApp, host: str, port: int, limits: ConnectionLimits = ConnectionLimits()):
        """`limits`: how many connections, from one address and in all, and for how long (see
        worker/bounded_server.py and docs/reliability.md)."""
        self._server = BoundedServer(
            app, host=host, port=port, limits=limits, unbounded_peer=app.senders.is_trusted_proxy,
            threads=THREADS, ident="", max_request_body_size=app.max_body_bytes * HARD_BODY_FACTOR,
            # X-Forwarded-For is judged by SenderPolicy against WEBHOOK_TRUSTED_PROXIES, not cleared.
            clear_untrusted_proxy_headers=False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="webhook-listener", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.effective_host, int(self._server.effective_port)  # waitress gives text

    def start(self) -> "WebhookListener":
        self._thread.start()
        host, port = self.address
        log.info("webhook listener on http://%s:%d%s<token>", host, port, PATH_PREFIX,
                 extra={"event": "webhook_listening"})
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.pull_trigger()  # wakes the loop's select at once
        self._thread.join(10)

    def _serve(self) -> None:
        """waitress's own loop, one pass at a time so a stop is seen; the sockets are closed here,
        in the loop's thread, never under a select running in another."""
        server = self._server
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, use_poll=server.adj.asyncore_use_poll, map=server._map, count=1)
        finally:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(server._map)


class WebhookService:
    """The listener and the inbox's processor, started and stopped together by the daemon."""

    def __init__(self, listener: WebhookListener, processor):
        self.listener = listener
        self.processor = processor

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    def stop(self) -> None:
        # The listener first: what it accepted until then is in the inbox, for this processor's
        # last batch or for the next start.
        self.listener.stop()
        self.processor.stop()


def serve_webhooks(app) -> WebhookService:
    """Start the processor and the listener on WEBHOOK_HOST:WEBHOOK_PORT for `app` (a
    worker.app.Runtime: one account or many)."""
    settings = app.settings
    senders = SenderPolicy(settings.webhook_allowed_ips, settings.webhook_trusted_proxies)
    if senders.allowed is None:
        log.warning("WEBHOOK_ALLOWED_IPS=any: any address may deliver webhooks; only the token keeps others out",
                    extra={"event": "webhook_senders_open"})
    processor = app.webhook_processor.start()
    web = WebhookApp(app.webhook_routes, senders, app.deliveries,
                     max_body_bytes=settings.webhook_max_body_bytes, region=settings.default_phone_region,
                     on_accept=processor.wake)
    try:
        listener = WebhookListener(web, settings.webhook_host, settings.webhook_port).start()
    except BaseException:
        processor.stop()
        raise
    return WebhookService(listener, processor)
