"""The SQL stores serving writes to (the feedback store, the inference log): any SQLAlchemy URL, a SQLite file
by default. A SQLite file is made safe for several writers: WAL journal (readers never block the writer), a busy
timeout, and writes in `BEGIN IMMEDIATE` transactions (the write lock is taken up front, so two writers queue
instead of failing on a lock upgrade)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

SQLITE_BUSY_MS = 30_000


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL + busy timeout on every connection; pysqlite's own transaction handling off so that BEGIN IMMEDIATE
    (emitted by us) is what starts a transaction (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_store(url: str, writer: bool = True) -> Engine:
    """An engine for the store at `url`; a SQLite file's folder is created, and a writer's SQLite connections
    get the pragmas above (a reader's take no lock)."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if writer and engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return engine
