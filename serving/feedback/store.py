"""The durable feedback store: one SQL table through SQLAlchemy (SQLite file by default, any SQLAlchemy URL works).

SQLite is made safe for several writers as `serving.sql` describes, plus a retry when the database is still
locked. A unique constraint on `prediction_id`
keeps one piece of feedback per prediction, whatever the number of writers. SQLAlchemy owns the schema; a
server's writer thread inserts into a SQLite store through `SqliteInserter`, the same statement on the stdlib
driver without SQLAlchemy's per-row cost.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence, TypeVar

import pandas as pd
from sqlalchemy import JSON, DateTime, Integer, String, Text, func, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import validation  # its great-expectations suites load on first use, never on a server's hot path
from serving.sql import open_store
from validation.feedback_rules import REASONS, as_score, record_reasons

T = TypeVar("T")
COLUMNS = [
    "prediction_id",
    "model_name",
    "model_version",
    "text",
    "predicted_labels",
    "scores",
    "score",
    "corrected_labels",
    "source",
    "timestamp",
]
LOCK_RETRIES = 8


class Base(DeclarativeBase):
    pass


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    model_name: Mapped[str] = mapped_column(String(200), index=True, nullable=False)
    model_version: Mapped[str] = mapped_column(String(50), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    predicted_labels: Mapped[list] = mapped_column(JSON, nullable=False)
    scores: Mapped[dict] = mapped_column(JSON, nullable=False)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    corrected_labels: Mapped[list | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(100), nullable=False)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


@dataclass
class FeedbackRecord:
    """One user's verdict on one served prediction. `corrected_labels` None = not given; [] = "no label applies"."""

    prediction_id: str
    model_name: str
    model_version: str
    text: str
    predicted_labels: list[str]
    score: int  # 1 (wrong) .. 5 (right)
    scores: dict[str, float] = field(default_factory=dict)  # label -> probability that was served
    corrected_labels: list[str] | None = None
    source: str = "api"
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class ImportReport:
    """What a write did: records stored, and (row number, record, reasons) for every record rejected."""

    accepted: int = 0
    rejected: list[tuple[int, dict, list[str]]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"row {row}: {'; '.join(reasons)}" for row, _, reasons in self.rejected]


def _locked(exc: Exception) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


class FeedbackStore:
    """Add, import, query and export feedback. `FeedbackStore(url).add(record)` is all a server needs."""

    def __init__(self, url: str):
        self.url = url
        self.engine = open_store(url)
        self._retry(lambda: Base.metadata.create_all(self.engine))

    def _retry(self, work: Callable[[], T]) -> T:
        """Run `work`; when SQLite is still locked after its busy timeout, back off and try again."""
        for attempt in range(LOCK_RETRIES):
            try:
                return work()
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _locked(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def add(self, record: FeedbackRecord | dict, label_names: Sequence[str] | None = None) -> None:
        """Validate (plain code: the feedback gate's rules without great-expectations, for a server's hot path) and
        store one record; raises `FeedbackRejected` with the reasons if it is not stored."""
        reasons = self.add_each([(record, label_names)])[0]
        if reasons:
            raise FeedbackRejected(reasons)

    def add_each(
        self,
        items: Sequence[tuple[FeedbackRecord | dict, Sequence[str] | None]],
        inserter: SqliteInserter | None = None,
    ) -> list[list[str]]:
        """Validate single records (each with its label names) and store the good ones in one transaction: a
        writer's group commit. Returns why each record was refused, empty for each one committed. `inserter`:
        the calling thread's own `SqliteInserter` on a SQLite store; without one, SQLAlchemy inserts."""
        reasons: list[list[str]] = []
        rows: list[tuple[int, dict]] = []
        seen: set[str] = set()
        for pos, (record, label_names) in enumerate(items):
            row = record if isinstance(record, dict) else asdict(record)
            why = record_reasons(row, label_names)  # an id stored already is caught by the unique constraint
            if not why:
                try:
                    values = _row_values(row)
                except (TypeError, ValueError, OverflowError) as exc:
                    why = [f"cannot be stored: {exc}"]
                else:
                    if values["prediction_id"] in seen:  # twice in one transaction: the first one is stored
                        why = [REASONS["stored"]]
                    else:
                        seen.add(values["prediction_id"])
                        rows.append((pos, values))
            reasons.append(why)
        if inserter is None:
            report = ImportReport()
            self._insert(rows, report)
            for pos, _, why in report.rejected:
                reasons[pos] = why
        elif rows:
            stored = self._retry(lambda: inserter([values for _, values in rows]))
            for (pos, _), ok in zip(rows, stored):
                if not ok:
                    reasons[pos] = [REASONS["stored"]]
        return reasons

    def sqlite_inserter(self) -> SqliteInserter | None:
        """A `SqliteInserter` for the calling thread on a SQLite store (None on any other database)."""
        return SqliteInserter(self.engine) if self.engine.dialect.name == "sqlite" else None

    def add_many(
        self, records: Sequence[FeedbackRecord | dict], label_names: Sequence[str] | None = None, first_row: int = 1
    ) -> ImportReport:
        """Validate every record (great-expectations suite), store the good ones, report the bad with reasons.

        `label_names`: the model's labels; None skips the known-label check (callers with a model should pass
        them). Rows are numbered from `first_row` (2 for a CSV with a header line).
        """
        frame = pd.DataFrame([r if isinstance(r, dict) else asdict(r) for r in records], columns=COLUMNS)
        report = ImportReport()
        if frame.empty:
            return report
        reasons = validation.validate_feedback(frame, label_names, self.existing_ids(frame["prediction_id"]))
        good = []
        for pos, row in enumerate(frame.to_dict("records")):
            if reasons.get(pos):
                report.rejected.append((first_row + pos, row, reasons[pos]))
            else:
                good.append((first_row + pos, row))
        report.accepted = self._insert(self._storable(good, report), report)
        return report

    @staticmethod
    def _storable(rows: list[tuple[int, dict]], report: ImportReport) -> list[tuple[int, dict]]:
        """(row number, column values) of the rows that convert; one that does not is rejected, never the batch."""
        out = []
        for number, row in rows:
            try:
                out.append((number, _row_values(row)))
            except (TypeError, ValueError, OverflowError) as exc:
                report.rejected.append((number, row, [f"cannot be stored: {exc}"]))
        return out

    def _insert(self, rows: list[tuple[int, dict]], report: ImportReport) -> int:
        """Insert column values in one transaction; a prediction id stored meanwhile by another writer is
        rejected, not lost."""
        while rows:
            try:
                batch = [r for _, r in rows]
                self._retry(lambda batch=batch: self._write(batch))
                return len(rows)
            except IntegrityError:
                taken = self.existing_ids([r["prediction_id"] for _, r in rows])
                if not taken:
                    raise
                report.rejected += [
                    (n, r, [REASONS["stored"]]) for n, r in rows if str(r["prediction_id"]).strip() in taken
                ]
                rows = [(n, r) for n, r in rows if str(r["prediction_id"]).strip() not in taken]
        return 0

    def _write(self, rows: list[dict]) -> None:
        with self.engine.begin() as conn:  # a Core insert: a fraction of the ORM unit of work's cost per row
            conn.execute(insert(FeedbackRow.__table__), rows)

    def existing_ids(self, prediction_ids: Iterable) -> set[str]:
        ids = sorted({str(i).strip() for i in prediction_ids if i is not None and not pd.isna(i) and str(i).strip()})
        found: set[str] = set()
        for s in range(0, len(ids), 500):  # keep IN (...) under every database's parameter limit
            stmt = select(FeedbackRow.prediction_id).where(FeedbackRow.prediction_id.in_(ids[s : s + 500]))
            found |= set(self._retry(lambda stmt=stmt: self._scalars(stmt)))
        return found

    def _scalars(self, stmt) -> list:
        with Session(self.engine) as session:
            return list(session.scalars(stmt))

    def query(self, model_name: str | None = None, model_version: str | None = None) -> pd.DataFrame:
        """All feedback (optionally for one model / version) as a DataFrame with COLUMNS, oldest first."""
        stmt = select(FeedbackRow).order_by(FeedbackRow.id)
        if model_name is not None:
            stmt = stmt.where(FeedbackRow.model_name == model_name)
        if model_version is not None:
            stmt = stmt.where(FeedbackRow.model_version == str(model_version))
        rows = self._retry(lambda: self._scalars(stmt))
        return pd.DataFrame([{c: getattr(r, c) for c in COLUMNS} for r in rows], columns=COLUMNS)

    def count(self, model_name: str, since: datetime | None = None) -> int:
        """Feedback on `model_name`, given after `since` if set: what a retraining trigger counts."""
        stmt = select(func.count()).select_from(FeedbackRow).where(FeedbackRow.model_name == model_name)
        if since is not None:
            stmt = stmt.where(FeedbackRow.timestamp > since)
        return self._retry(lambda: self._scalars(stmt))[0]

    def __len__(self) -> int:
        return len(self.query())


class SqliteInserter:
    """The store's insert on one SQLite connection, owned by the thread that made it: the statement SQLAlchemy
    compiles for the table and the column types' own conversions, so the rows are the ones SQLAlchemy writes,
    at a fraction of a Core insert's CPU. The connection has the store's pragmas (WAL, busy timeout)."""

    def __init__(self, engine: Engine):
        table, dialect = FeedbackRow.__table__, engine.dialect
        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["prediction_id"])
        compiled = statement.compile(dialect=dialect, column_keys=COLUMNS)
        self.sql = compiled.string
        self.columns = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in compiled.positiontup
        ]
        self._pooled = engine.raw_connection()
        self._cursor = self._pooled.driver_connection.cursor()

    def __call__(self, rows: list[dict]) -> list[bool]:
        """Insert `rows` (`_row_values`) in one committed transaction; False for each prediction id stored already."""
        params = [tuple(row[c] if convert is None else convert(row[c]) for c, convert in self.columns) for row in rows]
        cursor = self._cursor
        cursor.execute("BEGIN IMMEDIATE")
        try:
            stored = []
            for values in params:
                cursor.execute(self.sql, values)
                stored.append(cursor.rowcount == 1)
            cursor.execute("COMMIT")
        except BaseException:
            if self._pooled.driver_connection.in_transaction:  # BEGIN itself may have failed (locked)
                cursor.execute("ROLLBACK")
            raise
        return stored

    def close(self) -> None:
        self._cursor.close()
        self._pooled.close()


class FeedbackRejected(ValueError):
    """One record was not stored; `reasons` says why (an HTTP route answers it with 422)."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _row_values(row: dict) -> dict:
    """A validated record -> column values; the conversions are the validators' own (`as_score`)."""
    timestamp = row.get("timestamp")
    if timestamp is None or (isinstance(timestamp, float) and pd.isna(timestamp)):
        timestamp = datetime.now(timezone.utc)
    elif not isinstance(timestamp, datetime):
        timestamp = pd.Timestamp(timestamp).to_pydatetime()
    scores = row.get("scores")
    return {
        "prediction_id": str(row["prediction_id"]).strip(),
        "model_name": str(row["model_name"]).strip(),
        "model_version": str(row["model_version"]).strip(),
        "text": str(row["text"]),
        "predicted_labels": list(row["predicted_labels"]),
        "scores": {str(k): float(v) for k, v in scores.items()} if isinstance(scores, dict) else {},
        "score": int(as_score(row["score"])),
        "corrected_labels": None if row.get("corrected_labels") is None else list(row["corrected_labels"]),
        "source": str(row.get("source") or "api"),
        "timestamp": timestamp,
    }
