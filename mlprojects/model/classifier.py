"""A trained dual encoder with its label set and thresholds: what is saved, registered and served."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlprojects.data import multi_hot
from mlprojects.evaluation.metrics import decide, f1_summary, tune_shared_threshold, tune_thresholds
from mlprojects.model.encoder import DualEncoder, blended, has_lora, save_encoder
from registry.contract import REQUEST_THRESHOLD

META_FILE = "classifier.json"
ENCODER_DIR = "encoder"
NEW_LABEL_ENCODER_DIR = "encoder_new_labels"  # serves request label sets; absent: `encoder` serves every set


@dataclass
class Classifier:
    """`model` scores the model's own labels. Request label sets (new labels, zero-shot) are scored by
    `new_label_model` when there is one: the encoder with only `new_label_adapter_scale` of the LoRA update
    folded in, which keeps more of the pre-trained encoder's zero-shot ability than the fully fine-tuned one."""

    model: DualEncoder
    label_descriptions: dict[str, str]
    thresholds: np.ndarray
    single_label: bool = False
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    new_label_adapter_scale: float = 1.0  # 1.0: no second encoder
    new_label_model: DualEncoder | None = field(default=None, repr=False)
    request_threshold: float = REQUEST_THRESHOLD  # for every label of a request set; `sft` tunes it on validation
    _label_emb: torch.Tensor | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.label_descriptions)

    def label_embeddings(self) -> torch.Tensor:
        """The model's own labels, embedded once and cached."""
        if self._label_emb is None:
            self._label_emb = self.model.embed(list(self.label_descriptions.values()))
        return self._label_emb

    def predict_proba(self, texts: list[str], label_descriptions: dict[str, str] | None = None) -> np.ndarray:
        """Probabilities [n_docs, n_labels] for the model's labels, or for `label_descriptions` (zero-shot: the
        documents and the descriptions both through the new-label encoder, when there is one)."""
        if label_descriptions is None:
            return self.model.probabilities(self.model.embed(texts), self.label_embeddings())
        model = self.new_label_model if self.new_label_model is not None else self.model
        return model.probabilities(model.embed(texts), model.embed(list(label_descriptions.values())))

    def share_new_label_encoder(self, source: "Classifier") -> None:
        """Serve request label sets with `source`'s new-label encoder, unchanged (saved as it is, not re-blended).

        For a GRPO policy and its reference: the feedback is about the model's own labels and says nothing about
        new ones, and the policy's adapters sit on the merged SFT encoder, not the pre-trained one, so a blend of
        them would not be the WiSE-FT blend the scale was chosen for."""
        self.new_label_model, self.new_label_adapter_scale = source.new_label_model, source.new_label_adapter_scale
        self.request_threshold = source.request_threshold

    def request_model(self) -> DualEncoder:
        """The encoder that scores a request's label set once saved: the new-label encoder, or the blend it will
        be saved as, or (no second encoder) the model itself."""
        if self.new_label_model is not None:
            return self.new_label_model
        if self.served_new_label_adapter_scale < 1.0:
            return blended(self.model, self.new_label_adapter_scale)
        return self.model

    def tune_request_threshold(self, frame) -> float:
        """One threshold for every label of a request set, tuned on a labelled validation frame (`text`,
        `labels`) over the model's own labels scored as a request set is (by `request_model`). New labels have
        no tuned thresholds of their own, and the trained logit scale and bias (and the blend) move the
        cosine -> probability map away from where 0.5 is a good cut. No documents: the threshold is kept."""
        if len(frame):
            model = self.request_model()
            label_emb = model.embed(list(self.label_descriptions.values()))
            probs = model.probabilities(model.embed(list(frame["text"])), label_emb)
            self.request_threshold = tune_shared_threshold(multi_hot(frame["labels"], self.labels), probs)
        return self.request_threshold

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

    @property
    def served_new_label_adapter_scale(self) -> float:
        """The adapter scale request label sets are served at once saved: 1.0 when there is no second encoder
        (none loaded, and no adapter on the pre-trained encoder to blend)."""
        if self.new_label_model is not None or (self.new_label_adapter_scale < 1.0 and has_lora(self.model)):
            return self.new_label_adapter_scale
        return 1.0

    def _save_new_label_encoder(self, directory: Path) -> dict:
        """Save the new-label encoder, when there is one; returns its entries of classifier.json: the adapter
        scale (1.0: none saved) and its own logit scale and bias (GRPO moves only the main model's).

        A loaded one is saved as it is. A blend is made only from adapters that still sit on the pre-trained
        encoder (SFT's peft model): W + s·BA interpolates toward the encoder the adapter was trained on, so any
        other base (GRPO's adapters on the merged SFT encoder) would give a different, unchosen blend."""
        if self.served_new_label_adapter_scale == 1.0:
            return {"new_label_adapter_scale": 1.0}
        if self.new_label_model is not None:
            source, adapter_scale = self.new_label_model, 1.0  # already merged: saved unchanged
        else:
            source, adapter_scale = self.model, self.new_label_adapter_scale
        save_encoder(source, directory, adapter_scale)
        return {
            "new_label_adapter_scale": self.new_label_adapter_scale,
            "new_label_scale": float(source.scale),
            "new_label_bias": float(source.bias),
        }

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
            "request_threshold": self.request_threshold,
            **self._save_new_label_encoder(directory / NEW_LABEL_ENCODER_DIR),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "Classifier":
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        new_labels = directory / NEW_LABEL_ENCODER_DIR
        return cls(
            _load_dual_encoder(directory / ENCODER_DIR, meta, meta["scale"], meta["bias"], device),
            meta["label_descriptions"],
            np.asarray(meta["thresholds"]),
            meta["single_label"],
            meta["text_columns"],
            meta.get("new_label_adapter_scale", 1.0),  # versions saved before the knob have one encoder
            _load_dual_encoder(new_labels, meta, meta.get("new_label_scale"), meta.get("new_label_bias"), device)
            if new_labels.is_dir()
            else None,
            meta.get("request_threshold", REQUEST_THRESHOLD),  # versions saved before it was tuned
        )


def _load_dual_encoder(directory: Path, meta: dict, scale: float, bias: float, device: str) -> DualEncoder:
    """A saved encoder with the classifier's pooling and window (shared by both encoders) and its logit scale/bias."""
    from transformers import AutoModel, AutoTokenizer

    encoder, tokenizer = AutoModel.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)
    model = DualEncoder(encoder, tokenizer, meta["pooling"], meta["max_length"], scale, bias)
    return model.to(device).eval()
