"""Multi-label metrics and per-label threshold tuning, as pure numpy functions (fast enough for every epoch)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
# One threshold for a whole label set: finer, since a trained logit scale packs many scores near 0 or 1.
SHARED_THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def f1_per_label(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per label; 0 where undefined (sklearn's zero_division=0)."""
    y_true = y_true.astype(bool)
    y_pred = y_pred.astype(bool)
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    return precision, recall, f1, y_true.sum(0)


def f1_summary(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """F1-macro (the platform's primary metric), micro and support-weighted."""
    _, _, f1, support = f1_per_label(y_true, y_pred)
    tp = (y_true.astype(bool) & y_pred.astype(bool)).sum()
    denom = y_true.astype(bool).sum() + y_pred.astype(bool).sum()
    return {
        "f1_macro": float(f1.mean()),
        "f1_micro": float(2 * tp / denom) if denom else 0.0,
        "f1_weighted": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
    }


def tune_thresholds(
    y_true: np.ndarray, probs: np.ndarray, grid: Sequence[float] = DEFAULT_THRESHOLD_GRID
) -> np.ndarray:
    """Per label, the grid threshold with the best F1; ties go to the one closest to 0.5 (least surprising)."""
    grid = np.asarray(grid, dtype=float)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")
    best = np.full(y_true.shape[1], 0.5)
    for j in range(y_true.shape[1]):
        scores = [f1_per_label(y_true[:, j : j + 1], probs[:, j : j + 1] >= t)[2][0] for t in grid[order]]
        best[j] = grid[order][int(np.argmax(scores))]
    return best


def tune_shared_threshold(
    y_true: np.ndarray, probs: np.ndarray, grid: Sequence[float] = SHARED_THRESHOLD_GRID
) -> float:
    """The one grid threshold for every label with the best F1-macro; ties go to the one closest to 0.5. For label
    sets whose own labels cannot be tuned (a request's new labels): tuned on labels that can, applied to all."""
    grid = np.asarray(grid, dtype=float)
    ordered = grid[np.argsort(np.abs(grid - 0.5), kind="stable")]
    scores = [f1_per_label(y_true, probs >= t)[2].mean() for t in ordered]
    return float(ordered[int(np.argmax(scores))])


def decide(probs: np.ndarray, thresholds: np.ndarray, single_label: bool = False) -> np.ndarray:
    """Boolean predictions: per-label thresholds, or the arg-max label for single-label models."""
    if single_label:
        out = np.zeros_like(probs, dtype=bool)
        out[np.arange(len(probs)), probs.argmax(1)] = True
        return out
    return probs >= thresholds


def subset_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of documents whose whole label set is right (sklearn's accuracy_score on multi-hot rows)."""
    return float((y_true.astype(bool) == y_pred.astype(bool)).all(1).mean()) if len(y_true) else 0.0


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str] | None = None) -> dict:
    """Everything the evaluation stage reports: the F1 summary, subset accuracy and per-label scores."""
    names = list(label_names) if label_names is not None else [str(j) for j in range(y_true.shape[1])]
    precision, recall, f1, support = f1_per_label(y_true, y_pred)
    per_label = {
        n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for n, p, r, f, s in zip(names, precision, recall, f1, support)
    }
    return {**f1_summary(y_true, y_pred), "subset_accuracy": subset_accuracy(y_true, y_pred), "per_label": per_label}
