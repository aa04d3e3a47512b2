"""The controller's own SQL tables (lease, history, retraining triggers), kept in the tracking database or
LIFECYCLE_DB.

Any SQLAlchemy URL works (SQLite file, PostgreSQL...); MLflow ignores tables it does not know.
"""

from __future__ import annotations

import functools

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from lifecycle.config import lifecycle_db_url

metadata = MetaData()

leases = Table(
    "lifecycle_leases",
    metadata,
    Column("model_name", String(256), primary_key=True),
    Column("holder", String(256), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


def _records(name: str, *columns: Column) -> Table:
    """A table of the controller's records about models: id, model name, time and actor, then `columns`."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("model_name", String(256), nullable=False, index=True),
        Column("at", Float, nullable=False),
        Column("actor", String(256), nullable=False),
        *columns,
    )


history = _records(
    "lifecycle_history",
    Column("action", String(32), nullable=False),  # promote | rollback
    Column("version", String(32), nullable=False),  # the champion from now on
    Column("previous_version", String(32)),
    Column("intent_id", String(64), unique=True),  # makes a resumed action's record idempotent
    Column("detail", Text),
)

triggers = _records(
    "lifecycle_triggers",
    Column("kind", String(32), nullable=False),  # feedback | degraded
    Column("reason", Text, nullable=False),
    Column("run_id", String(64)),  # the GRPO run it started
    Column("outcome", Text),  # started | registered version N | failed (...)
)


def engine(url: str | None = None) -> Engine:
    """An engine with our tables created (concurrent creators are fine: the loser sees the tables exist)."""
    return _engine(url or lifecycle_db_url())


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    eng = create_engine(url, **kwargs)
    try:
        metadata.create_all(eng)
    except (OperationalError, ProgrammingError):
        if not all(inspect(eng).has_table(t.name) for t in metadata.sorted_tables):
            raise
    return eng
