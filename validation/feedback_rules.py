"""Feedback rules in plain Python: one record checked in microseconds, for the `/feedback` route.

The great-expectations feedback gate (`validation.feedback_data`) applies the same rules, with the same
reasons, to whole files; a test runs both on the same rows and compares their verdicts. This module imports
no great-expectations, so a server answering feedback never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

SCORES = (1, 2, 3, 4, 5)
# The store's column widths: a longer value would be truncated or refused by a stricter database.
MAX_LENGTHS = {"prediction_id": 200, "model_name": 200, "model_version": 50, "source": 100}
LABEL_COLUMNS = ("predicted_labels", "corrected_labels", "scores")

REASONS = {
    "prediction_id": "prediction_id is missing",
    "repeat": "duplicate prediction_id within this import",
    "stored": "prediction_id already has feedback in the store",
    "model_name": "model_name is missing",
    "model_version": "model_version is missing",
    "text": "text is empty",
    "score": "score must be an integer from 1 to 5",
    "score_missing": "score is missing",
    "predicted_labels": "predicted_labels must be a list of label names",
    "corrected_labels": "corrected_labels must be a list of label names",
    "scores": "scores must map label names to numbers from 0 to 1",
    "source": "source must be text",
    **{f"{c}_length": f"{c} is longer than {n} characters" for c, n in MAX_LENGTHS.items()},
    **{f"{c}_labels": f"{c} has labels the model does not know" for c in LABEL_COLUMNS},
}


def clean(value: Any) -> str | None:
    """A non-blank string, stripped; anything else (None, NaN, blank) is None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def as_score(value: Any) -> Any:
    """An integral number (1, 4.0, '5') as int; anything else as text or a fraction, for the in-set check to
    report; a boolean is not a score (True would otherwise read as 1)."""
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None if value is None else str(value)
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def is_label_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)


def scores_ok(value: Any) -> bool:
    """Not given (None/NaN), or a mapping of label name -> finite probability in [0, 1]."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, dict) and all(
        isinstance(k, str)
        and k
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0.0 <= v <= 1.0
        for k, v in value.items()
    )


def source_ok(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or isinstance(value, str)


def label_cells(column: str, value: Any) -> list[str]:
    """The label names a well-formed cell of `column` mentions (scores: its keys); none for a malformed cell."""
    if column == "scores":
        return list(value) if isinstance(value, dict) and scores_ok(value) else []
    return list(value) if is_label_list(value) else []


def record_reasons(record: dict, label_names: Sequence[str] | None, stored_ids: Collection[str] = ()) -> list[str]:
    """Why one feedback record must not be stored (empty: it may); the feedback gate's rules, in plain code."""
    failed = []
    pid = clean(record.get("prediction_id"))
    failed += ["prediction_id"] if pid is None else ["stored"] if pid in stored_ids else []
    failed += [c for c in ("model_name", "model_version", "text") if clean(record.get(c)) is None]
    score = as_score(record.get("score"))
    failed += ["score_missing"] if score is None else [] if score in SCORES else ["score"]
    failed += [] if is_label_list(record.get("predicted_labels")) else ["predicted_labels"]
    corrected = record.get("corrected_labels")
    failed += [] if corrected is None or is_label_list(corrected) else ["corrected_labels"]
    failed += [] if scores_ok(record.get("scores")) else ["scores"]
    failed += [] if source_ok(record.get("source")) else ["source"]
    for column, limit in MAX_LENGTHS.items():
        value = record.get(column)
        if (column != "source" or isinstance(value, str)) and len(clean(value) or "") > limit:
            failed.append(f"{column}_length")
    reasons = [REASONS[k] for k in failed]
    if label_names is not None:
        known = set(label_names)
        for column in LABEL_COLUMNS:
            unknown = sorted(set(label_cells(column, record.get(column))) - known)
            if unknown:
                reasons.append(f"{REASONS[column + '_labels']}: {unknown}")
    return reasons
