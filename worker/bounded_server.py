"""waitress, bounded against connection floods (slowloris), for the public webhook listener.

Why waitress still: it reads each request whole in its event loop before a worker thread sees it,
so a slow or idle client holds a socket, never a thread. What it lacks is added here:

- many connections: `connection_limit` far above waitress' 100 (which 100 idle sockets filled,
  stopping every delivery before its token or sender was looked at), watched with poll() rather
  than select() (which cannot watch a descriptor numbered 1024 or more);
- the process's descriptor limit raised to what that needs (its soft limit up to the hard one);
- an idle connection closed after `idle_seconds`, and a request that has been arriving for longer
  than `request_seconds` (a client trickling a byte at a time keeps a connection active, but not
  for ever) closed too; both checked every `check_seconds`;
- at most `per_address` connections from one peer address: a flood from one address fills its own
  allowance and nothing else. A trusted proxy (WEBHOOK_TRUSTED_PROXIES) is not bounded: it carries
  every sender's connections, and buffers a request whole before it opens one to us.
"""
from __future__ import annotations

import logging
import resource
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

log = logging.getLogger(__name__)

# Descriptors kept for the rest of the process (MongoDB's pool, Bolna and Groq clients, the health
# server, files) beside the listener's connections.
RESERVED_DESCRIPTORS = 512
ACCEPTS_PER_PASS = 64


@dataclass(frozen=True)
class ConnectionLimits:
    connections: int = 4096  # open at once, all peers together
    per_address: int = 32  # open at once from one peer address
    idle_seconds: float = 10.0  # a connection with nothing sent nor answered this long is closed
    request_seconds: float = 15.0  # a request still arriving this long after its first byte is closed
    check_seconds: float = 1.0  # how often the two timeouts above are checked
    backlog: int = 1024  # connections the kernel queues before they are accepted

    def waitress_options(self) -> dict:
        return {"connection_limit": self.connections, "channel_timeout": self.idle_seconds,
                "cleanup_interval": self.check_seconds, "backlog": self.backlog, "asyncore_use_poll": True}


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


# SO_LINGER on, 0 s: close() resets the connection, so no TIME_WAIT is kept for a flood's sockets.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class _Channel(HTTPChannel):
    """A connection that remembers when its current request began, and is counted against its peer
    address (by the server, when accepted) until it is closed."""
    request_began: float | None = None
    counted_peer: str | None = None

    def received(self, data):
        if self.request is None and data:
            self.request_began = time.monotonic()
        return super().received(data)

    def del_channel(self, map=None):
        super().del_channel(map)
        peer, self.counted_peer = self.counted_peer, None
        if peer is not None:
            self.server.peer_closed(peer)


class BoundedServer(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, application, *, host: str, port: int, limits: ConnectionLimits,
                 unbounded_peer: Callable[[str], bool] = lambda _address: False, **options):
        """`unbounded_peer(address)`: True for a peer the per-address bound does not apply to (a
        trusted proxy). `options`: waitress' own settings."""
        self.limits = limits
        self._unbounded_peer = unbounded_peer
        self._per_peer: Counter = Counter()
        self._peers_lock = threading.Lock()
        self.refused = 0  # connections closed at once: their peer address was at its bound
        available = raise_descriptor_limit(limits.connections + RESERVED_DESCRIPTORS) - RESERVED_DESCRIPTORS
        if available < limits.connections:
            limits = replace(limits, connections=max(available, 64))
            log.warning("the process may open %d descriptors: the webhook listener holds at most %d connections; "
                        "raise `ulimit -n` for more", available + RESERVED_DESCRIPTORS, limits.connections,
                        extra={"event": "webhook_descriptor_limit"})
            self.limits = limits
        adj = Adjustments(host=host, port=port, **limits.waitress_options(), **options)
        super().__init__(application, map={}, adj=adj, sockinfo=adj.listen[0])

    def handle_accept(self):
        # waitress accepts one connection per pass of its loop, and a pass walks every open
        # connection: under a flood, a delivery waited behind the whole accept queue. Up to a batch
        # at a time here.
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
            self._open(conn, addr)

    def _open(self, conn: socket.socket, addr) -> None:
        peer = addr[0]
        bounded = not self._unbounded_peer(peer)
        if bounded and not self._take_slot(peer):
            self.refused += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            conn.close()
            return
        try:
            channel = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        except OSError:  # the peer reset it meanwhile
            conn.close()
            if bounded:
                self.peer_closed(peer)
            return
        if bounded:
            channel.counted_peer = peer

    def maintenance(self, now):
        """waitress closes the idle connections; here also those whose request is arriving too slowly."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.limits.request_seconds
        for channel in list(self.active_channels.values()):
            began = getattr(channel, "request_began", None)
            if channel.request is not None and not channel.requests and began is not None and began < cutoff:
                channel.will_close = True

    def peer_closed(self, peer: str) -> None:
        with self._peers_lock:
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]

    def _take_slot(self, peer: str) -> bool:
        """Counts a connection against its peer, unless the peer is at its bound (then False)."""
        with self._peers_lock:
            if self._per_peer[peer] >= self.limits.per_address:
                return False
            self._per_peer[peer] += 1
            return True
