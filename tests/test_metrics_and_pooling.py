"""Pooling, thresholds and F1 against hand-computed values, and F1 cross-checked with scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mlprojects.evaluation.metrics import decide, f1_summary, tune_shared_threshold, tune_thresholds
from mlprojects.model.encoder import cls_pool, mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]
    assert cls_pool(hidden, mask).tolist() == [[1.0, 2.0]]


def test_threshold_tuning_separates_classes():
    y = np.array([[1], [1], [0], [0]])
    probs = np.array([[0.9], [0.6], [0.55], [0.1]])
    assert tune_thresholds(y, probs).tolist() == [0.6]  # the only grid point in (0.55, 0.6]


def test_threshold_ties_prefer_half():
    y = np.array([[1], [0]])
    probs = np.array([[0.99], [0.01]])  # every threshold in (0.01, 0.99] is perfect
    assert tune_thresholds(y, probs).tolist() == [0.5]


def test_one_shared_threshold_maximises_f1_macro_over_all_labels():
    """By hand: label a is perfect for t in (0.20, 0.35], label b for t in (0.32, 0.40]; both only in (0.32, 0.35],
    where the grid's 0.33, 0.34 and 0.35 tie at F1-macro 1 and the one closest to 0.5 wins. At 0.5 each label
    finds one of its two documents (F1 2/3)."""
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.60, 0.25], [0.20, 0.70], [0.35, 0.40], [0.10, 0.32]])
    assert tune_shared_threshold(y, probs) == 0.35
    assert f1_summary(y, probs >= 0.5)["f1_macro"] == pytest.approx(2 / 3)
    # 0.3: a perfect, b also takes the 0.32 (F1 4/5): 0.9 beats 0.5 (2/3) and 0.7 (a finds none: 1/3)
    assert tune_shared_threshold(y, probs, grid=[0.3, 0.5, 0.7]) == 0.3


def test_decide_threshold_and_single_label():
    probs = np.array([[0.7, 0.8], [0.2, 0.1]])
    assert decide(probs, np.array([0.75, 0.75])).tolist() == [[False, True], [False, False]]
    assert decide(probs, np.array([0.75, 0.75]), single_label=True).tolist() == [[False, True], [True, False]]


def test_f1_summary_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, (50, 4))
    y_pred = rng.integers(0, 2, (50, 4))
    ours = f1_summary(y_true, y_pred)
    for avg in ("macro", "micro", "weighted"):
        assert ours[f"f1_{avg}"] == pytest.approx(f1_score(y_true, y_pred, average=avg, zero_division=0))
