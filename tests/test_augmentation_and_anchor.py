"""Label-description augmentation and the anchor to the pre-trained encoder: the maths, and what a step sees."""

import numpy as np
import pytest
import torch

from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model
from mlprojects.training.augmentation import drop_phrases, phrases
from mlprojects.training.trainer import FitStream, SFTTrainer, Split
from registry.errors import ConfigError

VAT = "Value-added tax: VAT rates, input and output VAT; reverse charge."


def test_phrases_split_at_commas_semicolons_colons_and_and():
    assert phrases(VAT) == ["Value-added tax", "VAT rates", "input", "output VAT", "reverse charge"]


def test_no_dropout_or_a_single_phrase_leaves_the_description_as_it_is():
    rng = np.random.default_rng(0)
    assert drop_phrases(VAT, 0.0, rng) == VAT
    assert drop_phrases("Payroll", 0.9, rng) == "Payroll"


def test_dropout_keeps_at_least_one_phrase_in_order():
    rng = np.random.default_rng(0)
    for _ in range(50):
        kept = drop_phrases(VAT, 1.0, rng).split(", ")
        assert len(kept) == 1 and kept[0] in phrases(VAT)
    for _ in range(50):
        kept = drop_phrases(VAT, 0.5, rng).split(", ")
        assert kept == [p for p in phrases(VAT) if p in kept]


def test_the_same_seed_draws_the_same_texts():
    draw = [drop_phrases(VAT, 0.5, np.random.default_rng(3)) for _ in range(2)]
    assert draw[0] == draw[1]


class RecordingModel(torch.nn.Module):
    """Stands in for the dual encoder: records the label texts each training step embeds."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.device = torch.device("cpu")
        self.seen: list[list[str]] = []

    def forward(self, texts, label_texts, with_doc_emb=False):
        self.seen.append(list(label_texts))
        cos = torch.tanh(self.weight).expand(len(texts), len(label_texts))
        return 20 * cos - 6, cos


def test_a_training_step_sees_phrases_dropped_only_with_description_dropout():
    split = Split(["a", "b", "c"], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    labels = [VAT, "Payroll taxes: wage tax, social security, benefits in kind"]
    for drop, changed in ((0.0, False), (0.5, True)):
        model = RecordingModel()
        cfg = TrainConfig(batch_size=1, max_epochs=1, description_dropout=drop, seed=0)
        SFTTrainer(model, labels, split, split, cfg).train_epoch()
        assert len(model.seen) == 3
        assert any(seen != labels for seen in model.seen) is changed
        assert all(len(seen) == 2 for seen in model.seen)


def test_the_anchor_holds_fit_documents_where_the_pretrained_encoder_put_them(tiny_encoder):
    texts = ["vat refund claim", "payroll tax on bonuses", "transfer pricing memo", "a tax ruling"]
    split = Split(texts, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    cfg = TrainConfig(encoder=tiny_encoder, anchor_weight=1.0, batch_size=2, max_epochs=2, learning_rate=5e-2)
    torch.manual_seed(0)
    model = build_model(cfg)
    before = model.embed(texts)
    trainer = SFTTrainer(model, ["value-added tax", "payroll"], split, split, cfg)
    assert torch.allclose(trainer.anchors, before)  # LoRA's B starts at zero: adapters on or off alike
    trainer.train_epoch()
    trainer.train_epoch()
    assert not torch.allclose(model.embed(texts), before, atol=1e-4)  # the tuned encoder moved
    assert torch.allclose(trainer.anchors, before)  # the anchors did not
    assert SFTTrainer(model, ["a", "b"], split, split, TrainConfig(encoder=tiny_encoder)).anchors is None


def test_knobs_the_trainer_cannot_honour_are_refused_before_training():
    split = Split(["a"], np.array([[1.0, 0.0]]))
    with pytest.raises(ConfigError, match=r"description_dropout must be in \[0, 1\], got 1.5"):
        SFTTrainer(RecordingModel(), ["x", "y"], split, split, TrainConfig(description_dropout=1.5))
    stream = FitStream(rows=1, single_label=True, batches=lambda epoch, size: iter(()))
    with pytest.raises(ConfigError, match="anchor_weight needs the fit split in memory"):
        SFTTrainer(RecordingModel(), ["x", "y"], stream, split, TrainConfig(anchor_weight=1.0))
