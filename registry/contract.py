"""The pyfunc contract: one predict path for the torch and the ONNX model, so their answers cannot drift.
numpy/pandas only, so ONNX serving needs no torch.

Input: a DataFrame with `text` (or the model's configured text columns). Params: `label_descriptions`
(dict or JSON string: classify against a new label set, zero-shot) and `threshold` (one threshold for all
labels). Output: OUTPUT_COLUMNS, `labels` (list), `top_label` (str), `scores` (dict label -> probability),
`label_set` ("model": the model's own labels and tuned thresholds; "request": the request's label set, zero-shot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from registry.errors import PlatformError

CORE_COLUMNS = ("labels", "top_label", "scores")  # what every version answers, those logged before `label_set` too
LABELS, TOP_LABEL, SCORES = CORE_COLUMNS
LABEL_SET = "label_set"
OUTPUT_COLUMNS = (*CORE_COLUMNS, LABEL_SET)
MODEL_SET, REQUEST_SET = "model", "request"  # LABEL_SET values: the model's own labels, or the request's
DESCRIPTIONS_PARAM, THRESHOLD_PARAM = "label_descriptions", "threshold"
REQUEST_THRESHOLD = 0.5  # for every label of a request set, unless the model was saved with a tuned one
MAPPING_ERROR = f"{DESCRIPTIONS_PARAM} must be a non-empty mapping of label -> description"


@dataclass(frozen=True)
class LabelSetLimits:
    """Bounds on every label set (label files, options, requests): each label is embedded per request, and the
    encoder reads a description only up to its token window, so a longer one is a mistake, not more signal."""

    max_labels: int = 256
    max_label_chars: int = 200
    max_description_chars: int = 1000


LIMITS = LabelSetLimits()


class ContractError(PlatformError, ValueError):
    """The request does not fit the contract: servers answer it with a 4xx, commands with `error: ...` and exit 2."""


class Scorer(Protocol):
    """What a model needs to answer through `predict`: its labels and decisions, and probabilities for texts."""

    labels: list[str]
    label_descriptions: dict[str, str]
    thresholds: np.ndarray
    request_threshold: float  # for every label of a request's own label set
    single_label: bool
    text_columns: Sequence[str]

    def predict_proba(self, texts: list[str], label_descriptions: dict[str, str] | None = None) -> np.ndarray: ...


def predict(model: Scorer, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The contract's answer for `model_input`: what both pyfuncs return, and what a logged model's example
    output is made of. No documents, no scoring: an empty answer with the contract's columns."""
    descriptions, threshold = parse_params(params)
    if descriptions:
        check_known_labels(model.label_descriptions, descriptions)
    # a model loaded with code from before the tuned request threshold has none: it answered with the default
    request_threshold = getattr(model, "request_threshold", REQUEST_THRESHOLD)
    labels, thresholds = resolve_labels(model.labels, model.thresholds, descriptions, threshold, request_threshold)
    texts = input_texts(model_input, model.text_columns)
    probs = model.predict_proba(texts, descriptions) if texts else np.zeros((0, len(labels)))
    single = model.single_label and descriptions is None and threshold is None
    return format_predictions(probs, labels, thresholds, single, REQUEST_SET if descriptions else MODEL_SET)


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


def unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    """A JSON or YAML mapping whose keys repeat is refused: json and PyYAML would keep the last one silently."""
    keys = [k for k, _ in pairs]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:
        raise ContractError(f"{DESCRIPTIONS_PARAM} repeats the label(s) {repeated}")
    return dict(pairs)


def normalise(text: Any) -> str:
    """One line, single spaces: how descriptions are compared and shown, and how a document is identified."""
    return " ".join(str(text).split())


def label_key(label: str) -> str:
    """Labels that differ only in case or surrounding spaces are the same label."""
    return label.strip().casefold()


def label_descriptions(value: Any, limits: LabelSetLimits = LIMITS) -> dict[str, str]:
    """A label set to classify against, as a mapping or its JSON text: non-empty, every label and every
    description non-empty text within `limits`, no label twice (ignoring case and spaces). Labels come back
    stripped, descriptions on one line. The one check of a label -> description mapping (requests, files,
    options)."""
    if isinstance(value, str):
        try:
            value = json.loads(value, object_pairs_hook=unique_keys)
        except ContractError:
            raise
        except RecursionError:
            raise ContractError(f"{DESCRIPTIONS_PARAM} is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise ContractError(f"{DESCRIPTIONS_PARAM} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise ContractError(MAPPING_ERROR)
    bad = [str(k) for k, v in value.items() if not isinstance(v, str) or not v.strip() or not str(k).strip()]
    if bad:
        raise ContractError(f"{MAPPING_ERROR}; labels without a text description: {bad}")
    if len(value) > limits.max_labels:
        raise ContractError(f"{DESCRIPTIONS_PARAM} has {len(value)} labels; at most {limits.max_labels} are allowed")
    clean = {str(k).strip(): normalise(v) for k, v in value.items()}
    long_names = [k[:40] for k in clean if len(k) > limits.max_label_chars]
    if long_names:
        raise ContractError(f"label names longer than {limits.max_label_chars} characters: {long_names}")
    long = [k for k, v in clean.items() if len(v) > limits.max_description_chars]
    if long:
        raise ContractError(f"descriptions longer than {limits.max_description_chars} characters for labels {long}")
    seen: dict[str, str] = {}
    for label in value:
        key = label_key(str(label))
        if key in seen:
            raise ContractError(
                f"{DESCRIPTIONS_PARAM} names one label twice: {seen[key]!r} and {str(label).strip()!r} "
                "(labels ignore case and surrounding spaces)"
            )
        seen[key] = str(label).strip()
    return clean


def check_known_labels(own: dict[str, str], requested: dict[str, str]) -> None:
    """A request may reuse the model's labels only with the model's descriptions: the same name meaning two
    things in one answer (or between answers) would make its scores and feedback ambiguous."""
    own_by_key = {label_key(k): normalise(v) for k, v in own.items()}
    conflicts = [
        label
        for label, text in requested.items()
        if own_by_key.get(label_key(label), normalise(text)) != normalise(text)
    ]
    if conflicts:
        raise ContractError(
            f"{DESCRIPTIONS_PARAM} gives the model's own label(s) {conflicts} other descriptions: "
            "use the model's descriptions for its labels, or other names for new ones"
        )


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
    probs: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray,
    single_label: bool = False,
    label_set: str = MODEL_SET,
) -> pd.DataFrame:
    """One row per document: thresholded labels (or the arg-max for single-label models), top label, scores,
    and which label set answered (a client cannot tell a zero-shot answer from the model's own otherwise)."""
    top = probs.argmax(1) if len(labels) else np.zeros(len(probs), dtype=int)
    rows = []
    for i, p in enumerate(probs):
        chosen = [labels[top[i]]] if single_label else [l for l, s, t in zip(labels, p, thresholds) if s >= t]
        rows.append((chosen, labels[top[i]], {l: round(float(s), 6) for l, s in zip(labels, p)}, label_set))
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def resolve_labels(
    own_labels: Sequence[str],
    own_thresholds: np.ndarray,
    descriptions: dict | None,
    threshold: float | None,
    request_threshold: float = REQUEST_THRESHOLD,
) -> tuple[list[str], np.ndarray]:
    """Label names and thresholds for this call: a new label set uses `threshold` (or the model's
    `request_threshold`) for every label; its labels have no tuned thresholds of their own."""
    labels = list(descriptions) if descriptions else list(own_labels)
    if threshold is not None:
        return labels, np.full(len(labels), threshold)
    return labels, (np.full(len(labels), request_threshold) if descriptions else np.asarray(own_thresholds))


def to_params(label_descriptions: dict[str, str] | None = None, threshold: float | None = None) -> dict:
    """Params for `pyfunc.predict`: MLflow param schemas have no free-form dict type, so the mapping travels
    as a JSON string (the model accepts a dict too when called directly or through our endpoint)."""
    params: dict = {}
    if label_descriptions:
        params[DESCRIPTIONS_PARAM] = json.dumps(label_descriptions)
    if threshold is not None:
        params[THRESHOLD_PARAM] = float(threshold)
    return params
