"""Parity gates between the torch classifier and its ONNX export: embeddings (fp32 and int8) and F1-macro."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mlprojects.data import multi_hot
from mlprojects.metrics import decide, f1_summary


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (inputs need not be normalised)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def f1_macro(probs: np.ndarray, labels: Sequence[Sequence[str]], label_names: Sequence[str],
             thresholds: np.ndarray, single_label: bool) -> float:
    return f1_summary(multi_hot(labels, label_names), decide(probs, thresholds, single_label))["f1_macro"]


@dataclass
class ParityReport:
    """Measured values and the gates they were held to; `failures` name each failed gate and its value."""

    fp32_min_cosine: float
    int8_mean_cosine: float
    int8_min_cosine: float
    f1_macro_torch: float
    f1_macro_onnx: float
    n_texts: int
    failures: list[str] = field(default_factory=list)

    @property
    def f1_macro_drop(self) -> float:
        return self.f1_macro_torch - self.f1_macro_onnx

    @property
    def passed(self) -> bool:
        return not self.failures

    def metrics(self) -> dict[str, float]:
        return {"parity_fp32_min_cosine": self.fp32_min_cosine, "parity_int8_mean_cosine": self.int8_mean_cosine,
                "parity_int8_min_cosine": self.int8_min_cosine, "f1_macro_torch": self.f1_macro_torch,
                "f1_macro_onnx": self.f1_macro_onnx, "f1_macro_drop": self.f1_macro_drop}


def gate_failures(report: ParityReport, min_fp32_cosine: float, min_int8_mean_cosine: float,
                  max_f1_drop: float) -> list[str]:
    """One readable line per gate that the measured values miss."""
    failures = []
    if not report.fp32_min_cosine >= min_fp32_cosine:
        failures.append(f"fp32 embedding parity: min cosine {report.fp32_min_cosine:.6f} < {min_fp32_cosine}")
    if not report.int8_mean_cosine >= min_int8_mean_cosine:
        failures.append(f"int8 embedding parity: mean cosine {report.int8_mean_cosine:.6f} < {min_int8_mean_cosine}")
    if not report.f1_macro_drop <= max_f1_drop:
        failures.append(f"F1-macro drop {report.f1_macro_drop:.4f} ({report.f1_macro_torch:.4f} -> "
                        f"{report.f1_macro_onnx:.4f}) > {max_f1_drop}")
    return failures


def check_parity(classifier, fp32_encoder, onnx_classifier, eval_texts: Sequence[str],
                 eval_labels: Sequence[Sequence[str]], cfg) -> ParityReport:
    """Embeddings of the evaluation documents and the label descriptions through torch, ONNX fp32 and the
    quantised graph; F1-macro of torch and of the quantised classifier on the evaluation labels."""
    texts = list(eval_texts)[:cfg.parity_sample] + list(classifier.label_descriptions.values())
    reference = classifier.model.embed(texts).numpy()
    fp32 = row_cosines(reference, fp32_encoder.embed(texts))
    int8 = row_cosines(reference, onnx_classifier.encoder.embed(texts))
    names, thresholds, single = classifier.labels, classifier.thresholds, classifier.single_label
    report = ParityReport(
        fp32_min_cosine=float(fp32.min()), int8_mean_cosine=float(int8.mean()), int8_min_cosine=float(int8.min()),
        f1_macro_torch=f1_macro(classifier.predict_proba(list(eval_texts)), eval_labels, names, thresholds, single),
        f1_macro_onnx=f1_macro(onnx_classifier.predict_proba(list(eval_texts)), eval_labels, names, thresholds, single),
        n_texts=len(eval_texts))
    report.failures = gate_failures(report, cfg.min_fp32_cosine, cfg.min_int8_mean_cosine, cfg.max_f1_drop)
    return report
