"""The endpoint's feedback writer: one thread, one connection, group commit.

SQLite takes one writer at a time; writers from a pool of threads would wait in its busy handler (sleeps)
instead of in a queue. The thread takes every record queued while it was writing and commits them in one
transaction, then wakes each waiting request with its own record's verdict: an answer comes only after the
commit, so a 201 still means the row survives a crash of the server.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence

from serving.feedback.store import FeedbackStore

log = logging.getLogger(__name__)

MAX_BATCH = 64  # records per transaction: bounds how long the first of them waits for the commit


class FeedbackWriter:
    """`await writer.submit(record, label_names)` -> the reasons it was refused (empty: committed)."""

    def __init__(self, store: FeedbackStore):
        self.store = store
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        # a daemon: killed at exit only if `close` was never called, and then mid-transaction, so nothing answered
        # 201 is lost (SQLite rolls the open transaction back)
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._thread.start()
        self._ready.wait()  # the connection is open before the first request: it pays no set-up

    def submit(self, record: dict, label_names: Sequence[str] | None) -> asyncio.Future:
        """Queue one record; the future resolves (on the caller's loop) once its transaction is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((record, label_names, loop, future))
        return future

    def close(self) -> None:
        """Write what is queued, then stop the thread and release its connection."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        inserter = self.store.sqlite_inserter()  # this thread's own SQLite connection (None: SQLAlchemy's)
        self._ready.set()
        try:
            while True:
                batch, stopping = self._drain()
                if batch:
                    self._write(batch, inserter)
                if stopping:
                    return
        finally:
            if inserter is not None:
                inserter.close()

    def _drain(self) -> tuple[list[tuple], bool]:
        """The next records: block for one, then take what is already queued (up to MAX_BATCH)."""
        item = self._queue.get()
        batch: list[tuple] = []
        while item is not None:
            batch.append(item)
            if len(batch) == MAX_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _write(self, batch: list[tuple], inserter) -> None:
        try:
            outcome: list | BaseException = self.store.add_each([(r, names) for r, names, _, _ in batch], inserter)
        except Exception as exc:  # noqa: BLE001 - each waiting request answers it (as a 500), the thread lives on
            log.error("writing %d feedback record(s) failed", len(batch), exc_info=exc)
            outcome = exc
        failed = isinstance(outcome, BaseException)
        by_loop: dict = {}
        for pos, (_, _, loop, future) in enumerate(batch):
            by_loop.setdefault(loop, []).append((future, outcome if failed else outcome[pos]))
        for loop, settled in by_loop.items():  # one wake-up per event loop, not one per record
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these answers any more
                pass


def _settle(settled: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in settled:
        if future.done():  # the request was cancelled (client gone); its row is committed all the same
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
