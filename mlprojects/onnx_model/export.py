"""Torch classifier -> ONNX package: export encoder+pooling+L2 norm as one graph, fuse, quantise to int8,
tune the export's own thresholds, check parity with the torch model, precompute the label embeddings.
Nothing here touches MLflow."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mlprojects.config import OnnxConfig
from mlprojects.data import multi_hot
from mlprojects.evaluation.metrics import tune_shared_threshold
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import POOLERS, DualEncoder
from mlprojects.onnx_model.parity import ParityReport, check_parity, own_thresholds
from mlprojects.onnx_model.quantize import TextCalibrationReader, matmuls_matching, quantize
from mlprojects.onnx_model.runtime import (
    LABEL_EMB_FILE,
    META_FILE,
    MODEL_FILE,
    NEW_LABEL_MODEL_FILE,
    TOKENIZER_FILE,
    OnnxClassifier,
    OnnxEncoder,
    load_tokenizer,
)
from registry.errors import PlatformError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# ONNX Runtime's transformer optimiser knows these encoder families by its "bert" fusion patterns.
_FUSION_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert"}


class ExportError(PlatformError):
    """The encoder cannot be exported, or the export failed a parity gate; nothing is registered."""

    def __init__(self, message: str, parity: "ParityReport | None" = None, sizes_mb: dict | None = None):
        super().__init__(message)
        self.parity = parity
        self.sizes_mb = sizes_mb or {}


class UnexportableModel(ExportError):
    """The exporter cannot handle this model at all: no other precision or setting would pass."""


class EmbeddingGraph(nn.Module):
    """encoder -> pooling -> L2 normalisation: the whole document/label embedding as one ONNX graph."""

    def __init__(self, encoder: nn.Module, pooling: str, input_names: Sequence[str]):
        super().__init__()
        self.encoder = encoder
        self.pool = POOLERS[pooling]
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.input_names, inputs))
        hidden = self.encoder(**batch).last_hidden_state
        return F.normalize(self.pool(hidden, batch["attention_mask"]).float(), dim=-1)


@dataclass
class ExportResult:
    directory: Path
    parity: ParityReport
    sizes_mb: dict[str, float] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)


def export_graph(model: DualEncoder, path: Path, opset: int) -> tuple[Path, list[str]]:
    """TorchScript-based `torch.onnx.export` (robust for BERT-style encoders) with dynamic batch and sequence
    axes; eager attention so ONNX Runtime's fusions recognise the pattern. Returns (path, input names)."""
    encoder = model.encoder.cpu().eval()
    attention = getattr(encoder.config, "_attn_implementation", None)
    if attention and hasattr(encoder, "set_attn_implementation"):
        encoder.set_attn_implementation("eager")
    sample = model.tokenizer(
        ["an example document", "a second, longer example document"], padding=True, return_tensors="pt"
    )
    names = [n for n in INPUTS if n in sample]
    graph = EmbeddingGraph(encoder, model.pooling, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"embeddings": {0: "batch"}}
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                tuple(sample[n] for n in names),
                str(path),
                dynamo=False,
                input_names=names,
                output_names=["embeddings"],
                dynamic_axes=axes,
                opset_version=opset,
            )
    except Exception as exc:  # any exporter failure means this encoder cannot be served as ONNX
        reason = (str(exc).strip().splitlines() or [""])[-1][:500]  # the last line names the cause
        raise UnexportableModel(
            f"cannot export encoder '{type(encoder).__name__}' to ONNX: {type(exc).__name__}: {reason}"
        ) from exc
    finally:
        if attention and hasattr(encoder, "set_attn_implementation"):
            encoder.set_attn_implementation(attention)
    return path, names


def fuse(source: Path, target: Path, config) -> bool:
    """ONNX Runtime's transformer fusion (attention, LayerNorm, GELU) for known encoder families."""
    model_type = _FUSION_TYPES.get(getattr(config, "model_type", ""))
    if model_type is None:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type=model_type,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    optimized.save_model_to_file(str(target))
    return True


@dataclass
class Graph:
    """One encoder's export: the fp32 graph (what parity compares first) and the graph that is shipped."""

    fp32: Path
    shipped: Path
    input_names: list[str]
    fused: bool
    fp32_matmuls: list[str] = field(default_factory=list)  # weight MatMuls left unquantised in `shipped`
    n_matmuls: int = 0


def build_graph(
    model: DualEncoder, workdir: Path, cfg: OnnxConfig, tokenizer, pad_id: int, calibration_texts: Sequence[str]
) -> Graph:
    """Export one encoder, fuse it when asked (and its family is known), quantise it as configured (but the
    MatMuls `cfg.fp32_matmuls` names: an ExportError when it names none, as the result would be plain int8)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fp32, input_names = export_graph(model, workdir / "fp32.onnx", cfg.opset)
    fused = workdir / "fused.onnx"
    graph = fused if cfg.fuse and fuse(fp32, fused, model.encoder.config) else fp32
    shipped = workdir / MODEL_FILE
    kept: list[str] = []
    n_matmuls = 0
    if cfg.quantization == "none":
        shutil.copyfile(graph, shipped)
    else:
        if cfg.fp32_matmuls:
            kept, n_matmuls = matmuls_matching(graph, cfg.fp32_matmuls)
            if not kept:
                raise ExportError(f"fp32_matmuls '{cfg.fp32_matmuls}' names none of the graph's {n_matmuls} MatMuls")
        reader = (
            TextCalibrationReader(OnnxEncoder(graph, tokenizer, pad_id, cfg.threads), calibration_texts)
            if cfg.quantization == "static"
            else None
        )
        quantize(graph, shipped, cfg.quantization, reader, kept)
    return Graph(fp32, shipped, input_names, graph is fused, kept, n_matmuls)


def graph_encoders(graph: Graph, tokenizer, pad_id: int, cfg: OnnxConfig) -> tuple[OnnxEncoder, OnnxEncoder]:
    """(fp32, shipped) encoders of a graph: one and the same when nothing was quantised."""
    fp32 = OnnxEncoder(graph.fp32, tokenizer, pad_id, cfg.threads, cfg.batch_size)
    if cfg.quantization == "none":
        return fp32, fp32
    return fp32, OnnxEncoder(graph.shipped, tokenizer, pad_id, cfg.threads, cfg.batch_size)


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 2)


def _torch_size_mb(classifier: Classifier) -> float:
    return round(sum(p.numel() * p.element_size() for p in classifier.model.encoder.parameters()) / 2**20, 2)


def export_classifier(
    classifier: Classifier,
    out_dir: str | Path,
    cfg: OnnxConfig,
    eval_texts: Sequence[str],
    eval_labels: Sequence[Sequence[str]],
    calibration_texts: Sequence[str],
    tuning_texts: Sequence[str] = (),
    tuning_labels: Sequence[Sequence[str]] = (),
) -> ExportResult:
    """Build the ONNX package in `out_dir`; raises ExportError naming the failed gate (then `out_dir` is
    left empty) so the caller registers nothing. With `cfg.thresholds == "validation"` the export's thresholds
    (per label, and the one for request label sets) are tuned on `tuning_*` (the validation split) with its own
    scores; otherwise, or without them, it keeps the torch model's. The gates judge on `eval_*` (the test split)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tokenizer = classifier.model.tokenizer
    if not getattr(hf_tokenizer, "is_fast", False):
        raise UnexportableModel("the encoder has no fast tokenizer (tokenizer.json), which ONNX serving needs")
    precision = "fp32" if cfg.quantization == "none" else "int8"
    steps: dict[str, str] = {}
    new_label_model = classifier.new_label_model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        progress = tqdm(total=3 + (new_label_model is not None), desc="onnx export")
        hf_tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
        tokenizer = load_tokenizer(tmp / TOKENIZER_FILE, classifier.model.max_length)
        pad_id = int(hf_tokenizer.pad_token_id or 0)
        main = build_graph(classifier.model, tmp / "main", cfg, tokenizer, pad_id, calibration_texts)
        progress.update()
        # request label sets: the encoder with part of the adapter folded in, exported and quantised alike
        new = (
            build_graph(new_label_model, tmp / "new_labels", cfg, tokenizer, pad_id, calibration_texts)
            if new_label_model is not None
            else None
        )
        progress.update(new is not None)
        steps["fusion"] = "ort-transformers" if main.fused else "none"
        steps["quantization"] = cfg.quantization + (
            f", {len(main.fp32_matmuls)} of {main.n_matmuls} MatMuls kept fp32 ('{cfg.fp32_matmuls}')"
            if main.fp32_matmuls
            else ""
        )

        fp32_encoder, encoder = graph_encoders(main, tokenizer, pad_id, cfg)
        new_fp32_encoder, new_encoder = graph_encoders(new, tokenizer, pad_id, cfg) if new else (None, None)
        label_emb = encoder.embed(list(classifier.label_descriptions.values()))
        onnx_clf = OnnxClassifier(
            encoder,
            classifier.label_descriptions,
            label_emb,
            classifier.thresholds,
            float(classifier.model.scale),
            float(classifier.model.bias),
            classifier.single_label,
            tuple(classifier.text_columns),
            new_encoder,
            float(new_label_model.scale) if new is not None else None,
            float(new_label_model.bias) if new is not None else None,
            request_threshold=classifier.request_threshold,
        )
        retune = cfg.thresholds == "validation" and len(tuning_texts) > 0
        if retune:  # as `sft` tunes the torch model's: per-label ones (not for arg-max models) and the request one
            targets = multi_hot(tuning_labels, classifier.labels)
            onnx_clf.thresholds = own_thresholds(
                targets, onnx_clf.predict_proba(list(tuning_texts)), classifier.thresholds, classifier.single_label
            )
            onnx_clf.request_threshold = tune_shared_threshold(
                targets, onnx_clf.predict_proba(list(tuning_texts), classifier.label_descriptions)
            )
        tuned = f"tuned on {len(tuning_texts)} validation documents with the export's scores"
        if not retune:
            steps["thresholds"] = "the torch model's"
        elif classifier.single_label:
            steps["thresholds"] = f"request threshold {tuned}; own labels by arg-max"
        else:
            steps["thresholds"] = tuned
        parity = check_parity(
            classifier, fp32_encoder, onnx_clf, precision, eval_texts, eval_labels, cfg, new_fp32_encoder
        )
        progress.update()
        progress.close()
        sizes = {"torch_fp32": _torch_size_mb(classifier), "onnx_fp32": _size_mb(main.fp32)}
        if precision == "int8":
            sizes["onnx_int8"] = _size_mb(main.shipped)
        if new is not None:
            sizes[f"onnx_new_labels_{precision}"] = _size_mb(new.shipped)
        if not parity.passed:
            raise ExportError(
                f"ONNX {precision} export failed its parity gates, nothing was registered:\n"
                + "\n".join(f"- {f}" for f in parity.failures),
                parity,
                sizes,
            )
        shutil.copyfile(main.shipped, out_dir / MODEL_FILE)
        if new is not None:
            shutil.copyfile(new.shipped, out_dir / NEW_LABEL_MODEL_FILE)
        shutil.copyfile(tmp / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    np.save(out_dir / LABEL_EMB_FILE, label_emb)
    meta = {
        "labels": classifier.labels,
        "label_descriptions": classifier.label_descriptions,
        "thresholds": [float(t) for t in onnx_clf.thresholds],
        "single_label": classifier.single_label,
        "text_columns": list(classifier.text_columns),
        "scale": onnx_clf.scale,
        "bias": onnx_clf.bias,
        "pooling": classifier.model.pooling,
        "max_length": classifier.model.max_length,
        "pad_id": pad_id,
        "input_names": main.input_names,
        "threads": cfg.threads,
        "batch_size": cfg.batch_size,
        "steps": steps,
        "precision": precision,
        "new_label_adapter_scale": classifier.new_label_adapter_scale,
        "request_threshold": onnx_clf.request_threshold,
        **(
            {
                "new_label_model": NEW_LABEL_MODEL_FILE,
                "new_label_scale": onnx_clf.new_label_scale,
                "new_label_bias": onnx_clf.new_label_bias,
            }
            if new is not None
            else {}
        ),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return ExportResult(out_dir, parity, sizes, steps)
