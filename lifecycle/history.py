"""Which version was champion when: MLflow keeps no such record, so the controller appends one per change."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lifecycle.db import history, triggers


def record(
    eng: Engine,
    model_name: str,
    action: str,
    version: str,
    previous: str | None,
    actor: str,
    intent_id: str,
    detail: dict | None = None,
) -> None:
    """Append a champion change; the intent id makes a resumed action's second attempt a no-op."""
    try:
        with eng.begin() as conn:
            conn.execute(
                insert(history).values(
                    model_name=model_name,
                    action=action,
                    version=str(version),
                    previous_version=previous,
                    at=time.time(),
                    actor=actor,
                    intent_id=intent_id,
                    detail=json.dumps(detail or {}),
                )
            )
    except IntegrityError:
        pass


def rows(eng: Engine, model_name: str) -> list[dict]:
    with eng.connect() as conn:
        result = conn.execute(select(history).where(history.c.model_name == model_name).order_by(history.c.id))
        return [dict(r._mapping) for r in result]


def champion_stack(entries: list[dict]) -> list[str]:
    """Champions in order of succession, with rolled-back ones removed: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for entry in entries:
        if entry["action"] == "rollback":
            while stack and stack[-1] != entry["version"]:
                stack.pop()
            if not stack:
                stack.append(entry["version"])
        else:
            stack.append(entry["version"])
    return stack


def rollback_target(entries: list[dict]) -> str | None:
    """The champion before the current one (None when there was none)."""
    stack = champion_stack(entries)
    return stack[-2] if len(stack) >= 2 else None


def format_table(entries: list[dict]) -> str:
    """One line per reign: version, from, until, how it became champion."""
    lines = [f"{'version':>7}  {'champion from':<23}  {'until':<23}  how"]
    for i, entry in enumerate(entries):
        until = _when(entries[i + 1]["at"]) if i + 1 < len(entries) else "now"
        how = entry["action"] + (
            f" (from version {entry['previous_version']})" if entry["previous_version"] else " (first champion)"
        )
        reason = json.loads(entry["detail"] or "{}").get("reason")
        lines.append(
            f"{entry['version']:>7}  {_when(entry['at']):<23}  {until:<23}  {how} by {entry['actor']}"
            + (f": {reason}" if reason else "")
        )
    return "\n".join(lines)


def record_trigger(eng: Engine, model_name: str, kind: str, reason: str, actor: str) -> int:
    """Append a retraining trigger (before its run starts, so a crash still leaves the record); its id."""
    with eng.begin() as conn:
        return conn.execute(
            insert(triggers).values(
                model_name=model_name, kind=kind, reason=reason, at=time.time(), actor=actor, outcome="started"
            )
        ).inserted_primary_key[0]


def finish_trigger(eng: Engine, trigger_id: int, run_id: str | None, outcome: str) -> None:
    with eng.begin() as conn:
        conn.execute(update(triggers).where(triggers.c.id == trigger_id).values(run_id=run_id, outcome=outcome))


def trigger_rows(eng: Engine, model_name: str) -> list[dict]:
    with eng.connect() as conn:
        result = conn.execute(select(triggers).where(triggers.c.model_name == model_name).order_by(triggers.c.id))
        return [dict(r._mapping) for r in result]


def format_triggers(entries: list[dict]) -> str:
    """One line per retraining the controller started: when, why, and what came of it."""
    lines = [f"{'retrained at':<23}  {'trigger':<8}  outcome, reason"]
    for entry in entries:
        lines.append(
            f"{_when(entry['at']):<23}  {entry['kind']:<8}  {entry['outcome']} (run {entry['run_id']}): "
            f"{entry['reason']}"
        )
    return "\n".join(lines)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
