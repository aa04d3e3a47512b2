"""The inference log: every prediction the endpoint serves, appended to one SQL table, off the request path.

A row per document: prediction id, model name and version, the text (or, by setting, only its SHA-256), the
labels and scores answered and the label set they were answered on (the model's own, or a request's), the
request's latency and the time. The endpoint hands each answered request's rows
to `InferenceLog.append`, which only puts them on a bounded queue; one background thread writes them in batches,
a transaction each. When the queue is full (the database is down or too slow) rows are dropped and counted rather
than slowing predictions down. Rows older than the retention are deleted by the same thread when it starts and
then hourly; nothing else ever updates or deletes a row. Any SQLAlchemy URL works (by default a SQLite file,
`registry.locations.inference_log_url`; in WAL mode, as the feedback store).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine

from serving.sql import open_store

log = logging.getLogger(__name__)

TEXT_MODES = ("text", "hash")
PRUNE_EVERY_S = 3600.0

metadata = MetaData()
inference_log = Table(
    "inference_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prediction_id", String(64), nullable=False, index=True),  # joins feedback to what was served
    Column("model_name", String(256), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("text", Text),  # None when only the hash is kept
    Column("text_sha256", String(64), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("label_set", String(16)),  # model | request (registry.contract); None in rows from before it was kept
    Column("latency_ms", Float, nullable=False),  # of the whole request the document came in
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_inference_log_model_at", "model_name", "at"),
)
COLUMNS = [c.name for c in inference_log.columns if c.name != "id"]


def open_engine(url: str) -> Engine:
    """The writer's engine, with the table created. Its SQLite connections use WAL (the monitor reads while the
    endpoint writes) and take the write lock up front, as the feedback store's do."""
    engine = open_store(url)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _present_columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(inference_log.name)}


def _add_missing_columns(engine: Engine) -> None:
    """A log created before a nullable column existed gets it from its writer (its old rows read None):
    `create_all` makes missing tables, never missing columns. Readers leave the schema alone (`read_window`)."""
    present = _present_columns(engine)
    with engine.begin() as conn:
        for column in inference_log.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sql_text(f"ALTER TABLE {inference_log.name} ADD COLUMN {column.name} {kind}"))


def row(record: dict, keep_text: bool) -> dict:
    """A served document -> column values: the text hashed always, kept only when `keep_text`."""
    text = record["text"]
    return {
        "prediction_id": record["prediction_id"],
        "model_name": record["model_name"],
        "model_version": str(record["model_version"]),
        "text": text if keep_text else None,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "labels": list(record["labels"]),
        "scores": {str(k): float(v) for k, v in record["scores"].items()},
        "label_set": record.get("label_set"),
        "latency_ms": float(record["latency_ms"]),
        "at": record["at"],
    }


class InferenceLog:
    """The endpoint's writer: `append` from the request path (never blocks), `close` to flush what is queued."""

    def __init__(
        self,
        url: str,
        keep_text: bool = True,
        retention_days: float = 30.0,
        batch_size: int = 512,
        flush_interval_s: float = 1.0,
        max_queued: int = 20_000,
    ):
        self.engine = open_engine(url)
        self.keep_text, self.retention_days = keep_text, retention_days
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self.written = self.dropped = self.failed = 0
        self._queue: queue.Queue[dict] = queue.Queue(max_queued)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def append(self, records: list[dict]) -> None:
        for record in records:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("inference log queue full: %d records dropped so far", self.dropped)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.engine.dispose()

    def prune(self, now: datetime | None = None) -> int:
        """Delete rows older than the retention; how many."""
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=self.retention_days)
        with self.engine.begin() as conn:
            return conn.execute(delete(inference_log).where(inference_log.c.at < cutoff)).rowcount

    def _run(self) -> None:
        next_prune = 0.0  # at start (before this writer's first row), then hourly
        while not (self._stop.is_set() and self._queue.empty()):
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                try:
                    if removed := self.prune():
                        log.info("inference log: %d rows older than %g days deleted", removed, self.retention_days)
                except Exception:  # noqa: BLE001 - the next hour tries again; serving goes on
                    log.exception("inference log retention failed")
            if batch := self._next_batch():
                self._write(batch)

    def _next_batch(self) -> list[dict]:
        """Up to batch_size records: waits up to flush_interval_s for the first, then takes what is queued."""
        try:
            batch = [self._queue.get(timeout=self.flush_interval_s)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[dict]) -> None:
        try:
            rows = [row(r, self.keep_text) for r in batch]
            with self.engine.begin() as conn:
                conn.execute(insert(inference_log), rows)
            self.written += len(rows)
        except Exception:  # noqa: BLE001 - a lost batch is counted and logged; predictions are never affected
            self.failed += len(batch)
            log.exception("inference log: a batch of %d rows could not be written", len(batch))


def read_window(url: str, model_name: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The rows of `model_name` served in [start, end), oldest first, with COLUMNS (None in a column the log was
    created without and no writer has added yet); none when no endpoint has written the log yet."""
    engine = open_store(url, writer=False)  # a reader's connections take no lock, and it creates no table
    try:
        if not inspect(engine).has_table(inference_log.name):
            return pd.DataFrame(columns=COLUMNS)  # nothing served yet
        present = _present_columns(engine)
        stmt = (
            select(*[inference_log.c[c] for c in COLUMNS if c in present])
            .where(inference_log.c.model_name == model_name, inference_log.c.at >= start, inference_log.c.at < end)
            .order_by(inference_log.c.id)
        )
        with engine.connect() as conn:
            return pd.DataFrame([dict(r._mapping) for r in conn.execute(stmt)], columns=COLUMNS)
    finally:
        engine.dispose()
