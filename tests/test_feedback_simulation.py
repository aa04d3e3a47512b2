"""The simulated user of demos and benchmarks: right answers score high, wrong ones low."""
from serving.feedback.simulate import simulated_feedback


def test_scores_follow_agreement_and_corrections_are_the_truth():
    predicted = [["vat"], ["vat", "payroll_tax"], ["memo"]] * 20
    truth = [["vat"], ["vat"], ["memo", "vat"]] * 20
    scores, corrected = simulated_feedback(predicted, truth, corrected_fraction=0.5, seed=0)
    assert all(s in (4, 5) for s in scores[0::3])
    assert all(s in (1, 2) for s in scores[1::3] + scores[2::3])
    given = [(c, t) for c, t in zip(corrected, truth) if c is not None]
    assert 15 < len(given) < 45 and all(c == t for c, t in given)
    assert simulated_feedback(predicted, truth, 0.5, seed=0) == (scores, corrected)
