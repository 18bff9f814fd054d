"""Reading one bounded window of creation times as several page chains at once.

A Stripe list pages newest-first, one ``starting_after`` after another: one chain cannot go faster
than one request per round trip (about 14 a second at 50 ms), far under a 25 or 100 req/s key.
A window ``[lo, hi)`` is therefore split into sub-windows read by parallel chains, whose pages
meet in a small bounded queue (memory holds a few pages, whatever the window). The window stays
one commit, and its cursor the newest ``created`` read plus one, so exactly-once is unchanged; the
credential's token bucket keeps the chains together under the key's limit.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


def sub_windows(lo: int, hi: int, streams: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into at most ``streams`` contiguous, non-empty, ordered parts."""
    span = hi - lo
    count = max(1, min(streams, span))
    edges = [lo + span * i // count for i in range(count + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if a < b]


def parallel_pages(
    chains: list[Callable[[], Iterator[list[dict[str, Any]]]]], *, buffered_pages: int = 4
) -> Iterator[list[dict[str, Any]]]:
    """Pages of every chain, as they arrive (each chain in its own thread).

    A failure in any chain stops the others and is raised here; abandoning the iterator (the
    consumer stopped) stops them too.
    """
    if len(chains) == 1:
        yield from chains[0]()
        return
    pages: queue.Queue[Any] = queue.Queue(maxsize=buffered_pages)
    stop = threading.Event()

    def run(chain: Callable[[], Iterator[list[dict[str, Any]]]]) -> None:
        try:
            for page in chain():
                while not stop.is_set():
                    try:
                        pages.put(page, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pages.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            pages.put(exc)

    # Each chain runs in a copy of the caller's context: its log lines and exchanges still name the object.
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(run, chain), name="dativo-stripe-pages", daemon=True
        )
        for chain in chains
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            item = pages.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        while True:  # unblock chains waiting to hand over a page
            try:
                pages.get_nowait()
            except queue.Empty:
                break
        for thread in threads:
            thread.join(timeout=30)
