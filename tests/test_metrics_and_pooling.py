"""Pooling, thresholds and F1 against hand-computed values, and F1 cross-checked with scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mlprojects.evaluation.metrics import decide, f1_summary, tune_thresholds
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
