""":class:`Prefetch`: Arrow's streaming CSV reader driven from a worker thread, a batch or two ahead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from dativo_dagster.sources.csv.malformed import MalformedRow, MalformedRows

_END = object()


class Prefetch:
    """Reads batches in a worker thread, one or two ahead of the consumer.

    Arrow numbers malformed rows only when it parses on the calling thread, so the reader runs
    with ``use_threads=False`` and this thread restores the overlap between parsing and the
    consumer's work that Arrow's own read-ahead gave (parsing releases the GIL).

    Each item pairs a batch with the malformed rows Arrow skipped while parsing it; the last item
    has no batch (None), only the rows skipped at the end.
    """

    def __init__(self, reader: pacsv.CSVStreamingReader, malformed: MalformedRows, depth: int = 2) -> None:
        self._reader = reader
        self._malformed = malformed
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="dativo-csv-read", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    self._put((_END, self._malformed.drain()))
                    return
                if not self._put((batch, self._malformed.drain())):
                    return
        except Exception as exc:  # handed to the consumer, which raises it
            self._put((exc, []))

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch | None, list[MalformedRow]]]:
        while True:
            item, malformed = self._queue.get()
            if item is _END:
                yield None, malformed
                return
            if isinstance(item, Exception):
                raise item
            yield item, malformed

    def close(self) -> None:
        """Stop the worker and wait for it (it finishes the block it is parsing)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()
