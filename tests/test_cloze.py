"""The inverse cloze task: how a document is cut into a pair, the in-batch loss, and what a training step sees."""

import math

import numpy as np
import pytest
import torch

from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model
from mlprojects.training.augmentation import cloze_pair
from mlprojects.training.losses import in_batch_matching_loss
from mlprojects.training.trainer import FitStream, SFTTrainer, Split
from registry.errors import ConfigError

MEMO = "Memo: VAT refunds. The claims in Poland are late! Who owns them? We propose one person full-time."


def test_a_pair_is_one_sentence_and_the_rest_of_its_document_in_order():
    rng = np.random.default_rng(0)
    sentences = [
        "Memo: VAT refunds.",
        "The claims in Poland are late!",
        "Who owns them?",
        "We propose one person full-time.",
    ]
    for _ in range(20):
        query, context = cloze_pair(MEMO, rng)
        assert query in sentences
        assert context == " ".join(s for s in sentences if s != query)


def test_a_single_sentence_makes_no_pair():
    assert cloze_pair("Tax on a gift from my grandparents", np.random.default_rng(0)) is None
    assert cloze_pair("  One sentence only.  ", np.random.default_rng(0)) is None


def test_the_in_batch_loss_is_the_cross_entropy_of_each_query_over_the_contexts():
    cos = torch.tensor([[0.5, 0.0], [0.1, 0.2]])
    # row 0: -log(e^10 / (e^10 + e^0)); row 1: -log(e^4 / (e^2 + e^4)) at scale 20
    expected = (-math.log(math.exp(10) / (math.exp(10) + 1)) - math.log(math.exp(4) / (math.exp(2) + math.exp(4)))) / 2
    assert in_batch_matching_loss(cos).item() == pytest.approx(expected, rel=1e-6)
    assert in_batch_matching_loss(cos, scale=1.0).item() < math.log(2)  # the diagonal wins, even softly


class RecordingModel(torch.nn.Module):
    """Stands in for the dual encoder: records what each training step embeds on either side."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.device = torch.device("cpu")
        self.seen: list[tuple[list[str], list[str]]] = []

    def forward(self, texts, label_texts, with_doc_emb=False):
        self.seen.append((list(texts), list(label_texts)))
        cos = torch.tanh(self.weight).expand(len(texts), len(label_texts))
        return 20 * cos - 6, cos


def test_a_step_adds_its_documents_pairs_to_one_forward_only_with_cloze_weight():
    split = Split([MEMO, "Two sentences. Here.", "No break"], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    labels = ["VAT", "Payroll"]
    for weight, extra in ((0.0, 0), (1.0, 2)):
        model = RecordingModel()
        SFTTrainer(
            model, labels, split, split, TrainConfig(batch_size=3, max_epochs=1, cloze_weight=weight)
        ).train_epoch()
        ((docs, label_texts),) = model.seen
        assert len(docs) == 3 + extra and len(label_texts) == 2 + extra  # "No break" has no pair
        assert set(docs[:3]) == set(split.texts) and label_texts[:2] == labels
        for query, context in zip(label_texts[2:], docs[3:]):  # each pair: a sentence as a label, the rest a document
            assert any(text.replace(query, "").split() == context.split() for text in split.texts)


def test_a_step_with_one_pair_has_no_batch_to_match_in():
    split = Split([MEMO, "No break"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    model = RecordingModel()
    SFTTrainer(
        model, ["VAT", "Payroll"], split, split, TrainConfig(batch_size=2, max_epochs=1, cloze_weight=1.0)
    ).train_epoch()
    assert [len(docs) for docs, _ in model.seen] == [2]


def test_cloze_on_a_streamed_fit_split_is_refused_before_training():
    split = Split(["a"], np.array([[1.0, 0.0]]))
    stream = FitStream(rows=1, single_label=True, batches=lambda epoch, size: iter(()))
    with pytest.raises(ConfigError, match="cloze_weight needs the fit split in memory"):
        SFTTrainer(RecordingModel(), ["x", "y"], stream, split, TrainConfig(cloze_weight=1.0))


def test_on_the_real_encoder_the_cloze_term_adds_about_log_pairs_to_the_loss(tiny_encoder):
    texts = [
        "VAT refund claim. It is late.",
        "Payroll tax on bonuses. Paid in May.",
        "A memo. On pricing.",
        "A ruling.",
    ]
    split = Split(texts, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    losses = {}
    for weight in (0.0, 1.0):
        cfg = TrainConfig(encoder=tiny_encoder, cloze_weight=weight, batch_size=4, max_epochs=1, seed=0)
        torch.manual_seed(0)
        trainer = SFTTrainer(build_model(cfg), ["value-added tax", "payroll"], split, split, cfg)
        losses[weight] = trainer.train_epoch()["train_loss"]
    # same initial weights and labels loss; the three pairs add a cross-entropy near log(3) at the start
    assert losses[1.0] - losses[0.0] == pytest.approx(math.log(3), abs=0.5)
