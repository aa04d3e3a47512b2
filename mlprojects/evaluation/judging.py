"""Judge any pyfunc model on a labelled dataset through the pyfunc contract: metrics, intervals, plots.

Used by the `evaluate` stage and by the lifecycle controller, so both report the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import validation
from mlprojects.data import multi_hot, prepare
from mlprojects.evaluation import plots
from mlprojects.evaluation.bootstrap import bootstrap_intervals
from registry import conventions as C
from registry.contract import CORE_COLUMNS, LABELS, SCORES, label_descriptions, to_params
from registry.documents import load_label_descriptions, parse_columns, read_table
from registry.errors import DataError, PlatformError
from registry.loading import load_pyfunc
from registry.lookup import logged_model_id
from registry.tracking import log_json

MULTILABEL_F1 = str(Path(__file__).with_name("metric_modules") / "multilabel_f1")
SUMMARY_METRICS = ("f1_macro", "f1_micro", "f1_weighted", "subset_accuracy")


class ModelError(PlatformError):
    """The model cannot be loaded, or its predictions break the pyfunc contract."""


@dataclass
class EvalData:
    texts: list[str]
    y_true: np.ndarray  # multi-hot [n_docs, n_labels]
    descriptions: dict[str, str]
    source: str
    digest: str

    @property
    def label_names(self) -> list[str]:
        return list(self.descriptions)


@dataclass
class Evaluation:
    report: dict  # multilabel_report: summary metrics + per_label
    intervals: dict[str, tuple[float, float]]
    y_pred: np.ndarray
    scores: np.ndarray  # probabilities [n_docs, n_labels], for curves
    data: EvalData

    def metrics(self) -> dict[str, float]:
        """Flat numbers for mlflow.log_metrics: summary metrics and per-label scores, each with its interval."""
        out = {k: float(self.report[k]) for k in SUMMARY_METRICS}
        for label, scores in self.report["per_label"].items():
            out.update({f"{k}_{label}": float(v) for k, v in scores.items()})
        for key, (low, high) in self.intervals.items():  # 'f1_macro' or 'per_label.<label>.<score>'
            name = key if "." not in key else f"{key.rsplit('.', 1)[1]}_{key[len('per_label.') : key.rfind('.')]}"
            out[f"{name}_low"], out[f"{name}_high"] = low, high
        return out

    def version_tags(self) -> dict[str, str]:
        """Summary results as model version tags (`eval.f1_macro`, `eval.f1_macro_ci`, `eval.dataset`)."""
        tags = {f"{C.TAG_EVAL_PREFIX}{k}": f"{self.report[k]:.4f}" for k in SUMMARY_METRICS}
        tags.update(
            {f"{C.TAG_EVAL_PREFIX}{k}_ci": "[{:.4f}, {:.4f}]".format(*self.intervals[k]) for k in SUMMARY_METRICS}
        )
        tags[C.TAG_EVAL_DATA_USED] = f"{self.data.source} (digest {self.data.digest}, {len(self.data.texts)} docs)"
        return tags


def load_eval_data(
    data: str,
    labels: str | dict[str, str],
    text_columns: str = "text",
    label_column: str = "labels",
    delimiter: str = "|",
) -> EvalData:
    """Read and normalise the dataset, then run its great-expectations gate; DataError if the gate fails.
    `labels`: a label file (URI) or the label -> description mapping itself."""
    descriptions = labels if isinstance(labels, dict) else load_label_descriptions(labels)
    frame = prepare(read_table(data), parse_columns(text_columns), label_column, delimiter)
    gate = validation.validate_evaluation_data(frame, list(descriptions))
    if not gate.success:
        raise DataError(f"evaluation data {data} failed validation:\n" + "\n".join(f"- {f}" for f in gate.failures))
    texts = list(frame["text"])
    y_true = multi_hot(frame["labels"], list(descriptions))
    digest = hashlib.sha256(json.dumps([texts, y_true.astype(int).tolist()]).encode()).hexdigest()[:12]
    return EvalData(texts, y_true, descriptions, data, digest)


def load_descriptions_arg(value: str) -> dict[str, str] | None:
    """A `label_descriptions` override: a JSON object or a YAML/JSON file; empty means none."""
    if not value:
        return None
    if value.lstrip().startswith("{"):
        return label_descriptions(value)
    return load_label_descriptions(value)


def predict(model, data: EvalData, zero_shot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(multi-hot predictions, scores) over the dataset's labels. The model's own labels and tuned thresholds
    are used when it knows every label of the set; otherwise (or when asked) it classifies zero-shot."""
    frame = pd.DataFrame({"text": data.texts})
    out = None if zero_shot else model.predict(frame)
    if out is None or not set(data.label_names) <= set(out[SCORES].iloc[0]):
        out = model.predict(frame, params=to_params(data.descriptions))
    if list(out.columns[: len(CORE_COLUMNS)]) != list(CORE_COLUMNS) or len(out) != len(data.texts):
        raise ModelError(f"predictions break the contract: columns {list(out.columns)}, {len(out)} rows")
    y_pred = multi_hot(out[LABELS], data.label_names).astype(bool)
    scores = np.array([[float(s.get(label, 0.0)) for label in data.label_names] for s in out[SCORES]])
    return y_pred, scores


@functools.lru_cache(maxsize=1)
def _metric():
    import evaluate  # Hugging Face `evaluate` is slow to import: loaded when a model is first scored

    return evaluate.load(MULTILABEL_F1)


def score(
    data: EvalData,
    y_pred: np.ndarray,
    scores: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Evaluation:
    """Metrics through the local `evaluate` module, and their bootstrap intervals over documents."""
    report = _metric().compute(
        predictions=y_pred.astype(int).tolist(),
        references=data.y_true.astype(int).tolist(),
        label_names=data.label_names,
    )
    intervals = bootstrap_intervals(data.y_true, y_pred, n_bootstrap, seed, confidence, data.label_names)
    return Evaluation(report, intervals, y_pred, scores, data)


def load_model(model_uri: str):
    try:
        return load_pyfunc(model_uri)
    except Exception as exc:  # MLflow raises many kinds: missing artifacts, bad code, corrupt weights
        raise ModelError(f"{model_uri} does not load: {type(exc).__name__}: {exc}") from exc


def evaluate_model(
    model_uri: str,
    data: EvalData,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    zero_shot: bool = False,
) -> Evaluation:
    """Load, predict and score; a model that fails to load or predict raises ModelError."""
    model = load_model(model_uri)
    try:
        y_pred, scores = predict(model, data, zero_shot)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{model_uri} does not predict: {type(exc).__name__}: {exc}") from exc
    return score(data, y_pred, scores, n_bootstrap, seed, confidence)


def log_model_metrics(ev: Evaluation, model_uri: str) -> str | None:
    """The summary metrics and intervals also as MLflow 3 model metrics, linked to the logged model behind
    `model_uri` and to the evaluation dataset, so the model's page shows them; the logged model's id, or None
    when the URI has no logged model (nothing is linked then)."""
    model_id = logged_model_id(model_uri)
    if model_id is None:
        return None
    frame = pd.DataFrame({"text": ev.data.texts, "labels": ["|".join(ls) for ls in _label_lists(ev.data)]})
    name = f"evaluation-{ev.data.digest}"
    try:
        dataset = mlflow.data.from_pandas(frame, source=ev.data.source, name=name)
    except mlflow.exceptions.MlflowException:  # a source MLflow cannot resolve (runs:/...): the digest still links
        dataset = mlflow.data.from_pandas(frame, name=name)
    metrics = {k: float(ev.report[k]) for k in SUMMARY_METRICS}
    for key in SUMMARY_METRICS:
        metrics[f"{key}_low"], metrics[f"{key}_high"] = map(float, ev.intervals[key])
    mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)
    return model_id


def _label_lists(data: EvalData) -> list[list[str]]:
    return [[label for label, on in zip(data.label_names, row) if on] for row in data.y_true]


def log_evaluation(ev: Evaluation, prefix: str = "") -> None:
    """Metrics, the full report and the plots into the active MLflow run (under `prefix`, e.g. 'v3/')."""
    mlflow.log_metrics({f"{prefix.replace('/', '_')}{k}": v for k, v in ev.metrics().items()})
    log_json(
        {"report": ev.report, "intervals": ev.intervals, "dataset": ev.data.source, "digest": ev.data.digest},
        f"{prefix}evaluation/metrics.json",
    )
    labels, y_true = ev.data.label_names, ev.data.y_true
    for name, fig in (
        ("confusion_matrices", plots.confusion_matrices(y_true, ev.y_pred, labels)),
        ("precision_recall", plots.precision_recall_curves(y_true, ev.scores, labels)),
        ("threshold_curves", plots.threshold_curves(y_true, ev.scores, labels)),
    ):
        mlflow.log_figure(fig, f"{prefix}evaluation/{name}.png")
        plots.plt.close(fig)
