"""The exported encoder at inference: ONNX Runtime + `tokenizers` + numpy only (no torch, no transformers).

Shared by the exporter (parity gates, label embeddings) and the ONNX pyfunc, so both embed text the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from registry.contract import REQUEST_THRESHOLD

MODEL_FILE = "model.onnx"
NEW_LABEL_MODEL_FILE = "model_new_labels.onnx"  # scores request label sets, when the torch model had two encoders
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "onnx_classifier.json"
LABEL_EMB_FILE = "label_embeddings.npy"


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The fast tokenizer saved by transformers, truncating as in training; batches are padded per batch."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def session(model_path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with every graph optimisation on; `threads` 0 lets ONNX Runtime use all cores. Idle intra-op
    threads sleep instead of spinning: a spinning thread holds a core that another process (a second Spark
    worker, a neighbour on a shared machine) needs; measured 1.6-2.2x the docs/s under load (bench/README.md)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def probabilities(doc_emb: np.ndarray, label_emb: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """sigmoid(scale · cos + bias), as `DualEncoder.head` + `probabilities` (embeddings are L2-normalised)."""
    logits = scale * (doc_emb @ label_emb.T) + bias
    return 1.0 / (1.0 + np.exp(-logits))


class OnnxEncoder:
    """Texts -> L2-normalised embeddings through the exported graph, batched by length (little padding)."""

    def __init__(
        self, model_path: str | Path, tokenizer: Tokenizer, pad_id: int = 0, threads: int = 0, batch_size: int = 32
    ):
        self.session = session(model_path, threads)
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def feed(self, encodings: list) -> dict[str, np.ndarray]:
        """One batch as graph inputs, padded to its longest member with the pad id (RoBERTa derives
        positions from it)."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feed.items() if k in self.input_names}

    def embed(self, texts: Sequence[str], batch_size: int | None = None, by_length: bool = True) -> np.ndarray:
        """Embeddings [n, d] in input order; texts are sorted by token count (`by_length`) so each batch
        pads little."""
        size = batch_size or self.batch_size
        encodings = self.tokenizer.encode_batch(list(texts))
        if not encodings:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(e.ids) for e in encodings] if by_length else np.zeros(len(encodings)), kind="stable")
        chunks = [
            self.session.run(None, self.feed([encodings[i] for i in order[s : s + size]]))[0]
            for s in range(0, len(order), size)
        ]
        return np.concatenate(chunks)[np.argsort(order)]


@dataclass
class OnnxClassifier:
    """What the ONNX package holds: the encoder, its label set with precomputed embeddings, and the head; and,
    when the torch model had one, the new-label encoder (with its logit scale and bias) for request label sets."""

    encoder: OnnxEncoder
    label_descriptions: dict[str, str]
    label_embeddings: np.ndarray
    thresholds: np.ndarray
    scale: float
    bias: float
    single_label: bool = False
    text_columns: tuple[str, ...] = ("text",)
    new_label_encoder: OnnxEncoder | None = None
    new_label_scale: float | None = None
    new_label_bias: float | None = None
    new_label_adapter_scale: float = 1.0  # of the torch model's new-label encoder; 1.0: none
    request_threshold: float = REQUEST_THRESHOLD  # the torch model's, for every label of a request set

    @property
    def labels(self) -> list[str]:
        return list(self.label_descriptions)

    def predict_proba(self, texts: Sequence[str], label_descriptions: dict[str, str] | None = None) -> np.ndarray:
        """Own labels use the precomputed embeddings; a new label set (descriptions and documents) goes through
        the new-label encoder when there is one, else the main encoder."""
        encoder, scale, bias = self.encoder, self.scale, self.bias
        if label_descriptions and self.new_label_encoder is not None:
            encoder, scale, bias = self.new_label_encoder, self.new_label_scale, self.new_label_bias
        label_emb = encoder.embed(list(label_descriptions.values())) if label_descriptions else self.label_embeddings
        if not texts:
            return np.zeros((0, len(label_emb)), dtype=np.float32)
        return probabilities(encoder.embed(texts), label_emb, scale, bias)

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> "OnnxClassifier":
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        tokenizer = load_tokenizer(directory / TOKENIZER_FILE, meta["max_length"])
        threads = meta["threads"] if threads is None else threads

        def encoder(name: str) -> OnnxEncoder:
            return OnnxEncoder(directory / name, tokenizer, meta["pad_id"], threads, meta["batch_size"])

        new_labels = meta.get("new_label_model")  # absent: an export of a one-encoder model
        return cls(
            encoder(MODEL_FILE),
            meta["label_descriptions"],
            np.load(directory / LABEL_EMB_FILE),
            np.asarray(meta["thresholds"]),
            meta["scale"],
            meta["bias"],
            meta["single_label"],
            tuple(meta["text_columns"]),
            encoder(new_labels) if new_labels else None,
            meta.get("new_label_scale"),
            meta.get("new_label_bias"),
            meta.get("new_label_adapter_scale", 1.0),
            meta.get("request_threshold", REQUEST_THRESHOLD),  # exports from before it was tuned
        )
