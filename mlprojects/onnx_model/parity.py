"""Parity gates between the torch classifier and its ONNX export, judged on held-out documents.

A point estimate of the F1 drop on a few dozen documents is mostly noise, so the F1 gate refuses only a drop
that a paired bootstrap shows to be credibly above the allowed one, and a second gate bounds how often the
export's decisions differ from torch's at all. What the gates guarantee: docs/onnx_parity.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mlprojects.data import multi_hot
from mlprojects.evaluation.bootstrap import paired_bootstrap
from mlprojects.evaluation.metrics import decide, f1_summary, tune_thresholds


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (inputs need not be normalised)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def f1_macro(
    probs: np.ndarray,
    labels: Sequence[Sequence[str]],
    label_names: Sequence[str],
    thresholds: np.ndarray,
    single_label: bool,
) -> float:
    return f1_summary(multi_hot(labels, label_names), decide(probs, thresholds, single_label))["f1_macro"]


def decision_agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Share of documents whose whole predicted label set is the same under both models."""
    if len(pred_a) == 0:
        return 1.0
    return float((np.asarray(pred_a, bool) == np.asarray(pred_b, bool)).all(1).mean())


def own_thresholds(y_true: np.ndarray, probs: np.ndarray, fallback: np.ndarray, single_label: bool) -> np.ndarray:
    """Per-label thresholds tuned on validation documents with the export's own scores (as `sft` tunes the
    torch model's); single-label models decide by arg-max and keep theirs."""
    if single_label or len(y_true) == 0:
        return np.asarray(fallback, dtype=float)
    return tune_thresholds(y_true, probs)


@dataclass
class ParityReport:
    """Measured values of the shipped graph (`precision`: int8 or fp32) and the gates they were held to;
    `failures` name each failed gate and its value."""

    precision: str
    fp32_min_cosine: float
    mean_cosine: float  # the shipped graph vs torch
    min_cosine: float
    f1_macro_torch: float
    f1_macro_onnx: float
    drop_low: float  # paired bootstrap interval of F1-macro(torch) - F1-macro(ONNX)
    drop_high: float
    agreement: float  # documents whose label set equals torch's
    n_texts: int
    confidence: float = 0.95
    failures: list[str] = field(default_factory=list)
    # the new-label graph (request label sets), when the model has one: its embeddings against its torch encoder
    new_labels_fp32_min_cosine: float | None = None
    new_labels_mean_cosine: float | None = None
    new_labels_min_cosine: float | None = None

    @property
    def has_new_labels(self) -> bool:
        return self.new_labels_fp32_min_cosine is not None

    @property
    def f1_macro_drop(self) -> float:
        return self.f1_macro_torch - self.f1_macro_onnx

    @property
    def passed(self) -> bool:
        return not self.failures

    def metrics(self) -> dict[str, float]:
        p = self.precision
        return {
            "parity_fp32_min_cosine": self.fp32_min_cosine,
            f"parity_{p}_mean_cosine": self.mean_cosine,
            f"parity_{p}_min_cosine": self.min_cosine,
            "f1_macro_torch": self.f1_macro_torch,
            "f1_macro_onnx": self.f1_macro_onnx,
            "f1_macro_drop": self.f1_macro_drop,
            "f1_macro_drop_low": self.drop_low,
            "f1_macro_drop_high": self.drop_high,
            "decision_agreement": self.agreement,
            **(
                {
                    "parity_new_labels_fp32_min_cosine": self.new_labels_fp32_min_cosine,
                    f"parity_new_labels_{p}_mean_cosine": self.new_labels_mean_cosine,
                    f"parity_new_labels_{p}_min_cosine": self.new_labels_min_cosine,
                }
                if self.has_new_labels
                else {}
            ),
        }

    def summary(self) -> str:
        """One line for people: only the precision that was shipped is named."""
        cosines = (
            f"fp32 graph, min cosine to torch {self.fp32_min_cosine:.6f}"
            if self.precision == "fp32"
            else f"int8 graph, int8 mean cosine {self.mean_cosine:.5f} (fp32 min {self.fp32_min_cosine:.6f})"
        )
        new_labels = (
            f"; new-label graph {self.precision} mean cosine {self.new_labels_mean_cosine:.5f}"
            if self.has_new_labels
            else ""
        )
        return (
            f"{cosines}; F1-macro {self.f1_macro_torch:.4f} -> {self.f1_macro_onnx:.4f} "
            f"(drop {self.confidence:.0%} interval [{self.drop_low:+.4f}, {self.drop_high:+.4f}]); "
            f"label sets as torch's on {self.agreement:.1%} of {self.n_texts} documents{new_labels}"
        )


def cosine_failures(
    graph: str, precision: str, fp32_min: float, mean: float, min_fp32_cosine: float, min_int8_mean_cosine: float
) -> list[str]:
    """The embedding gates of one graph (`graph` names it in the message, '' for the main one)."""
    failures = []
    if not fp32_min >= min_fp32_cosine:
        failures.append(f"{graph}fp32 embedding parity: min cosine {fp32_min:.6f} < {min_fp32_cosine}")
    if precision == "int8" and not mean >= min_int8_mean_cosine:
        failures.append(f"{graph}int8 embedding parity: mean cosine {mean:.6f} < {min_int8_mean_cosine}")
    return failures


def gate_failures(
    report: ParityReport, min_fp32_cosine: float, min_int8_mean_cosine: float, max_f1_drop: float, min_agreement: float
) -> list[str]:
    """One readable line per gate that the measured values miss. The int8 cosine gate applies to int8 only;
    the F1 gate fails when the whole drop interval lies above `max_f1_drop`. The new-label graph is held to the
    same cosine gates (no labelled documents of new labels to judge its decisions on)."""
    failures = cosine_failures(
        "", report.precision, report.fp32_min_cosine, report.mean_cosine, min_fp32_cosine, min_int8_mean_cosine
    )
    if report.has_new_labels:
        failures += cosine_failures(
            "new-label graph ",
            report.precision,
            report.new_labels_fp32_min_cosine,
            report.new_labels_mean_cosine,
            min_fp32_cosine,
            min_int8_mean_cosine,
        )
    if not report.drop_low <= max_f1_drop:
        failures.append(
            f"F1-macro drop {report.f1_macro_drop:.4f} ({report.f1_macro_torch:.4f} -> "
            f"{report.f1_macro_onnx:.4f}), paired bootstrap {report.confidence:.0%} interval "
            f"[{report.drop_low:.4f}, {report.drop_high:.4f}]: lower bound {report.drop_low:.4f} "
            f"> {max_f1_drop}"
        )
    if not report.agreement >= min_agreement:
        failures.append(
            f"decision agreement with torch {report.agreement:.4f} < {min_agreement} "
            f"(same label set on {round(report.agreement * report.n_texts)} of {report.n_texts} "
            "documents)"
        )
    return failures


def embedding_cosines(model, fp32_encoder, shipped_encoder, texts: list[str], precision: str):
    """(fp32, shipped) row cosines of one ONNX graph's embeddings to its torch encoder's."""
    reference = model.embed(texts).numpy()
    fp32 = row_cosines(reference, fp32_encoder.embed(texts))
    return fp32, fp32 if precision == "fp32" else row_cosines(reference, shipped_encoder.embed(texts))


def check_parity(
    classifier,
    fp32_encoder,
    onnx_classifier,
    precision: str,
    eval_texts: Sequence[str],
    eval_labels: Sequence[Sequence[str]],
    cfg,
    new_label_fp32_encoder=None,
) -> ParityReport:
    """Embeddings of the evaluation documents and the label descriptions through torch, ONNX fp32 and the
    shipped graph, for the main and (with `new_label_fp32_encoder`) the new-label encoder; torch's decisions
    (its thresholds) against the export's (its own thresholds) on the evaluation labels."""
    texts = list(eval_texts)[: cfg.parity_sample] + list(classifier.label_descriptions.values())
    fp32, shipped = embedding_cosines(classifier.model, fp32_encoder, onnx_classifier.encoder, texts, precision)
    new_labels = {}
    if new_label_fp32_encoder is not None:
        new_fp32, new_shipped = embedding_cosines(
            classifier.new_label_model, new_label_fp32_encoder, onnx_classifier.new_label_encoder, texts, precision
        )
        new_labels = {
            "new_labels_fp32_min_cosine": float(new_fp32.min()),
            "new_labels_mean_cosine": float(new_shipped.mean()),
            "new_labels_min_cosine": float(new_shipped.min()),
        }
    y_true = multi_hot(eval_labels, classifier.labels)
    single = classifier.single_label
    torch_pred = decide(classifier.predict_proba(list(eval_texts)), classifier.thresholds, single)
    onnx_pred = decide(onnx_classifier.predict_proba(list(eval_texts)), onnx_classifier.thresholds, single)
    drop = paired_bootstrap(y_true, torch_pred, onnx_pred, cfg.bootstrap, confidence=cfg.confidence)
    report = ParityReport(
        precision=precision,
        fp32_min_cosine=float(fp32.min()),
        mean_cosine=float(shipped.mean()),
        min_cosine=float(shipped.min()),
        f1_macro_torch=f1_summary(y_true, torch_pred)["f1_macro"],
        f1_macro_onnx=f1_summary(y_true, onnx_pred)["f1_macro"],
        drop_low=drop["low"],
        drop_high=drop["high"],
        agreement=decision_agreement(torch_pred, onnx_pred),
        n_texts=len(eval_texts),
        confidence=cfg.confidence,
        **new_labels,
    )
    report.failures = gate_failures(
        report, cfg.min_fp32_cosine, cfg.min_int8_mean_cosine, cfg.max_f1_drop, cfg.min_agreement
    )
    return report
