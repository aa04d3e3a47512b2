"""The simulated user of demos and benchmarks: right answers score high, wrong ones low."""

import pytest

from serving.feedback.simulate import agreement_score, simulated_feedback


@pytest.mark.parametrize(
    "predicted,truth,score",
    [
        (["vat"], ["vat"], 5),
        (["vat", "payroll_tax", "memo"], ["vat", "payroll_tax", "memo", "ruling"], 4),  # Jaccard 3/4 -> 1 + 3
        (["vat", "payroll_tax"], ["vat"], 3),  # 1/2 -> 1 + 2
        (["memo"], ["memo", "vat", "ruling"], 2),  # 1/3 -> 1 + 1.33
        (["memo"], ["vat"], 1),
        ([], [], 5),
        ([], ["vat"], 1),
    ],
)
def test_score_is_one_plus_four_times_jaccard(predicted, truth, score):
    assert agreement_score(predicted, truth) == score


def test_scores_follow_agreement_and_corrections_are_the_truth():
    predicted = [["vat"], ["vat", "payroll_tax"], ["memo"]] * 20
    truth = [["vat"], ["vat"], ["memo", "vat"]] * 20
    scores, corrected = simulated_feedback(predicted, truth, corrected_fraction=0.5, seed=0)
    assert scores == [5, 3, 3] * 20
    given = [(c, t) for c, t in zip(corrected, truth) if c is not None]
    assert 15 < len(given) < 45 and all(c == t for c, t in given)
    assert simulated_feedback(predicted, truth, 0.5, seed=0) == (scores, corrected)
