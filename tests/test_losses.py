"""Losses against values computed by hand (see the comments for the arithmetic)."""

import math

import pytest
import torch

from mlprojects.training.losses import anchor_loss, bce_loss, contrastive_margin_loss, label_softmax_loss, sft_loss

LOGITS = torch.tensor([[2.0, -1.0]])
TARGETS = torch.tensor([[1.0, 0.0]])
# -log σ(2) = log(1+e^-2) = 0.126928 ; -log(1-σ(-1)) = log(1+e^-1) = 0.313262
T1, T2 = math.log1p(math.exp(-2)), math.log1p(math.exp(-1))


def test_bce_matches_hand_computed():
    assert bce_loss(LOGITS, TARGETS).item() == pytest.approx((T1 + T2) / 2, abs=1e-6)  # 0.220095


def test_pos_weight_scales_positive_term_only():
    assert bce_loss(LOGITS, TARGETS, pos_weight=2.0).item() == pytest.approx((2 * T1 + T2) / 2, abs=1e-6)


def test_focal_loss_down_weights_easy_examples():
    p1, p2 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))  # σ(2), σ(-1)
    expected = (T1 * (1 - p1) ** 2 + T2 * p2**2) / 2  # p_t = p1 for the positive, 1 - p2 for the negative
    assert bce_loss(LOGITS, TARGETS, focal_gamma=2.0).item() == pytest.approx(expected, abs=1e-6)  # 0.012231
    assert bce_loss(LOGITS, TARGETS, focal_gamma=0.0).item() == pytest.approx((T1 + T2) / 2, abs=1e-6)


def test_contrastive_margin():
    cos = torch.tensor([[0.9, 0.5, 0.1]])
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    # pos: 1 - 0.9 = 0.1 ; neg: relu(0.5 - 0.2) = 0.3, relu(0.1 - 0.2) = 0 -> 0.4 / 3
    assert contrastive_margin_loss(cos, targets, margin=0.2).item() == pytest.approx(0.4 / 3, abs=1e-6)


def test_sft_loss_with_soft_labels_averages_hard_and_soft_bce():
    logits, cos, hard, soft = torch.tensor([[2.0]]), torch.tensor([[0.9]]), torch.tensor([[1.0]]), torch.tensor([[0.5]])
    soft_bce = 0.5 * T1 + 0.5 * (2 + T1)  # -log(1-σ(2)) = 2 + log(1+e^-2)
    total, parts = sft_loss(logits, cos, hard, soft, contrastive_weight=0.5, margin=0.2)
    assert total.item() == pytest.approx(0.5 * T1 + 0.5 * soft_bce + 0.5 * 0.1, abs=1e-6)  # 0.676928
    assert parts["contrastive"] == pytest.approx(0.1, abs=1e-6)


def test_sft_loss_without_soft_labels_is_bce_plus_weighted_margin():
    total, parts = sft_loss(LOGITS, torch.tensor([[0.9, 0.5]]), TARGETS, contrastive_weight=1.0, margin=0.2)
    assert total.item() == pytest.approx((T1 + T2) / 2 + (0.1 + 0.3) / 2, abs=1e-6)
    assert parts["bce"] == pytest.approx((T1 + T2) / 2, abs=1e-6)


def test_label_softmax_is_cross_entropy_over_labels_with_positives_shared():
    logits = torch.tensor([[2.0, -1.0, 0.0], [1.0, 1.0, 0.0], [5.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    z1 = math.exp(2) + math.exp(-1) + 1  # softmax denominators; the third document has no positive: left out
    z2 = 2 * math.e + 1
    first = -(2 - math.log(z1))  # 0.175
    second = -(0.5 * (1 - math.log(z2)) * 2)  # each positive 1/2: 0.862
    assert label_softmax_loss(logits, targets).item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert label_softmax_loss(logits + 3.0, targets).item() == pytest.approx((first + second) / 2, abs=1e-5)


def test_sft_loss_adds_the_weighted_label_softmax_only_when_asked():
    cos = torch.tensor([[0.9, 0.5]])
    plain, parts = sft_loss(LOGITS, cos, TARGETS, contrastive_weight=1.0, margin=0.2)
    total, parts_with = sft_loss(LOGITS, cos, TARGETS, contrastive_weight=1.0, margin=0.2, softmax_weight=0.5)
    softmax = math.log1p(math.exp(-3))  # -log softmax(2 | 2, -1) = log(1 + e^-3)
    assert "softmax" not in parts and parts_with["softmax"] == pytest.approx(softmax, abs=1e-6)
    assert total.item() == pytest.approx(plain.item() + 0.5 * softmax, abs=1e-6)


def test_anchor_loss_is_mean_one_minus_cosine_to_the_anchors():
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    anchors = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert anchor_loss(emb, anchors).item() == pytest.approx((0.0 + 0.4) / 2, abs=1e-6)  # cos 1 and 0.6
