"""Feedback gate: which imported feedback records may be stored, and why the others may not.

Unlike the training-data gate, a bad record does not stop the import: each failing row gets its reasons and
the good rows are stored.  Checks: prediction id present and unique (in the batch and against the store),
model name and version present, text non-empty, score an integer 1..5, predicted and corrected labels lists
of the model's label names, scores label -> probability, source text, no value wider than its column. The rules
and their reasons are `validation.feedback_rules`' (the /feedback route checks one record with them, in plain code).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd

from validation.feedback_rules import (
    LABEL_COLUMNS,
    MAX_LENGTHS,
    REASONS,
    SCORES,
    as_score,
    clean,
    is_label_list,
    label_cells,
    scores_ok,
    source_ok,
)
from validation.gx_runner import Check, failing_rows, gx

E = gx.expectations


def validate_feedback(
    frame: pd.DataFrame, label_names: Sequence[str] | None, stored_ids: Collection[str] = ()
) -> dict[int, list[str]]:
    """{row position: [reasons]} for the rows that must not be stored; an empty dict means all are good.

    ``frame`` has the feedback columns with list cells already parsed (anything else is reported, not
    crashed on); ``label_names`` None skips the known-label check; ``stored_ids`` are prediction ids that
    already have feedback.
    """
    frame = frame.reset_index(drop=True)
    ids = frame["prediction_id"].map(clean)
    first_row = {pid: pos for pos, pid in reversed(list(enumerate(ids))) if pid is not None}
    rows = pd.DataFrame(
        {
            "prediction_id": ids,
            "repeat_of": [first_row[p] if p is not None and first_row[p] != pos else None for pos, p in enumerate(ids)],
            "already_stored": ids.where(ids.isin(set(stored_ids))),
            "model_name": frame["model_name"].map(clean),
            "model_version": frame["model_version"].map(clean),
            "text": frame["text"].map(clean),
            "score": frame["score"].map(as_score),
            "predicted_labels": frame["predicted_labels"].map(lambda v: v if is_label_list(v) else None),
            "corrected_malformed": frame["corrected_labels"].map(
                lambda v: None if v is None or is_label_list(v) else repr(v)
            ),
            "scores_malformed": frame["scores"].map(lambda v: None if scores_ok(v) else repr(v)[:200]),
            "source_malformed": frame["source"].map(lambda v: None if source_ok(v) else repr(v)[:200]),
            "source": frame["source"].map(lambda v: clean(v) if isinstance(v, str) else None),
        }
    )
    checks = [
        Check(E.ExpectColumnValuesToNotBeNull(column="prediction_id"), REASONS["prediction_id"]),
        Check(E.ExpectColumnValuesToBeNull(column="repeat_of"), REASONS["repeat"]),
        Check(E.ExpectColumnValuesToBeNull(column="already_stored"), REASONS["stored"]),
        Check(E.ExpectColumnValuesToNotBeNull(column="model_name"), REASONS["model_name"]),
        Check(E.ExpectColumnValuesToNotBeNull(column="model_version"), REASONS["model_version"]),
        Check(E.ExpectColumnValuesToNotBeNull(column="text"), REASONS["text"]),
        Check(E.ExpectColumnValuesToBeInSet(column="score", value_set=list(SCORES)), REASONS["score"]),
        Check(E.ExpectColumnValuesToNotBeNull(column="score"), REASONS["score_missing"]),
        Check(E.ExpectColumnValuesToNotBeNull(column="predicted_labels"), REASONS["predicted_labels"]),
        Check(E.ExpectColumnValuesToBeNull(column="corrected_malformed"), REASONS["corrected_labels"]),
        Check(E.ExpectColumnValuesToBeNull(column="scores_malformed"), REASONS["scores"]),
        Check(E.ExpectColumnValuesToBeNull(column="source_malformed"), REASONS["source"]),
        *[
            Check(E.ExpectColumnValueLengthsToBeBetween(column=c, max_value=n), REASONS[f"{c}_length"])
            for c, n in MAX_LENGTHS.items()
        ],
    ]
    reasons = failing_rows("feedback_rows", rows, checks)
    if label_names is not None:
        for column in LABEL_COLUMNS:
            long = _explode(frame[column], column)
            if len(long):
                check = Check(
                    E.ExpectColumnValuesToBeInSet(column="label", value_set=list(label_names)),
                    REASONS[f"{column}_labels"],
                )
                for pos, why in failing_rows(f"feedback_{column}", long, [check]).items():
                    unknown = sorted(set(long.loc[[pos], "label"]) - set(label_names))
                    reasons.setdefault(pos, []).extend(f"{w}: {unknown}" for w in why)
    return {int(k): v for k, v in reasons.items()}


def _explode(cells: pd.Series, column: str) -> pd.DataFrame:
    """One row per (row position, label) for the well-formed cells of `column`."""
    pairs = [(pos, lab) for pos, v in enumerate(cells) for lab in label_cells(column, v)]
    return pd.DataFrame({"label": pd.Series([p[1] for p in pairs], index=[p[0] for p in pairs], dtype=object)})
