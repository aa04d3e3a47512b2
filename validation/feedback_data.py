"""Feedback gate: which imported feedback records may be stored, and why the others may not.

Unlike the training-data gate, a bad record does not stop the import: each failing row gets its reasons and
the good rows are stored.  Checks: prediction id present and unique (in the batch and against the store),
model name and version present, text non-empty, score an integer 1..5, predicted and corrected labels lists
of the model's label names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from validation.gx_runner import Check, failing_rows, gx

E = gx.expectations
SCORES = [1, 2, 3, 4, 5]


def validate_feedback(
    frame: pd.DataFrame, label_names: Sequence[str] | None, stored_ids: Collection[str] = ()
) -> dict[int, list[str]]:
    """{row position: [reasons]} for the rows that must not be stored; an empty dict means all are good.

    ``frame`` has the feedback columns with list cells already parsed (anything else is reported, not
    crashed on); ``label_names`` None skips the known-label check; ``stored_ids`` are prediction ids that
    already have feedback.
    """
    frame = frame.reset_index(drop=True)
    ids = frame["prediction_id"].map(_clean)
    first_row = {pid: pos for pos, pid in reversed(list(enumerate(ids))) if pid is not None}
    rows = pd.DataFrame(
        {
            "prediction_id": ids,
            "repeat_of": [first_row[p] if p is not None and first_row[p] != pos else None for pos, p in enumerate(ids)],
            "already_stored": ids.where(ids.isin(set(stored_ids))),
            "model_name": frame["model_name"].map(_clean),
            "model_version": frame["model_version"].map(_clean),
            "text": frame["text"].map(_clean),
            "score": frame["score"].map(_as_score),
            "predicted_labels": frame["predicted_labels"].map(lambda v: v if _is_label_list(v) else None),
            "corrected_malformed": frame["corrected_labels"].map(lambda v: None if v is None or _is_label_list(v) else repr(v)),
        }
    )
    checks = [
        Check(E.ExpectColumnValuesToNotBeNull(column="prediction_id"), "prediction_id is missing"),
        Check(E.ExpectColumnValuesToBeNull(column="repeat_of"), "duplicate prediction_id within this import"),
        Check(E.ExpectColumnValuesToBeNull(column="already_stored"), "prediction_id already has feedback in the store"),
        Check(E.ExpectColumnValuesToNotBeNull(column="model_name"), "model_name is missing"),
        Check(E.ExpectColumnValuesToNotBeNull(column="model_version"), "model_version is missing"),
        Check(E.ExpectColumnValuesToNotBeNull(column="text"), "text is empty"),
        Check(E.ExpectColumnValuesToBeInSet(column="score", value_set=SCORES), "score must be an integer from 1 to 5"),
        Check(E.ExpectColumnValuesToNotBeNull(column="score"), "score is missing"),
        Check(E.ExpectColumnValuesToNotBeNull(column="predicted_labels"), "predicted_labels must be a list of label names"),
        Check(E.ExpectColumnValuesToBeNull(column="corrected_malformed"), "corrected_labels must be a list of label names"),
    ]
    reasons = failing_rows("feedback_rows", rows, checks)
    if label_names is not None:
        for column in ("predicted_labels", "corrected_labels"):
            long = _explode(frame[column])
            if len(long):
                check = Check(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(label_names)),
                              f"{column} has labels the model does not know")
                for pos, why in failing_rows(f"feedback_{column}", long, [check]).items():
                    unknown = sorted(set(long.loc[[pos], "label"]) - set(label_names))
                    reasons.setdefault(pos, []).extend(f"{w}: {unknown}" for w in why)
    return {int(k): v for k, v in reasons.items()}


def _clean(value: Any) -> str | None:
    """A non-blank string, stripped; anything else (None, NaN, blank) is None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _as_score(value: Any) -> Any:
    """An integral number (1, 4.0, '5') as int; anything else unchanged, for the in-set check to report."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None if value is None else str(value)
    if np.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def _is_label_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)


def _explode(cells: pd.Series) -> pd.DataFrame:
    """One row per (row position, label) for the well-formed list cells."""
    pairs = [(pos, lab) for pos, v in enumerate(cells) if _is_label_list(v) for lab in v]
    return pd.DataFrame({"label": pd.Series([p[1] for p in pairs], index=[p[0] for p in pairs], dtype=object)})
