"""The pyfunc contract shared by the torch and ONNX models; numpy/pandas only, so ONNX serving needs no torch.

Input: a DataFrame with `text` (or the model's configured text columns). Params: `label_descriptions`
(dict or JSON string: classify against a new label set, zero-shot) and `threshold` (one threshold for all
labels). Output: `labels` (list), `top_label` (str), `scores` (dict label -> probability).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd


class ContractError(ValueError):
    """The request does not fit the contract; servers answer it with a 4xx."""


def input_texts(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """The `text` column, else the configured text columns joined with '. ' (as in training)."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "text" in frame.columns:
        columns = ["text"]
    elif all(c in frame.columns for c in text_columns):
        columns = list(text_columns)
    else:
        raise ContractError(
            f"input needs a 'text' column or the columns {list(text_columns)}; got {list(frame.columns)}"
        )
    parts = frame[columns].astype("string").fillna("")
    return [". ".join(p.strip() for p in row if p and p.strip()) for row in parts.itertuples(index=False)]


def parse_params(params: dict[str, Any] | None) -> tuple[dict[str, str] | None, float | None]:
    """(label_descriptions, threshold) from pyfunc params; empty values mean 'use the model's own'."""
    params = params or {}
    descriptions = params.get("label_descriptions") or None
    if isinstance(descriptions, str):
        try:
            descriptions = json.loads(descriptions)
        except RecursionError:
            raise ContractError("label_descriptions is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise ContractError(f"label_descriptions is not valid JSON: {exc}") from None
    if descriptions is not None:
        if (
            not isinstance(descriptions, dict)
            or not descriptions
            or not all(isinstance(v, str) and v.strip() for v in descriptions.values())
        ):
            raise ContractError("label_descriptions must be a non-empty mapping of label -> description")
    threshold = params.get("threshold")
    if threshold is not None and threshold != "":
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ContractError(f"threshold must be a number in (0, 1), got {threshold!r}") from None
        if not 0.0 < threshold < 1.0:
            raise ContractError(f"threshold must be in (0, 1), got {threshold}")
    else:
        threshold = None
    return descriptions, threshold


def format_predictions(
    probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray, single_label: bool = False
) -> pd.DataFrame:
    """One row per document: thresholded labels (or the arg-max for single-label models), top label, scores."""
    top = probs.argmax(1) if len(labels) else np.zeros(len(probs), dtype=int)
    rows = []
    for i, p in enumerate(probs):
        chosen = [labels[top[i]]] if single_label else [l for l, s, t in zip(labels, p, thresholds) if s >= t]
        rows.append(
            {
                "labels": chosen,
                "top_label": labels[top[i]],
                "scores": {l: round(float(s), 6) for l, s in zip(labels, p)},
            }
        )
    return pd.DataFrame(rows, columns=["labels", "top_label", "scores"])


def resolve_labels(
    own_labels: Sequence[str], own_thresholds: np.ndarray, descriptions: dict | None, threshold: float | None
) -> tuple[list[str], np.ndarray]:
    """Label names and thresholds for this call: a new label set uses `threshold` (or 0.5) for every label."""
    labels = list(descriptions) if descriptions else list(own_labels)
    if threshold is not None:
        return labels, np.full(len(labels), threshold)
    return labels, (np.full(len(labels), 0.5) if descriptions else np.asarray(own_thresholds))


def to_params(label_descriptions: dict[str, str] | None = None, threshold: float | None = None) -> dict:
    """Params for `pyfunc.predict`: MLflow param schemas have no free-form dict type, so the mapping travels
    as a JSON string (the model accepts a dict too when called directly or through our endpoint)."""
    params: dict = {}
    if label_descriptions:
        params["label_descriptions"] = json.dumps(label_descriptions)
    if threshold is not None:
        params["threshold"] = float(threshold)
    return params
