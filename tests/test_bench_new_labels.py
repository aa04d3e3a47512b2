"""The locked label side the leave-labels-out benchmark measures: labels through the pre-trained encoder, frozen,
while training moves only the documents' side."""

import torch

from bench.bench_new_labels import LockedLabels
from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model
from tests.conftest import lora_with_update

LABELS = ["Banks, loans and interest rates.", "Apples, orchards and fruit harvests."]
DOCS = ["The bank raised its rates.", "A good apple harvest this year."]


def test_locked_labels_are_the_pretrained_encoders_and_get_no_gradient(tiny_encoder):
    cfg = TrainConfig(encoder=tiny_encoder, lora_r=4)
    tuned = lora_with_update(cfg, 0.2)
    model = LockedLabels(tuned)
    pretrained = build_model(cfg, lora=False)
    torch.testing.assert_close(model.embed_labels(LABELS), pretrained.embed(LABELS))
    assert not torch.allclose(tuned.embed(LABELS), pretrained.embed(LABELS), atol=1e-3)  # the adapters do move them
    torch.testing.assert_close(model.embed(DOCS), tuned.embed(DOCS))  # documents: the tuned encoder

    model.train()
    logits, _ = model(DOCS, LABELS)
    logits.sum().backward()
    assert not model.encode_labels(LABELS).requires_grad
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    assert model.log_scale.grad is not None
