"""Which layers LoRA adapts: SFT every linear layer of each transformer block, GRPO the attention layers only."""

import numpy as np
from peft.tuners.lora import LoraLayer

from mlprojects.config import GRPOParams, TrainConfig
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import build_model, merged_encoder
from mlprojects.training.grpo_trainer import prepare_policy

ATTENTION = {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}
FEED_FORWARD = {"intermediate.dense", "output.dense"}


def adapted(encoder) -> set[str]:
    """Names of the adapted modules, without the peft prefix: 'encoder.layer.0.attention.self.query'."""
    modules = encoder.named_modules()
    return {name.removeprefix("base_model.model.") for name, module in modules if isinstance(module, LoraLayer)}


def per_layer(layers: int, suffixes: set[str]) -> set[str]:
    return {f"encoder.layer.{i}.{suffix}" for i in range(layers) for suffix in suffixes}


def test_sft_adapts_every_linear_layer_of_each_block_and_not_the_pooler(tiny_encoder):
    model = build_model(TrainConfig(encoder=tiny_encoder))
    assert adapted(model.encoder) == per_layer(2, ATTENTION | FEED_FORWARD)


def test_an_explicit_target_list_still_wins(tiny_encoder):
    model = build_model(TrainConfig(encoder=tiny_encoder, lora_target_modules=["query", "value"]))
    assert adapted(model.encoder) == per_layer(2, {"attention.self.query", "attention.self.value"})


def test_grpo_policy_adapts_the_attention_layers_only(tiny_encoder):
    cfg = TrainConfig(encoder=tiny_encoder)
    model = build_model(cfg, lora=False)
    model.encoder = merged_encoder(build_model(cfg))
    policy = prepare_policy(Classifier(model, {"a": "alpha", "b": "beta"}, np.full(2, 0.5)), GRPOParams())
    assert adapted(policy.model.encoder) == per_layer(2, ATTENTION)
