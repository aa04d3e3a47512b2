"""One SFT configuration on Ray Train (no tuning): early stopping on validation F1, the best epoch's checkpoint
as the classifier, the same result `train_classifier` gives in one process."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from mlprojects.config import RayConfig, ScaleConfig, TrainConfig
from mlprojects.streaming import Stream
from mlprojects.training.distributed import torch_trainer
from mlprojects.training.pbt import base_config, best_classifier, tuning_outcome
from mlprojects.training.ray_cluster import check_cluster, check_local, start_ray, storage_root
from mlprojects.training.trainer import FitResult
from mlprojects.training.trial import HP_PREFIX, METRIC, MODE, TrialData

log = logging.getLogger(__name__)
BOOKKEEPING = {
    "trial_id",
    "epoch",
    "step",
    "resumed_epoch",
    "train_s",
}  # reported with the metrics, not metrics per epoch


def train_distributed(
    cfg: TrainConfig,
    scale: ScaleConfig,
    cluster: RayConfig,
    train: pd.DataFrame | Stream,
    val: pd.DataFrame,
    descriptions: dict[str, str],
    text_columns: list[str],
    name: str = "sft-ray-train",
):
    """One configuration on Ray Train, early stopping on validation F1: (Classifier, FitResult) as
    `train_classifier` returns, from the best epoch's checkpoint, on `cluster` (address, storage).
    A Stream's dataset is split over the workers as they read it; a frame is shipped to each whole."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    check_local(scale, cluster)
    streamed = isinstance(train, Stream)
    fit = train.spec if streamed else train
    data = TrialData(base_config(cfg), fit, val, descriptions, 1, "epochs", cfg.patience)
    started = start_ray(cluster)
    t0 = time.perf_counter()
    try:
        check_cluster(scale)
        run_config = RunConfig(
            name=name,
            storage_path=storage_root(cluster),
            failure_config=FailureConfig(max_failures=scale.max_failures),
            checkpoint_config=CheckpointConfig(checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
        )
        datasets = {"train": train.dataset} if streamed else None
        result = torch_trainer(data, scale, run_config, datasets=datasets).fit()
    finally:
        if started:
            ray.shutdown()
    outcome = tuning_outcome([result], result.path, cfg, time.perf_counter() - t0, finished=False)
    log.info("Ray Train: %d workers, %.1f s", scale.num_workers, outcome.wall_s)
    per_epoch = outcome.trials.sort_values("epoch").drop_duplicates("epoch", keep="last")
    best = outcome.best_metrics  # what the loop reported: Ray adds its own keys to the rows of `trials`
    own = [k for k in best if k not in BOOKKEEPING and not k.startswith(HP_PREFIX)]
    history = [{k: float(row[k]) for k in own} for row in per_epoch.to_dict("records")]
    fit = FitResult(int(best["epoch"]), best, np.asarray(outcome.best_state["thresholds"]), history)
    return best_classifier(cfg, outcome, descriptions, text_columns), fit
