"""One page read ahead: while the caller writes a page, the next one is listed and its full
records fetched in a worker thread. At most two pages are held (the one written, the one read),
whatever the history, and the caller sees pages in Bolna's order, as without it."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

from utils.logging import in_log_context

Page = TypeVar("Page")
Read = TypeVar("Read")


def read_ahead(pages: Iterator[Page], read: Callable[[Page], Read], worker: ThreadPoolExecutor,
               keep_going: Callable[[], bool]) -> Iterator[tuple[Page, Read]]:
    """(page, read(page)) for each page; the next is read while the caller holds this one. Errors
    of listing or reading reach the caller in order. `keep_going()` false: nothing more is read.
    Closing the iterator waits for the read under way, so no request outlives the caller's loop."""
    def next_read() -> tuple[Page, Read] | None:
        page = next(pages, None)
        return None if page is None else (page, read(page))

    pending: Future | None = worker.submit(in_log_context(next_read))
    try:
        while pending is not None:
            result = pending.result()
            pending = None
            if result is None:
                return
            if keep_going():
                pending = worker.submit(in_log_context(next_read))
            yield result
    finally:
        if pending is not None:
            pending.cancel() or pending.exception()  # not started, or waited for
