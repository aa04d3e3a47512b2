"""Training-data gate: refuse to fine-tune on data that would silently produce a bad model.

Runs GX expectations on the (already normalised) train and optional validation frames:
``text`` is a str per row, ``labels`` a list of str per row.  GX validates one frame per suite,
so the gate uses one suite per frame shape: the rows, the rows exploded to one label per row,
and the per-label example counts.

A fit split too large for memory (a stream) is gated on a uniform sample with the same suites, plus counts the
caller computed over every row while streaming (:class:`StreamCounts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from validation.counts import StreamCounts
from validation.gx_runner import Check, GateResult, gx, run_checks

E = gx.expectations
_SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
_OVERLAP = {
    "val": "{n} row{s} also in train (train/validation overlap)",
    "test": "{n} row{s} also in train or validation (overlap with the test split)",
}


def validate_streamed_training_data(
    sample: pd.DataFrame,
    counts: StreamCounts,
    label_names: Sequence[str],
    *,
    val: pd.DataFrame,
    test: pd.DataFrame,
    min_examples: int = 5,
    text_column: str = "text",
    labels_column: str = "labels",
) -> GateResult:
    """The gate for a fit split seen as a sample plus whole-stream counts: the row suites on the sample (a
    duplicate text is found only within it), every count-based check on the counts, validation and test whole."""
    cols = (text_column, labels_column)
    results = [_split_checks("train", sample, label_names, cols), _stream_checks(counts, label_names, cols)]
    results.append(_min_examples("train", counts.label_rows, label_names, min_examples, labels_column))
    seen = sample[text_column] if text_column in sample.columns else pd.Series(dtype=object)
    for split, frame in (("val", val), ("test", test)):
        results.append(_split_checks(split, frame, label_names, cols, train_texts=seen))
        if text_column in frame.columns:
            seen = pd.concat([seen, frame[text_column]], ignore_index=True)
        if _columns_ok(frame, cols):
            results.append(_min_examples(split, _label_rows(frame, labels_column), label_names, min_examples, cols[1]))
    return GateResult.combine(results)


def _stream_checks(counts: StreamCounts, label_names: Sequence[str], cols: tuple[str, str]) -> GateResult:
    """The row checks' counterparts over the whole stream: one row of counts, each expected to be 0."""
    text, labels = cols
    frame = pd.DataFrame(
        {"empty_text": [counts.empty_text], "no_labels": [counts.no_labels], "held_out": [counts.held_out]}
    )
    checks = [
        Check(E.ExpectColumnMaxToBeBetween(column="empty_text", max_value=0), "{n} streamed row{s} with no text", text),
        Check(
            E.ExpectColumnMaxToBeBetween(column="no_labels", max_value=0),
            "{n} streamed row{s} with no labels (null or empty list)",
            labels,
        ),
        Check(
            E.ExpectColumnMaxToBeBetween(column="held_out", max_value=0),
            "{n} streamed row{s} also in validation or test (overlap with the held-out splits)",
            text,
        ),
    ]
    seen = pd.DataFrame({"label": pd.Series(sorted(counts.label_rows), dtype=object)})
    label_check = Check(
        E.ExpectColumnValuesToBeInSet(column="label", value_set=list(label_names)),
        "{n} streamed label value{s} not in the label file",
        labels,
    )
    return GateResult.combine(
        [run_checks("train_stream", frame, checks), run_checks("train_stream_labels", seen, [label_check])]
    )


def validate_training_data(
    train: pd.DataFrame,
    label_names: Sequence[str],
    *,
    val: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    min_examples: int = 5,
    text_column: str = "text",
    labels_column: str = "labels",
) -> GateResult:
    """Check train (and val) before training; returns every problem found, never raises.

    Call ``.raise_for_failures()`` on the result to stop the pipeline.
    """
    cols = (text_column, labels_column)
    results = [_split_checks("train", train, label_names, cols)]
    if _columns_ok(train, cols):
        results.append(_min_examples("train", _label_rows(train, labels_column), label_names, min_examples, cols[1]))
    seen = train[text_column] if text_column in train.columns else pd.Series(dtype=object)
    for split, frame in (("val", val), ("test", test)):
        if frame is None:
            continue
        results.append(_split_checks(split, frame, label_names, cols, train_texts=seen))
        if text_column in frame.columns:  # the test split must not overlap validation either
            seen = pd.concat([seen, frame[text_column]], ignore_index=True)
        if _columns_ok(frame, cols):  # F1 on a label with a handful of held-out examples is noise
            results.append(_min_examples(split, _label_rows(frame, labels_column), label_names, min_examples, cols[1]))
    return GateResult.combine(results)


def _split_checks(
    split: str,
    df: pd.DataFrame,
    label_names: Sequence[str],
    cols: tuple[str, str],
    *,
    train_texts: pd.Series | None = None,
) -> GateResult:
    """Row-level checks for one split; train gets the duplicate check, val and test the overlap check."""
    text, labels = cols
    prefix = "" if split == "train" else f"{split}."
    missing = [c for c in cols if c not in df.columns]
    if missing:  # nothing else can be checked meaningfully; report the columns and stop here
        found = list(map(str, df.columns))
        checks = [
            Check(
                E.ExpectColumnToExist(column=c), f"required column is missing (found {found})", f"{prefix}{c}", "none"
            )
            for c in cols
        ]
        return run_checks(f"{split}_columns", df, checks)

    rows = pd.DataFrame(
        {
            text: df[text],
            "text_stripped": df[text].map(lambda v: v.strip() if isinstance(v, str) else None),
            "n_labels": df[labels].map(lambda v: len(_as_list(v))),
        },
        index=df.index,
    )
    if train_texts is not None:
        # A derived column instead of value_set=<all train texts>: GX re-serialises an expectation's
        # kwargs for every metric, which made a 10k-text value_set take seconds.
        rows["text_in_train"] = df[text].where(df[text].isin(train_texts))
    checks = [
        Check(E.ExpectColumnValuesToNotBeNull(column=text), "{n} row{s} with no text", f"{prefix}{text}", "rows"),
        Check(
            E.ExpectColumnValueLengthsToBeBetween(column="text_stripped", min_value=1),
            "{n} row{s} with empty text (blank after stripping)",
            f"{prefix}{text}",
            "rows",
        ),
        Check(
            E.ExpectColumnValuesToBeBetween(column="n_labels", min_value=1),
            "{n} row{s} with no labels (null or empty list)",
            f"{prefix}{labels}",
            "rows",
        ),
    ]
    if train_texts is None:
        checks.append(
            Check(E.ExpectColumnValuesToBeUnique(column=text), "{n} row{s} with duplicate text", f"{prefix}{text}")
        )
    else:
        checks.append(
            Check(
                E.ExpectColumnValuesToBeNull(column="text_in_train"),
                _OVERLAP[split],
                f"{prefix}{text}",
            )
        )
    long = _explode(df, labels)
    label_check = Check(
        E.ExpectColumnValuesToBeInSet(column="label", value_set=list(label_names)),
        "{n} label value{s} not in the label file",
        f"{prefix}{labels}",
    )
    return GateResult.combine([run_checks(split, rows, checks), run_checks(f"{split}_labels", long, [label_check])])


def _label_rows(df: pd.DataFrame, labels: str) -> dict[str, int]:
    """Rows per label value (a label listed twice in one row counts once)."""
    long = _explode(df, labels).reset_index().drop_duplicates()
    return {str(k): int(v) for k, v in long["label"].value_counts().items()}


def _min_examples(
    split: str, counts: Mapping[str, int], label_names: Sequence[str], min_examples: int, labels: str
) -> GateResult:
    """Every known label needs enough rows in each split, or its model (train) or its metrics (val, test) are noise."""
    frame = pd.DataFrame({"label": list(label_names), "count": [int(counts.get(n, 0)) for n in label_names]})
    check = Check(
        E.ExpectColumnValuesToBeBetween(column="count", min_value=min_examples),
        "{n} label{s} with fewer than " + f"{min_examples} {_SPLIT_WORDS[split]} examples",
        labels if split == "train" else f"{split}.{labels}",
        "ids",
    )
    suffix = "" if split == "train" else f"_{split}"
    return run_checks(f"label_counts{suffix}", frame, [check], id_columns=["label"])


def _explode(df: pd.DataFrame, labels: str) -> pd.DataFrame:
    """One row per (row position, label); positions, since a caller's index may repeat."""
    pairs = [(pos, lab) for pos, value in enumerate(df[labels]) for lab in _as_list(value)]
    index = pd.Index([p[0] for p in pairs], name="row")
    return pd.DataFrame({"label": pd.Series([p[1] for p in pairs], index=index, dtype=object)})


def _as_list(value: Any) -> list:
    """Labels cell -> list; None/NaN/scalars count as 'no labels' (reported, not crashed on)."""
    return list(value) if isinstance(value, (list, tuple, np.ndarray, pd.Series)) else []


def _columns_ok(df: pd.DataFrame, cols: tuple[str, str]) -> bool:
    return all(c in df.columns for c in cols)
