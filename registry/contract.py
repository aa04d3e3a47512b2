"""The pyfunc contract: one predict path for the torch and the ONNX model, so their answers cannot drift.
numpy/pandas only, so ONNX serving needs no torch.

Input: a DataFrame with `text` (or the model's configured text columns). Params: `label_descriptions`
(dict or JSON string: classify against a new label set, zero-shot) and `threshold` (one threshold for all
labels). Output: OUTPUT_COLUMNS, `labels` (list), `top_label` (str), `scores` (dict label -> probability).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

OUTPUT_COLUMNS = ("labels", "top_label", "scores")
LABELS, TOP_LABEL, SCORES = OUTPUT_COLUMNS
DESCRIPTIONS_PARAM, THRESHOLD_PARAM = "label_descriptions", "threshold"
MAPPING_ERROR = f"{DESCRIPTIONS_PARAM} must be a non-empty mapping of label -> description"


class ContractError(ValueError):
    """The request does not fit the contract; servers answer it with a 4xx."""


class Scorer(Protocol):
    """What a model needs to answer through `predict`: its labels and decisions, and probabilities for texts."""

    labels: list[str]
    thresholds: np.ndarray
    single_label: bool
    text_columns: Sequence[str]

    def predict_proba(self, texts: list[str], label_descriptions: dict[str, str] | None = None) -> np.ndarray: ...


def predict(model: Scorer, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The contract's answer for `model_input`: what both pyfuncs return, and what a logged model's example
    output is made of. No documents, no scoring: an empty answer with the contract's columns."""
    descriptions, threshold = parse_params(params)
    labels, thresholds = resolve_labels(model.labels, model.thresholds, descriptions, threshold)
    texts = input_texts(model_input, model.text_columns)
    probs = model.predict_proba(texts, descriptions) if texts else np.zeros((0, len(labels)))
    single = model.single_label and descriptions is None and threshold is None
    return format_predictions(probs, labels, thresholds, single)


def join_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each row's `columns` joined with '. ', empty parts skipped, so a title and a body read as one document
    (the one way text is joined, in training and at inference)."""
    parts = frame[list(columns)].astype("string").fillna("")
    return [". ".join(p.strip() for p in row if p and p.strip()) for row in parts.itertuples(index=False)]


def input_texts(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """The `text` column, else the configured text columns joined as in training."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "text" in frame.columns:
        return join_columns(frame, ["text"])
    if all(c in frame.columns for c in text_columns):
        return join_columns(frame, text_columns)
    raise ContractError(f"input needs a 'text' column or the columns {list(text_columns)}; got {list(frame.columns)}")


def label_descriptions(value: Any) -> dict[str, str]:
    """A label set to classify against, as a mapping or its JSON text: non-empty, every label and every
    description non-empty text. The one check of a label -> description mapping (requests, files, options)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise ContractError(f"{DESCRIPTIONS_PARAM} is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise ContractError(f"{DESCRIPTIONS_PARAM} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise ContractError(MAPPING_ERROR)
    bad = [str(k) for k, v in value.items() if not isinstance(v, str) or not v.strip() or not str(k).strip()]
    if bad:
        raise ContractError(f"{MAPPING_ERROR}; labels without a text description: {bad}")
    return dict(value)


def parse_params(params: dict[str, Any] | None) -> tuple[dict[str, str] | None, float | None]:
    """(label_descriptions, threshold) from pyfunc params; empty values mean 'use the model's own'."""
    params = params or {}
    given = params.get(DESCRIPTIONS_PARAM)
    descriptions = label_descriptions(given) if given else None
    threshold = params.get(THRESHOLD_PARAM)
    if threshold is None or threshold == "":
        return descriptions, None
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ContractError(f"threshold must be a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < threshold < 1.0:
        raise ContractError(f"threshold must be in (0, 1), got {threshold}")
    return descriptions, threshold


def format_predictions(
    probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray, single_label: bool = False
) -> pd.DataFrame:
    """One row per document: thresholded labels (or the arg-max for single-label models), top label, scores."""
    top = probs.argmax(1) if len(labels) else np.zeros(len(probs), dtype=int)
    rows = []
    for i, p in enumerate(probs):
        chosen = [labels[top[i]]] if single_label else [l for l, s, t in zip(labels, p, thresholds) if s >= t]
        rows.append((chosen, labels[top[i]], {l: round(float(s), 6) for l, s in zip(labels, p)}))
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


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
        params[DESCRIPTIONS_PARAM] = json.dumps(label_descriptions)
    if threshold is not None:
        params[THRESHOLD_PARAM] = float(threshold)
    return params
