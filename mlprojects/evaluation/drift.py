"""Drift and degradation statistics of a monitoring window against a reference, as pure numpy functions, and the
verdict they add up to. Each is unit-tested against values computed by hand.

- Population Stability Index (Siddiqi, *Credit Risk Scorecards*, Wiley 2006; the usual reading: < 0.1 stable,
  0.1-0.25 some shift, > 0.25 a significant shift), for the label mix and the binned top scores.
- Pearson's chi-square test of homogeneity for the label mix, the two-sample Kolmogorov-Smirnov test for the top
  scores (scipy's p-values): a shift counts when it is both significant and, by its PSI, large.
- Maximum Mean Discrepancy with a Gaussian kernel for document embeddings: the unbiased estimate MMD²_u and a
  permutation test (Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13:723-773,
  2012, eq. 3 and section 5), kernel width by the median heuristic (ibid., section 8), as in Rabanser, Günnemann,
  Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting Dataset Shift", NeurIPS 2019.
- The feedback score's least-squares slope over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from mlprojects.config import MonitorConfig
from mlprojects.data import multi_hot

PSI_EPS = 1e-4  # an empty bin's share: PSI is infinite at 0, and one bin should not say "infinite shift" alone


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPS) -> float:
    """PSI = Σ (a_i - e_i) ln(a_i / e_i) over the two count (or share) vectors, normalised to shares."""
    e = np.clip(np.asarray(expected, float) / np.sum(expected), eps, None)
    a = np.clip(np.asarray(actual, float) / np.sum(actual), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def label_counts(label_lists, label_names: list[str]) -> np.ndarray:
    """How often each label was assigned, plus a last bucket for documents given no known label at all."""
    assigned = multi_hot(list(label_lists), label_names)
    return np.append(assigned.sum(0), (assigned.sum(1) == 0).sum()).astype(float)


def quantile_bins(reference: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (each bin holds ~1/n_bins of it); repeated edges merged."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1)[1:-1]))


def binned_psi(reference: np.ndarray, window: np.ndarray, n_bins: int = 10) -> float:
    """PSI of a continuous value (e.g. the top score) over the reference's quantile bins."""
    edges = quantile_bins(reference, n_bins)
    counts = lambda x: np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)  # noqa: E731
    return psi(counts(reference), counts(window))


def chi2_homogeneity(reference_counts: np.ndarray, window_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of Pearson's chi-square test that two count vectors come from one distribution (no
    continuity correction; categories empty in both are left out). Unlike a PSI threshold it knows the sample
    sizes: on 50 documents a PSI of 0.25 is ordinary noise."""
    table = np.vstack([reference_counts, window_counts])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def ks(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample Kolmogorov-Smirnov test."""
    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median pairwise Euclidean distance of the pooled samples (the median heuristic); 1.0 if all coincide."""
    pooled = np.vstack([x, y])
    d = np.sqrt(np.maximum(_sq_dists(pooled, pooled), 0))
    positive = d[np.triu_indices(len(pooled), k=1)]
    positive = positive[positive > 0]
    return float(np.median(positive)) if positive.size else 1.0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """MMD²_u with k(a, b) = exp(-|a-b|² / (2 σ²)): the within-sample means exclude the diagonal (eq. 3)."""
    k = _kernel(np.vstack([x, y]), bandwidth)
    return _mmd2_from_kernel(k, len(x))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0) -> dict[str, float]:
    """MMD²_u, the median-heuristic bandwidth and the permutation p-value ((1 + #{perm ≥ observed}) / (1 + P)):
    the samples pooled and split at random `permutations` times, the kernel matrix computed once."""
    bandwidth = median_bandwidth(x, y)
    k = _kernel(np.vstack([x, y]), bandwidth)
    observed = _mmd2_from_kernel(k, len(x))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(k))
        exceed += _mmd2_from_kernel(k[np.ix_(order, order)], len(x)) >= observed
    return {"mmd2": observed, "bandwidth": bandwidth, "p_value": (1 + exceed) / (1 + permutations)}


def linear_trend(t: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of values over t (NaN with fewer than two distinct times)."""
    t, values = np.asarray(t, float), np.asarray(values, float)
    if len(np.unique(t)) < 2:
        return float("nan")
    return float(np.polyfit(t, values, 1)[0])


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T


def _kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-np.maximum(_sq_dists(z, z), 0) / (2 * bandwidth**2))


def _mmd2_from_kernel(k: np.ndarray, m: int) -> float:
    n = len(k) - m
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def traffic_problem(served: int, rated: int, corrected: int, t: MonitorConfig) -> str | None:
    """Why a window cannot be judged (no traffic, or too little for any statistic), or None when it can."""
    if served == 0 and rated == 0:
        return "no traffic in the window: no document served and no feedback"
    if served < t.min_docs and rated < t.min_feedback and corrected < t.min_corrected:
        return (
            f"too little traffic to judge: {served} documents served (minimum {t.min_docs}), {rated} rated "
            f"(minimum {t.min_feedback}), {corrected} corrected (minimum {t.min_corrected})"
        )
    return None


@dataclass
class Verdict:
    verdict: str | None  # ok | drift | degraded; None: no traffic, nothing to judge
    reasons: list[str] = field(default_factory=list)


def verdict(m: dict, champion_f1: float | None, t: MonitorConfig) -> Verdict:
    """`degraded` when feedback says the champion got worse (the F1 from corrected feedback is below its test F1
    by more than `max_f1_drop` even at the top of its interval, or the mean feedback score fell below
    `min_mean_score`), else `drift` when the traffic moved away from the reference (the label mix or the top
    scores with a PSI above `max_psi` and a test p-value below `min_p`, or the embeddings with an MMD p-value
    below `min_p`), else `ok`. A statistic on fewer documents than its minimum is not used; a
    window where none has enough gets no verdict."""
    if too_little := traffic_problem(m.get("served_docs", 0), m.get("feedback", 0), m.get("corrected", 0), t):
        return Verdict(None, [too_little])
    degraded, drift = [], []
    if (
        champion_f1 is not None
        and m.get("corrected", 0) >= t.min_corrected
        and m["f1_macro_high"] < champion_f1 - t.max_f1_drop
    ):
        degraded.append(
            f"F1-macro from {m['corrected']} corrected feedback {m['f1_macro']:.3f} "
            f"(interval up to {m['f1_macro_high']:.3f}) is more than {t.max_f1_drop} below the "
            f"champion's test F1-macro {champion_f1:.3f}"
        )
    if m.get("feedback", 0) >= t.min_feedback and m["feedback_mean_score"] < t.min_mean_score:
        degraded.append(
            f"mean feedback score {m['feedback_mean_score']:.2f} of {m['feedback']} ratings is below {t.min_mean_score}"
        )
    if m.get("served_docs", 0) >= t.min_docs:
        for key, test, what in (
            ("label_psi", "label_chi2_p_value", "label mix"),
            ("score_psi", "score_ks_p_value", "top-score distribution"),
        ):
            if m.get(key, 0.0) > t.max_psi and m.get(test, 1.0) < t.min_p:
                drift.append(f"{what} shifted: PSI {m[key]:.3f} > {t.max_psi}, p = {m[test]:.2g} < {t.min_p}")
        if m.get("mmd_p_value", 1.0) < t.min_p:
            drift.append(
                f"document embeddings drifted: MMD² {m['mmd2']:.4f}, permutation p = {m['mmd_p_value']:.3f} < {t.min_p}"
            )
    if degraded:
        return Verdict("degraded", degraded + drift)
    return Verdict("drift", drift) if drift else Verdict("ok", ["no statistic crossed its threshold"])
