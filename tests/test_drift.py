"""The monitor's statistics against values computed by hand, and the verdict rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlprojects.config import MonitorConfig
from mlprojects.evaluation.drift import (
    binned_psi,
    chi2_homogeneity,
    ks,
    label_counts,
    linear_trend,
    median_bandwidth,
    mmd2_unbiased,
    mmd_test,
    psi,
    verdict,
)


def test_psi_by_hand():
    # shares (0.5, 0.5) -> (0.25, 0.75): (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 3
    assert psi(np.array([1, 1]), np.array([1, 3])) == pytest.approx(0.25 * math.log(3))
    assert psi(np.array([2, 5, 3]), np.array([4, 10, 6])) == pytest.approx(0.0)
    # an empty bin counts as a share of 1e-4, not as an infinite shift: (1e-4 - 0.5) ln(1e-4 / 0.5) + 0.5 ln(0.5/0.5)
    assert psi(np.array([1, 1]), np.array([0, 2])) == pytest.approx(
        (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5), rel=1e-3
    )


def test_label_counts_put_documents_with_no_known_label_in_their_own_bucket():
    counts = label_counts([["a"], ["a", "b"], [], ["unknown"], None], ["a", "b"])
    assert counts.tolist() == [2, 1, 3]


def test_binned_psi_uses_the_reference_quantiles():
    reference = np.arange(10) / 10  # two bins split at its median 0.45: five and five
    window = np.array([0.1, 0.9, 0.95, 0.99])  # one and three
    assert binned_psi(reference, window, n_bins=2) == pytest.approx(0.25 * math.log(3))


def test_mmd_by_hand():
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    within = math.exp(-0.5)  # k(0, 1) = k(2, 3) = exp(-1 / 2): each within-sample mean over i != j
    across = (math.exp(-2) + math.exp(-4.5) + math.exp(-0.5) + math.exp(-2)) / 4  # distances 2, 3, 1, 2
    assert mmd2_unbiased(x, y, bandwidth=1.0) == pytest.approx(within + within - 2 * across)  # 0.76891
    assert median_bandwidth(np.array([[0.0], [1.0]]), np.array([[3.0]])) == pytest.approx(2.0)  # of 1, 3, 2


def test_mmd_permutation_test_separates_a_shift_from_the_same_distribution():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    same = mmd_test(a, b, permutations=100, seed=1)
    shifted = mmd_test(a, b + 1.0, permutations=100, seed=1)
    assert shifted["p_value"] == pytest.approx(1 / 101)  # no permutation reaches the observed MMD²
    assert same["p_value"] > 0.05 and shifted["mmd2"] > same["mmd2"]


def test_chi2_by_hand():
    # expected 10 in each cell: 4 x (10 - 0)² / 10 = 40 on 1 degree of freedom
    statistic, p = chi2_homogeneity(np.array([20, 0, 0]), np.array([0, 20, 0]))  # the empty category is left out
    assert statistic == pytest.approx(40.0) and p == pytest.approx(math.erfc(math.sqrt(20)))  # chi2(1).sf(40)
    assert chi2_homogeneity(np.array([10, 10]), np.array([5, 5]))[1] == pytest.approx(1.0)


def test_ks_and_trend_by_hand():
    assert ks(np.array([1, 2, 3, 4.0]), np.array([5, 6, 7, 8.0]))[0] == 1.0
    assert linear_trend(np.array([0, 1, 2]), np.array([5, 4, 3])) == pytest.approx(-1.0)
    assert math.isnan(linear_trend(np.array([1, 1]), np.array([5, 4])))


CFG = MonitorConfig(min_docs=30, min_feedback=20, min_corrected=20)
QUIET = {
    "served_docs": 100,
    "feedback": 50,
    "corrected": 30,
    "label_psi": 0.05,
    "label_chi2_p_value": 0.6,
    "score_psi": 0.02,
    "score_ks_p_value": 0.5,
    "mmd2": 0.001,
    "mmd_p_value": 0.4,
    "f1_macro": 0.78,
    "f1_macro_high": 0.85,
    "feedback_mean_score": 4.1,
}


@pytest.mark.parametrize(
    "changes,expected,reason",
    [
        ({}, "ok", "no statistic crossed"),
        ({"served_docs": 0, "feedback": 0}, None, "no traffic"),
        ({"served_docs": 10, "feedback": 5, "corrected": 2}, None, "too little traffic"),
        ({"label_psi": 0.4, "label_chi2_p_value": 0.001}, "drift", "label mix shifted: PSI 0.400"),
        ({"label_psi": 0.4}, "ok", "no statistic crossed"),  # large but not significant: small-sample noise
        ({"mmd_p_value": 0.005, "mmd2": 0.02}, "drift", "document embeddings drifted"),
        ({"served_docs": 10, "label_psi": 0.9}, "ok", "no statistic crossed"),  # too few documents for a PSI
        ({"f1_macro": 0.6, "f1_macro_high": 0.7}, "degraded", "below the champion's test F1-macro 0.800"),
        ({"f1_macro_high": 0.76}, "ok", "no statistic crossed"),  # within max_f1_drop of 0.80
        ({"feedback_mean_score": 2.4}, "degraded", "mean feedback score 2.40"),
        (
            {"feedback_mean_score": 2.4, "score_psi": 0.3, "score_ks_p_value": 0.0},
            "degraded",
            "top-score distribution shifted",
        ),
    ],
)
def test_verdict(changes, expected, reason):
    result = verdict({**QUIET, **changes}, champion_f1=0.80, t=CFG)
    assert result.verdict == expected and any(reason in r for r in result.reasons), result
