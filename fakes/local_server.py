"""What the local fakes share: a threaded HTTP/1.1 server on 127.0.0.1 with a quiet lifecycle."""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping out a latency must not hold up stop()
    # socketserver's default backlog of 5 refuses (and the client retries after a second) the
    # sixth connection opened at once: concurrent clients must all get in, as on a real server.
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        # A client that timed out closes its socket before the slow answer is written.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, so clients using a session don't reconnect per request.
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, each answer waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def log_message(self, format, *args) -> None:
        """Stay quiet: test and benchmark output should not fill with access logs."""


class LocalServer:
    """Start/stop (or `with`) a fake; its handler reaches it as `self.server.fake`."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "fake-server"

    def __init__(self):
        self.base_url = ""
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self):
        server = QuietServer(("127.0.0.1", 0), self.handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        # A short poll interval: stop() waits up to one interval, and tests start many servers.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
