"""LoRA+: LoRA's B matrices learn at a multiple of the learning rate, through warmup, decay and a PBT exploit."""

import numpy as np
import pytest

from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model
from mlprojects.training.trainer import SFTTrainer, Split, param_groups

SPLIT = Split(["a tax ruling", "a payroll question"], np.array([[1.0, 0.0], [0.0, 1.0]]))
LABELS = ["tax rulings", "payroll"]


def names(model, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_plain_lora_is_one_group_of_every_trainable_parameter(tiny_encoder):
    model = build_model(TrainConfig(encoder=tiny_encoder))
    (group,) = param_groups(model, 1e-3, 1.0)
    assert group["lr"] == 1e-3
    assert names(model, group) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_plus_puts_the_b_matrices_alone_at_the_ratio(tiny_encoder):
    model = build_model(TrainConfig(encoder=tiny_encoder))
    rest, b = param_groups(model, 1e-3, 4.0)
    assert (rest["lr"], b["lr"]) == (1e-3, pytest.approx(4e-3))
    assert names(model, b) and all("lora_B" in n for n in names(model, b))
    assert not any("lora_B" in n for n in names(model, rest))
    assert {"log_scale", "bias"} <= names(model, rest)  # the logit scale and bias stay at the base rate


def test_the_ratio_holds_through_the_schedule_and_a_new_learning_rate(tiny_encoder):
    cfg = TrainConfig(encoder=tiny_encoder, lora_b_lr_ratio=8.0, warmup_ratio=0.5, max_epochs=2, batch_size=1)
    trainer = SFTTrainer(build_model(cfg), LABELS, SPLIT, SPLIT, cfg)
    trainer.train_epoch()
    rest, b = trainer.optimizer.param_groups
    assert b["lr"] == pytest.approx(8 * rest["lr"]) and rest["lr"] > 0
    state = trainer.state()
    cfg.learning_rate = 5e-4  # PBT's exploit: another trial's checkpoint under this trial's mutated rate
    trainer.load_state(state)
    rest, b = trainer.optimizer.param_groups
    assert (rest["initial_lr"], b["initial_lr"]) == (5e-4, pytest.approx(4e-3))
    assert b["lr"] == pytest.approx(8 * rest["lr"])
