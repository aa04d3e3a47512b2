"""One monitoring window of a champion: what it served (the inference log), what users said (the feedback
store), and what it is compared with; the `drift` statistics over them, and figures. The stage reads the log and
the store; this module gets their rows.

The reference is the champion's own answers on its validation split: documents of the distribution it was trained
for (found up its lineage: the first version along `lineage.parent_version` whose run logged the split) that its
weights were never fitted to. Answers, not true labels: an imperfect model's label mix differs from the truth on
any data, and would read as a shift where there is none; the fit split would make the scores over-confident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import matplotlib
import mlflow
import numpy as np
import pandas as pd

from mlprojects.config import MonitorConfig
from mlprojects.data import multi_hot
from mlprojects.evaluation.bootstrap import bootstrap_intervals
from mlprojects.evaluation.drift import binned_psi, chi2_homogeneity, ks, label_counts, linear_trend, mmd_test, psi
from mlprojects.evaluation.metrics import f1_summary
from registry import conventions as C
from registry.contract import LABEL_SET, REQUEST_SET, format_predictions
from registry.documents import read_table
from registry.errors import DataError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAX_LINEAGE_HOPS = 20


@dataclass
class Window:
    start: datetime
    end: datetime
    served: pd.DataFrame  # inference-log rows of the champion version
    feedback: pd.DataFrame  # feedback on predictions of the champion version, given in the window

    @property
    def corrected(self) -> pd.DataFrame:
        return self.feedback[self.feedback["corrected_labels"].map(lambda ls: ls is not None)]


@dataclass
class Reference:
    texts: list[str]  # the validation split's documents
    source: str  # its runs:/ URI


def window(
    served: pd.DataFrame, feedback: pd.DataFrame, version: str, start: datetime, end: datetime, labels: list[str]
) -> Window:
    """The champion version's share of a window: its rows of the inference log (read for the window), and the
    feedback on its predictions given in the window; answers on its own label set only (`labels`), since a
    request with other labels is zero-shot on another task, and its label mix says nothing of drift here."""
    stamps = pd.to_datetime(feedback["timestamp"], utc=True)
    in_window = (stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))
    return Window(
        start,
        end,
        own_label_set(served[served["model_version"] == str(version)], labels),
        own_label_set(feedback[in_window], labels),
    )


def own_label_set(answers: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The rows answered on `labels` (their `scores` name exactly those), re-indexed; rows without scores (feedback
    imported from a file may have none) are kept. Where the rows say which label set answered (`label_set`, in the
    inference log), a request's set is left out even when it names the model's own labels: it was scored as a
    request set is (the new-label encoder where there is one, one threshold for every label), not as the champion
    scores its own labels."""
    own = answers["scores"].map(lambda scores: not scores or set(scores) == set(labels)).astype(bool)
    if LABEL_SET in answers:
        own &= answers[LABEL_SET].ne(REQUEST_SET)
    return answers[own].reset_index(drop=True)


def lineage_artifact(client: mlflow.MlflowClient, name: str, version: str, path: str) -> tuple[pd.DataFrame, str]:
    """(table, runs:/ URI) of the first version up the lineage whose run logged `path`: a GRPO child's run has
    its validation split, its clone parents point at the SFT run that has the training split."""
    current = str(version)
    for _ in range(MAX_LINEAGE_HOPS):
        mv = client.get_model_version(name, current)
        uri = f"runs:/{mv.run_id}/{path}"
        try:
            return read_table(uri), uri
        except (DataError, mlflow.exceptions.MlflowException, OSError):
            parent = mv.tags.get(C.TAG_PARENT_VERSION)
            if not parent:
                break
            current = parent
    raise DataError(f"no run in the lineage of {name} version {version} logged {path}; give --reference-data")


def load_reference(client: mlflow.MlflowClient, name: str, version: str) -> Reference:
    validation, uri = lineage_artifact(client, name, version, "data/validation.parquet")
    return Reference(list(validation["text"]), uri)


def top_scores(answers: pd.DataFrame) -> np.ndarray:
    """Each answer's highest score (`scores` maps label -> probability)."""
    return answers["scores"].map(lambda scores: max(scores.values())).to_numpy(float)


def measure(window: Window, reference: Reference, classifier, cfg: MonitorConfig, seed: int = 0) -> tuple[dict, dict]:
    """(metrics, series for the figures). Distribution statistics need served documents, the embedding test
    their texts (an inference log keeping only hashes has none), the F1 estimate corrected feedback: F1-macro over
    the labels that occur in it, with a bootstrap interval over its records. Users may correct wrong answers more
    often than right ones; the estimate is then low, which the verdict's interval and margin only partly absorb."""
    labels = classifier.labels
    m: dict[str, float] = {
        "served_docs": len(window.served),
        "feedback": len(window.feedback),
        "corrected": len(window.corrected),
    }
    series: dict[str, np.ndarray] = {}
    if len(window.served):
        answers = format_predictions(
            classifier.predict_proba(reference.texts), labels, classifier.thresholds, classifier.single_label
        )  # as the endpoint answers: the same rounding
        series["reference_labels"] = label_counts(answers["labels"], labels)
        series["served_labels"] = label_counts(window.served["labels"], labels)
        m["label_psi"] = psi(series["reference_labels"], series["served_labels"])
        m["label_chi2"], m["label_chi2_p_value"] = chi2_homogeneity(series["reference_labels"], series["served_labels"])
        series["reference_top"], series["served_top"] = top_scores(answers), top_scores(window.served)
        m["score_psi"] = binned_psi(series["reference_top"], series["served_top"])
        m["score_ks"], m["score_ks_p_value"] = ks(series["reference_top"], series["served_top"])
        texts = [t for t in window.served["text"] if isinstance(t, str)]
        if texts:
            rng = np.random.default_rng(seed)
            pick = lambda xs: [xs[i] for i in rng.permutation(len(xs))[: cfg.max_docs]]  # noqa: E731
            test = mmd_test(
                classifier.model.embed(pick(reference.texts)).numpy(),
                classifier.model.embed(pick(texts)).numpy(),
                cfg.permutations,
                seed,
            )
            m.update({"mmd2": test["mmd2"], "mmd_bandwidth": test["bandwidth"], "mmd_p_value": test["p_value"]})
    if len(window.feedback):
        days = (
            pd.to_datetime(window.feedback["timestamp"], utc=True) - pd.Timestamp(window.start)
        ).dt.total_seconds() / 86400
        m["feedback_mean_score"] = float(window.feedback["score"].mean())
        m["feedback_score_slope_per_day"] = linear_trend(days.to_numpy(), window.feedback["score"].to_numpy())
        series["feedback_days"], series["feedback_scores"] = days.to_numpy(), window.feedback["score"].to_numpy()
    if len(window.corrected):
        y_true = multi_hot(window.corrected["corrected_labels"], labels)
        y_pred = multi_hot(window.corrected["predicted_labels"], labels)
        seen = (y_true.sum(0) + y_pred.sum(0)) > 0  # a label absent from a small sample is not an F1 of 0
        y_true, y_pred = y_true[:, seen], y_pred[:, seen]
        m["f1_macro"] = f1_summary(y_true, y_pred)["f1_macro"]
        m["f1_macro_low"], m["f1_macro_high"] = bootstrap_intervals(y_true, y_pred, cfg.bootstrap, seed)["f1_macro"]
    return m, series


def figures(series: dict, label_names: list[str]) -> dict[str, plt.Figure]:
    """Label shares, top-score histograms and feedback scores over the window: reference beside window."""
    out = {}
    if "served_labels" in series:
        fig, (ax_labels, ax_scores) = plt.subplots(1, 2, figsize=(12, 4))
        names = [*label_names, "(no label)"]
        x = np.arange(len(names))
        for offset, key, title in ((-0.2, "reference_labels", "validation split"), (0.2, "served_labels", "window")):
            ax_labels.bar(x + offset, series[key] / series[key].sum(), width=0.4, label=title)
        ax_labels.set_xticks(x, names, rotation=45, ha="right", fontsize="small")
        ax_labels.set(ylabel="share of assigned labels", title="the champion's label mix")
        ax_labels.legend()
        bins = np.linspace(0, 1, 21)
        ax_scores.hist(series["reference_top"], bins=bins, alpha=0.5, density=True, label="validation split")
        ax_scores.hist(series["served_top"], bins=bins, alpha=0.5, density=True, label="window")
        ax_scores.set(xlabel="top score", ylabel="density", title="top-score distribution")
        ax_scores.legend()
        fig.tight_layout()
        out["plots/monitor_distributions.png"] = fig
    if "feedback_scores" in series:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.scatter(series["feedback_days"], series["feedback_scores"], s=10, alpha=0.5)
        ax.set(
            xlabel="days since the window started",
            ylabel="feedback score (1-5)",
            ylim=(0.5, 5.5),
            title="feedback scores",
        )
        fig.tight_layout()
        out["plots/monitor_feedback.png"] = fig
    return out
