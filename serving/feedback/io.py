"""Feedback files in and out: CSV or JSONL with columns prediction_id, model_name, model_version, text,
predicted_labels, score, corrected_labels, source (optional: scores, timestamp).

List cells may be JSON arrays (`["vat", "payroll"]`) or `|`-separated (`vat|payroll`); an empty
`corrected_labels` cell means "not given", while `[]` means "no label applies". `scores` is a JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from serving.feedback.store import COLUMNS

REQUIRED = ["prediction_id", "model_name", "model_version", "text", "predicted_labels", "score"]
LIST_COLUMNS = ("predicted_labels", "corrected_labels")


class FeedbackFileError(ValueError):
    """The file itself cannot be read (missing, unknown format, missing columns); rows are never half-read."""


def read_feedback_file(path: str | Path) -> tuple[list[dict], int]:
    """(records with list cells parsed, number of the first data row as a person counts it: 2 for CSV)."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackFileError(f"feedback file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            frame, first_row = pd.read_json(path, lines=True, dtype=False), 1
        elif suffix == ".csv":
            frame, first_row = pd.read_csv(path, dtype=str, keep_default_na=False), 2
        else:
            raise FeedbackFileError(f"feedback file must be .csv or .jsonl, got {path.name}")
    except (ValueError, pd.errors.ParserError) as exc:
        raise FeedbackFileError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise FeedbackFileError(f"{path.name} lacks the column(s) {missing} (has {list(frame.columns)})")
    records = []
    for row in frame.to_dict("records"):
        record = {c: _blank_to_none(row.get(c)) for c in COLUMNS}
        record["predicted_labels"] = parse_labels(record["predicted_labels"], empty=[])
        record["corrected_labels"] = parse_labels(record["corrected_labels"], empty=None)
        record["scores"] = _parse_scores(record["scores"])
        records.append(record)
    return records, first_row


def parse_labels(value: Any, empty: list | None) -> Any:
    """A list cell -> list of names; `empty` for a blank cell; anything unparsable is returned as is, for the
    feedback gate to reject with a reason."""
    if value is None:
        return empty
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return text
        return [str(v).strip() for v in parsed] if isinstance(parsed, list) else text
    return [part.strip() for part in text.split("|") if part.strip()]


def _parse_scores(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {}


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def write_feedback_file(frame: pd.DataFrame, path: str | Path) -> int:
    """Export a store query (COLUMNS) as CSV (lists and scores as JSON) or JSONL; returns the row count."""
    path = Path(path)
    out = frame.copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).map(lambda t: t.isoformat())
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        out.to_json(path, orient="records", lines=True, force_ascii=False)
    elif path.suffix.lower() == ".csv":
        for column in (*LIST_COLUMNS, "scores"):
            out[column] = out[column].map(lambda v: "" if v is None else json.dumps(v))
        out.to_csv(path, index=False)
    else:
        raise FeedbackFileError(f"export file must be .csv or .jsonl, got {path.name}")
    return len(out)
