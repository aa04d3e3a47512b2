"""Bootstrap intervals over documents, as pure numpy functions (seeded, so decisions are reproducible)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mlprojects.evaluation.metrics import f1_summary, multilabel_report


def resamples(n_docs: int, n: int, seed: int) -> np.ndarray:
    """[n, n_docs] document indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_docs, size=(n, n_docs))


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_intervals(
    y_true: np.ndarray, y_pred: np.ndarray, n: int = 1000, seed: int = 0, confidence: float = 0.95, label_names=None
) -> dict[str, tuple[float, float]]:
    """Percentile intervals for every score of `multilabel_report`: 'f1_macro', ..., 'per_label.<label>.f1'
    (supports are counts, not scores, and get none)."""
    samples: dict[str, list[float]] = {}
    for idx in resamples(len(y_true), n, seed):
        for key, value in _flatten(multilabel_report(y_true[idx], y_pred[idx], label_names)).items():
            if not key.endswith(".support"):
                samples.setdefault(key, []).append(value)
    return {key: _interval(np.asarray(values), confidence) for key, values in samples.items()}


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metric: Callable[[np.ndarray, np.ndarray], float] = lambda t, p: f1_summary(t, p)["f1_macro"],
) -> dict[str, float]:
    """Gain of model A over model B, both scored on the same resampled documents (pairing removes the noise
    both share). Returns the observed gain, its interval, and the share of resamples where A is not better."""
    diffs = np.array(
        [metric(y_true[idx], pred_a[idx]) - metric(y_true[idx], pred_b[idx]) for idx in resamples(len(y_true), n, seed)]
    )
    low, high = _interval(diffs, confidence)
    return {
        "gain": metric(y_true, pred_a) - metric(y_true, pred_b),
        "low": low,
        "high": high,
        "p_not_better": float((diffs <= 0).mean()),
    }


def _flatten(report: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in report.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = float(value)
    return out
