"""Carrying a LoRA update to another rank (PBT exploit with a new lora_r): the merged weights must not move."""

import pytest
import torch

from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model, merged_encoder
from mlprojects.model.lora_resize import lora_rank, resize_lora_pair, resize_lora_state
from tests.conftest import lora_with_update


def _merged(model):
    return {k: v for k, v in merged_encoder(model).state_dict().items()}


@pytest.mark.parametrize("old_r,new_r", [(4, 8), (4, 32)])
def test_rank_increase_keeps_merged_weights(tiny_encoder, old_r, new_r):
    small = lora_with_update(TrainConfig(encoder=tiny_encoder, lora_r=old_r))
    state = resize_lora_state(small.trainable_state(), alpha=16, new_r=new_r)
    assert lora_rank(state) == new_r
    big = build_model(TrainConfig(encoder=tiny_encoder, lora_r=new_r))
    big.load_trainable_state(state)
    before, after = _merged(small), _merged(big)
    assert before.keys() == after.keys()
    base = merged_encoder(build_model(TrainConfig(encoder=tiny_encoder, lora_r=old_r))).state_dict()
    assert any(not torch.equal(before[k], base[k]) for k in before), "the update under test must be non-zero"
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=1e-5)


def test_rank_decrease_is_exact_for_a_low_rank_update_and_optimal_otherwise():
    torch.manual_seed(0)
    a, b = torch.randn(8, 20), torch.randn(12, 8)
    low_a = torch.cat([a[:3], torch.zeros(5, 20)])  # an r=8 adapter whose update has rank 3
    new_a, new_b = resize_lora_pair(low_a, b, alpha=16, new_r=4)
    torch.testing.assert_close((16 / 4) * new_b @ new_a, (16 / 8) * b @ low_a, atol=1e-5, rtol=1e-5)
    # full-rank update cut to rank 2: the error is the tail singular values (Eckart–Young)
    delta = (16 / 8) * b @ a
    new_a, new_b = resize_lora_pair(a, b, alpha=16, new_r=2)
    tail = torch.linalg.svdvals(delta)[2:]
    assert torch.linalg.norm(delta - (16 / 2) * new_b @ new_a) == pytest.approx(float(tail.norm()), rel=1e-4)


def test_new_directions_stay_trainable():
    a, b = torch.randn(2, 10), torch.randn(6, 2)
    new_a, new_b = resize_lora_pair(a, b, alpha=4, new_r=5)
    assert new_a.shape == (5, 10) and new_b.shape == (6, 5)
    assert torch.count_nonzero(new_a[2:]) > 0 and torch.count_nonzero(new_b[:, 2:]) == 0


def test_adapter_scale_blends_pretrained_and_fine_tuned_weights(tiny_encoder):
    """W + s·BA is linear in s: scale 0 is the pre-trained encoder, 0.5 the midpoint of it and the full merge."""
    model = lora_with_update(TrainConfig(encoder=tiny_encoder, lora_r=4))
    full, half, zero = (merged_encoder(model, s).state_dict() for s in (1.0, 0.5, 0.0))
    base = merged_encoder(build_model(TrainConfig(encoder=tiny_encoder, lora_r=4))).state_dict()
    assert any(not torch.equal(full[k], zero[k]) for k in full)
    for key in full:
        torch.testing.assert_close(zero[key], base[key])
        torch.testing.assert_close(half[key], (full[key] + zero[key]) / 2, atol=1e-6, rtol=1e-5)
    assert merged_encoder(model).state_dict().keys() == full.keys()  # the model itself is left as it was
