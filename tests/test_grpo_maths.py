"""GRPO maths against hand-computed values: rewards, advantages, k3 KL, clipped surrogate, aggregation, defaults."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mlprojects.config import GRPO_OVERRIDES_OF_TRL, GRPOParams
from mlprojects.training.grpo_loss import (
    bernoulli_entropy,
    correction_loss,
    group_advantages,
    grpo_loss,
    k3_kl,
    label_logps,
    sample_label_sets,
)
from mlprojects.training.rewards import FeedbackTarget, reward, set_f1, targets_from_feedback

LABELS = ["vat", "payroll", "audit"]


def test_reward_uses_corrected_labels_when_given():
    target = targets_from_feedback([["vat"]], [1], [["vat", "audit"]], LABELS)[0]
    samples = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # F1 with {vat, audit}: exact 1; {vat}: 2·1/(1+2) = 2/3; {payroll}: 0; {}: 0
    assert reward(samples, target) == pytest.approx([1.0, 2 / 3, 0.0, 0.0])


@pytest.mark.parametrize("score,sign", [(5, 1.0), (4, 0.5), (3, 0.0), (2, -0.5), (1, -1.0)])
def test_reward_without_correction_is_agreement_signed_by_score(score, sign):
    target = FeedbackTarget(predicted=np.array([1, 1, 0]), score=score)
    samples = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    # F1 with {vat, payroll}: 1, 2·1/(1+2) = 2/3, 0
    assert reward(samples, target) == pytest.approx([sign * 1.0, sign * 2 / 3, 0.0])


def test_empty_sets_agree():
    assert set_f1(np.array([[0, 0, 0], [1, 0, 0]]), np.array([0, 0, 0])) == pytest.approx([1.0, 0.0])
    assert targets_from_feedback([[]], [5], [[]], LABELS)[0].corrected.sum() == 0


def test_equal_rewards_give_zero_advantage_and_no_nan():
    rewards = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    for scale in ("group", "batch", "none"):
        adv = group_advantages(rewards, scale)
        assert torch.isfinite(adv).all()
        assert torch.equal(adv[0], torch.zeros(4)) and torch.equal(adv[2], torch.zeros(4))
    # (r − mean) / (std + 1e-4) with the unbiased std of [1, 0, 1, 0] = sqrt(1/3)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert group_advantages(rewards)[1] == pytest.approx(torch.tensor([expected, -expected, expected, -expected]))
    assert torch.isfinite(group_advantages(torch.tensor([[2.0]]))).all()  # a group of one: std 0, A = 0


def test_label_logps_and_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = 0.5, 0.75
    samples = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    logps = label_logps(logits, samples)
    assert logps[0, 0] == pytest.approx(torch.tensor([math.log(0.5), math.log(0.75)]))
    assert logps[0, 1] == pytest.approx(torch.tensor([math.log(0.5), math.log(0.25)]))
    h = bernoulli_entropy(logits)[0]
    assert h[0] == pytest.approx(math.log(2))
    assert h[1] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-5)
    # temperature divides the logits for sampling and log-probs alike
    assert label_logps(logits * 2, samples, temperature=2.0) == pytest.approx(logps)


def test_sampling_follows_the_bernoulli_probabilities():
    logits = torch.tensor([[-2.0, 0.0, 2.0]])
    samples = sample_label_sets(logits, 4000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (1, 4000, 3)
    assert samples.mean(1)[0] == pytest.approx(torch.sigmoid(logits)[0], abs=0.03)


def test_k3_kl_hand_values():
    assert float(k3_kl(torch.tensor(-1.0), torch.tensor(-1.0))) == 0.0
    d = -0.5 - (-1.0)  # ref − pol
    assert float(k3_kl(torch.tensor(-1.0), torch.tensor(-0.5))) == pytest.approx(math.exp(d) - d - 1)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_clipped_surrogate_and_aggregation():
    # two sequences of two labels; ratios exp(log_ratio)
    old = torch.zeros(2, 2)
    logps = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.1]]))
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logps, old, None, adv, epsilon=0.2, loss_type="grpo")
    # seq 0 (A=+1): -min(1.5, 1.2) = -1.2, -min(1.0, 1.0) = -1.0
    # seq 1 (A=-1): -min(-0.5, -0.8) = 0.8, -min(-1.1, -1.1) = 1.1
    assert float(out.loss) == pytest.approx(((-1.2 - 1.0) / 2 + (0.8 + 1.1) / 2) / 2)
    assert out.clip_fraction == pytest.approx(2 / 4)  # label 0 of seq 0 (high) and of seq 1 (low)
    for loss_type in ("bnpo", "dapo", "dr_grpo"):  # equal lengths: the aggregations coincide
        assert float(grpo_loss(logps, old, None, adv, loss_type=loss_type).loss) == pytest.approx(float(out.loss))
    with pytest.raises(ValueError):
        grpo_loss(logps, old, None, adv, loss_type="ppo")


def test_kl_term_is_weighted_by_beta():
    logps = torch.log(torch.tensor([[0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    kl = k3_kl(logps, ref).mean()
    zero_adv = torch.zeros(1)
    out = grpo_loss(logps, logps.detach(), ref, zero_adv, beta=0.3)
    assert float(out.loss) == pytest.approx(0.3 * float(kl))
    assert out.kl == pytest.approx(float(kl))
    assert float(grpo_loss(logps, logps.detach(), ref, zero_adv, beta=0.0).loss) == 0.0


def test_gradient_raises_the_log_prob_of_positive_advantage_samples():
    logits = torch.zeros(1, 3, requires_grad=True)
    samples = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    logps = label_logps(logits, samples).reshape(2, 3)
    grpo_loss(logps, logps.detach(), None, torch.tensor([1.0, -1.0])).loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[0, 1] == 0  # descent raises label 0's logit


def test_correction_loss_is_bce_on_corrected_rows_only():
    logits = torch.tensor([[0.0, 2.0], [5.0, -5.0], [1.0, 1.0]])
    corrected = torch.tensor([[1.0, 0.0], [float("nan")] * 2, [0.0, 1.0]])
    # row 0: -log σ(0) = 0.6931, -log(1 - σ(2)) = 2.1269; row 2: -log(1 - σ(1)) = 1.3133, -log σ(1) = 0.3133
    assert float(correction_loss(logits, corrected)) == pytest.approx((0.6931 + 2.1269 + 1.3133 + 0.3133) / 4, abs=1e-4)
    assert float(correction_loss(logits, torch.full((3, 2), float("nan")))) == 0.0


def test_grpo_params_use_trl_names_and_defaults():
    from trl import GRPOConfig

    trl_defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    ours = {f.name: f.default for f in dataclasses.fields(GRPOParams)}
    own = {"lora_r", "lora_alpha", "sft_weight"}
    assert set(ours) - own <= set(trl_defaults), "every GRPO hyperparameter is named as in TRL"
    differs = {k: (v, trl_defaults[k]) for k, v in ours.items() if k not in own and v != trl_defaults[k]}
    assert differs.keys() == GRPO_OVERRIDES_OF_TRL.keys(), differs
    assert all(ours[k] == v for k, v in GRPO_OVERRIDES_OF_TRL.items())
