"""The benchmark's replay of early stopping must keep the epoch `fit` keeps, or its rows compare other models."""

import pytest

from bench.bench_recipe import cross_selected, label_texts, select_with_patience


@pytest.mark.parametrize(
    "scores,patience,higher,kept",
    [
        ([0.80, 0.90, 0.85, 0.95], 1, True, 1),  # stopped after epoch 3: epoch 4's 0.95 is never trained
        ([0.80, 0.90, 0.85, 0.95], 2, True, 3),
        ([0.90, 0.90, 0.90], 3, True, 0),  # ties keep the earlier epoch, as `fit` (strictly better only)
        ([0.30, 0.20, 0.25, 0.10], 1, False, 1),  # validation loss: lower is better
        ([0.30, 0.20, 0.25, 0.10], 3, False, 3),
    ],
)
def test_select_with_patience_replays_early_stopping(scores, patience, higher, kept):
    assert select_with_patience(scores, patience, higher) == kept


def test_label_texts_prefix_the_name_only_when_asked():
    descriptions = {"mlops": "Deploying models.", "other": "Anything else."}
    assert label_texts(descriptions, "description") == descriptions
    assert label_texts(descriptions, "name+description") == {
        "mlops": "mlops: Deploying models.",
        "other": "other: Anything else.",
    }
    assert list(label_texts(descriptions, "name+description")) == ["mlops", "other"]  # label order kept
    with pytest.raises(ValueError):
        label_texts(descriptions, "name")


def test_cross_selection_chooses_on_one_half_and_scores_on_the_other():
    epochs = [
        {"val_half_f1": [0.80, 0.70], "test_f1_macro": 0.90},
        {"val_half_f1": [0.90, 0.60], "test_f1_macro": 0.92},  # half A's best; half B's worst
        {"val_half_f1": [0.70, 0.75], "test_f1_macro": 0.94},  # half B's best
    ]
    rule = cross_selected(epochs, patience=3)
    assert rule["epochs"] == [2, 3]  # chosen on A, then on B
    assert rule["val_f1_macro"] == pytest.approx((0.60 + 0.70) / 2)  # each scored on the other half
    assert rule["test_f1_macro"] == pytest.approx((0.92 + 0.94) / 2)
