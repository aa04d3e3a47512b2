"""Figures people would rather look at than tables; each returns a matplotlib Figure to log with mlflow."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlprojects.evaluation.metrics import DEFAULT_THRESHOLD_GRID, f1_per_label  # noqa: E402


def training_curves(history: list[dict], title: str = "SFT"):
    """Train/validation loss and validation F1 per epoch."""
    epochs = range(1, len(history) + 1)
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_loss.legend()
    for key in ("f1_macro", "f1_micro"):
        ax_f1.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax_f1.set(xlabel="epoch", ylabel="F1", title=f"{title}: validation F1", ylim=(0, 1.02))
    ax_f1.legend()
    fig.tight_layout()
    return fig


def hyperparameter_trajectories(trials, prefix: str = "hp_", metric: str = "f1_macro"):
    """One panel per mutated hyperparameter (and the metric): each PBT trial's value per optimiser step (intervals
    may be epochs or steps); jumps are exploits."""
    names = [c for c in trials.columns if c.startswith(prefix)] + [metric]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for trial, rows in trials.sort_values("step").groupby("trial_id"):
            ax.plot(rows["step"], rows[name], marker="o", label=trial)
        ax.set(xlabel="optimiser step", title=name.removeprefix(prefix))
        if name == "hp_learning_rate":
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle("PBT: hyperparameter trajectories per trial")
    fig.tight_layout()
    return fig


def grpo_curves(history: list[dict]):
    """GRPO per step: reward mean ± std within groups, KL to the reference, clip fraction, policy entropy."""
    steps = range(1, len(history) + 1)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    mean = [h["reward_mean"] for h in history]
    std = [h["reward_std"] for h in history]
    axes[0].plot(steps, mean, label="mean")
    axes[0].fill_between(
        steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2, label="± std in group"
    )
    axes[0].legend()
    for ax, key, title in zip(
        axes,
        ("reward_mean", "kl", "clip_fraction", "entropy"),
        ("reward", "KL(policy ‖ reference), k3", "clip fraction", "entropy (nats/label)"),
    ):
        if key != "reward_mean":
            ax.plot(steps, [h[key] for h in history])
        ax.set(xlabel="step", title=f"GRPO: {title}")
    fig.tight_layout()
    return fig


def _grid(n: int, size: float = 2.6):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def confusion_matrices(y_true, y_pred, labels: list[str]):
    """One 2x2 confusion matrix per label (rows: true no/yes, columns: predicted no/yes)."""
    fig, axes = _grid(len(labels))
    for j, (ax, label) in enumerate(zip(axes, labels)):
        t, p = y_true[:, j].astype(bool), y_pred[:, j].astype(bool)
        cm = np.array([[(~t & ~p).sum(), (~t & p).sum()], [(t & ~p).sum(), (t & p).sum()]])
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="black")
        ax.set(
            title=label,
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["no", "yes"],
            yticklabels=["no", "yes"],
            xlabel="predicted",
            ylabel="true",
        )
    fig.tight_layout()
    return fig


def precision_recall_curves(y_true, scores, labels: list[str]):
    """Precision against recall per label as the threshold sweeps the scores."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(7, 5))
    for j, label in enumerate(labels):
        if y_true[:, j].sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y_true[:, j], scores[:, j])
        ax.plot(recall, precision, label=f"{label} (AP {average_precision_score(y_true[:, j], scores[:, j]):.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall per label")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def threshold_curves(y_true, scores, labels: list[str], thresholds=None):
    """F1 per label as a function of the decision threshold, with the model's own thresholds marked."""
    fig, axes = _grid(len(labels))
    for j, (ax, label) in enumerate(zip(axes, labels)):
        f1 = [f1_per_label(y_true[:, j : j + 1], scores[:, j : j + 1] >= t)[2][0] for t in DEFAULT_THRESHOLD_GRID]
        ax.plot(DEFAULT_THRESHOLD_GRID, f1, marker=".")
        if thresholds is not None:
            ax.axvline(float(np.asarray(thresholds)[j]), color="grey", linestyle="--")
        ax.set(title=label, xlabel="threshold", ylabel="F1", ylim=(0, 1.02))
    fig.tight_layout()
    return fig
