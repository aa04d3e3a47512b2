"""A trained dual encoder with its label set and thresholds: what is saved, registered and served."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlprojects.data import multi_hot
from mlprojects.evaluation.metrics import decide, f1_summary, tune_thresholds
from mlprojects.model.encoder import DualEncoder, save_encoder

META_FILE = "classifier.json"
ENCODER_DIR = "encoder"


@dataclass
class Classifier:
    model: DualEncoder
    label_descriptions: dict[str, str]
    thresholds: np.ndarray
    single_label: bool = False
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    _label_emb: torch.Tensor | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.label_descriptions)

    def label_embeddings(self, descriptions: dict[str, str] | None = None) -> torch.Tensor:
        """Own labels are embedded once and cached; a new label set is embedded per call."""
        if descriptions is not None:
            return self.model.embed(list(descriptions.values()))
        if self._label_emb is None:
            self._label_emb = self.model.embed(list(self.label_descriptions.values()))
        return self._label_emb

    def predict_proba(self, texts: list[str], label_descriptions: dict[str, str] | None = None) -> np.ndarray:
        """Probabilities [n_docs, n_labels] for the model's labels, or for `label_descriptions` (zero-shot)."""
        return self.model.probabilities(self.model.embed(texts), self.label_embeddings(label_descriptions))

    def retune_thresholds(self, frame) -> np.ndarray:
        """Per-label thresholds tuned on a labelled validation frame (`text`, `labels`) with this model's own
        scores: any step that moves the scores (GRPO, quantisation) makes the old thresholds stale."""
        probs = self.predict_proba(list(frame["text"]))
        self.thresholds = tune_thresholds(multi_hot(frame["labels"], self.labels), probs)
        return self.thresholds

    def decisions(self, texts: list[str]) -> np.ndarray:
        """Boolean [n_docs, n_labels]: which of its own labels the model assigns (its thresholds, or arg-max)."""
        return decide(self.predict_proba(texts), self.thresholds, self.single_label)

    def f1_scores(self, frame) -> dict[str, float]:
        """F1 summary of this model's decisions on a labelled frame (`text`, `labels`)."""
        return f1_summary(multi_hot(frame["labels"], self.labels), self.decisions(list(frame["text"])))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        save_encoder(self.model, directory / ENCODER_DIR)
        meta = {
            "labels": self.labels,
            "label_descriptions": self.label_descriptions,
            "thresholds": [float(t) for t in self.thresholds],
            "single_label": self.single_label,
            "text_columns": self.text_columns,
            "scale": float(self.model.scale),
            "bias": float(self.model.bias),
            "pooling": self.model.pooling,
            "max_length": self.model.max_length,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Classifier":
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        encoder = AutoModel.from_pretrained(directory / ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(directory / ENCODER_DIR)
        model = DualEncoder(encoder, tokenizer, meta["pooling"], meta["max_length"], meta["scale"], meta["bias"])
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        return cls(
            model,
            meta["label_descriptions"],
            np.asarray(meta["thresholds"]),
            meta["single_label"],
            meta["text_columns"],
        )
