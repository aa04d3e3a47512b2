"""The benchmark's replay of early stopping must keep the epoch `fit` keeps, or its rows compare other models; a
soup is the mean of its members' merged weights; a refit has no validation score to report."""

import pytest
import torch

from bench.bench_recipe import (
    cross_selected,
    label_texts,
    main,
    merged_soup,
    refit_rules,
    select_with_patience,
    summary,
)
from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model, merged_encoder


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


def test_a_refit_is_kept_at_the_first_runs_epoch_and_has_no_validation_score():
    refit = [{"test_f1_macro": 0.90}, {"test_f1_macro": 0.93}, {"test_f1_macro": 0.91}]
    rules = refit_rules(refit, chosen_epoch=2)  # the F1 rule's epoch is 1-based
    assert rules["refit_f1_epoch"] == {"epoch": 2, "val_f1_macro": None, "test_f1_macro": 0.93}
    assert rules["refit_last"] == {"epoch": 3, "val_f1_macro": None, "test_f1_macro": 0.91}
    per_seed = [
        {"rules": {"last": {"val_f1_macro": 0.8, "test_f1_macro": 0.9}, **rules}},
        {"rules": {"last": {"val_f1_macro": 0.9, "test_f1_macro": 0.8}, **refit_rules(refit, chosen_epoch=1)}},
    ]
    table = summary(per_seed)
    assert table["refit_f1_epoch"]["val_mean"] is None and table["refit_f1_epoch"]["val_sd"] is None
    assert table["refit_f1_epoch"]["test_mean"] == pytest.approx((0.93 + 0.90) / 2)
    assert table["last"]["val_mean"] == pytest.approx(0.85)


def test_a_soup_averages_the_members_merged_weights_not_their_lora_factors(tiny_encoder):
    members = []
    for seed, (scale, bias) in zip((1, 2), ((10.0, -2.0), (30.0, -4.0))):
        torch.manual_seed(seed)
        model = build_model(TrainConfig(encoder=tiny_encoder, lora_r=2, init_scale=scale, init_bias=bias))
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero at initialisation: give each member its own update
                torch.nn.init.normal_(param, std=0.5)
        members.append(model)
    merged = [dict(merged_encoder(m).named_parameters()) for m in members]
    soup = merged_soup(members)
    for name, weight in soup.encoder.named_parameters():
        assert torch.allclose(weight, (merged[0][name] + merged[1][name]) / 2, atol=1e-6), name
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(merged[0][query], merged[1][query])  # the members differ where LoRA acts
    assert float(soup.scale) == pytest.approx(20.0) and float(soup.bias) == pytest.approx(-3.0)
    assert soup.embed(["a tax return"]).shape == members[0].embed(["a tax return"]).shape


def test_demo_timing_refuses_more_repeats_than_seeds_before_training(tmp_path, capsys):
    out = tmp_path / "times.json"
    with pytest.raises(SystemExit) as stop:
        main(["--demo", "--recipe", "a:", "--seeds", "42,7", "--repeats", "3", "--out", str(out)])
    assert (
        stop.value.code == 2 and "--repeats 3 needs as many --seeds (one per repeat), got 2" in capsys.readouterr().err
    )
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["--demo", "--recipe", "a:", "--repeats", "0", "--out", str(out)])
