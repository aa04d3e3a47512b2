"""One trial's training loop and its checkpoint: shared by a Ray Tune function trainable (one process) and every
worker of a Ray Train job (DDP). A checkpoint is the full trainer state (LoRA weights, scale/bias, optimizer,
schedule, data order and position) with the hyperparameters it was trained with, so a PBT exploit really continues
the better trial's weights; a changed LoRA rank is carried over by SVD (`lora_resize`)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from mlprojects.config import TrainConfig
from mlprojects.model.encoder import build_model
from mlprojects.model.lora_resize import lora_rank, resize_lora_state
from mlprojects.streaming import StreamSpec
from mlprojects.training.faults import crash_if_asked, kill_if_asked
from mlprojects.training.trainer import SFTTrainer, make_split

STATE_FILE = "trainer_state.pt"
METRIC, MODE = "f1_macro", "max"
HP_PREFIX = "hp_"


@dataclass
class TrialData:
    """What every trial needs, shipped once through Ray's object store (tune.with_parameters)."""

    base: dict  # TrainConfig fields; the trial's config overrides the mutated ones
    train: pd.DataFrame | StreamSpec  # a stream: each Ray Train worker reads its shard of the dataset
    val: pd.DataFrame
    descriptions: dict[str, str]
    interval: int
    unit: str = "epochs"  # of `interval`: "epochs" or "steps"
    patience: int | None = None  # early stopping in epochs (one configuration); None: train to max_epochs (PBT)


def trial_config(base: dict, hparams: dict) -> TrainConfig:
    return TrainConfig.from_dict({**base, **hparams})


def load_trial_state(checkpoint) -> dict:
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, weights_only=False)


def build_trainer(cfg: TrainConfig, data: TrialData, state: dict | None = None):
    """A trainer for `cfg`, continued from a checkpoint's trainer state when given (resizing LoRA if needed)."""
    torch.manual_seed(cfg.seed)
    names = list(data.descriptions)
    trainer = SFTTrainer(
        build_model(cfg),
        list(data.descriptions.values()),
        data.train.fit_stream() if isinstance(data.train, StreamSpec) else make_split(data.train, names),
        make_split(data.val, names),
        cfg,
    )
    if state is not None:
        same_rank = lora_rank(state["model"]) == cfg.lora_r
        if not same_rank:
            state = {**state, "model": resize_lora_state(state["model"], cfg.lora_alpha, cfg.lora_r, cfg.seed)}
        trainer.load_state(state, optimizer=same_rank)
    return trainer


def _broadcast(value, rank: int, world: int):
    """Rank 0's value on every worker (validation runs once; every worker then reports and stops alike)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_trial(config: dict, data: TrialData, checkpoint, report, rank: int = 0, world: int = 1) -> None:
    """One trial: `interval` epochs or steps per reported iteration, a full checkpoint each time (from rank 0).

    The same loop runs in a Tune function trainable (one process) and in every worker of a Ray Train job (DDP,
    `world` > 1). With `data.patience` set it stops early, `patience` epochs after the best validation F1."""
    from ray import train, tune

    cfg = trial_config(data.base, config)
    if rank == 0:
        crash_if_asked(tune.get_context().get_trial_dir(), checkpoint is not None)
    saved = load_trial_state(checkpoint) if checkpoint else None
    trainer = build_trainer(cfg, data, saved["trainer"] if saved else None)
    if world > 1:
        trainer.distribute(rank, world)
    best = saved.get("best", (-1.0, 0)) if saved else (-1.0, 0)  # (validation F1, epoch), for early stopping
    resumed_epoch, iterations = trainer.epoch, 0
    while trainer.epoch < cfg.max_epochs:
        started = time.perf_counter()
        if data.unit == "steps":
            record = trainer.train_steps(data.interval)
        else:
            for _ in range(min(data.interval, cfg.max_epochs - trainer.epoch)):
                record = trainer.train_epoch()
        iterations += 1
        train_s = time.perf_counter() - started  # training only: throughput = documents / train_s
        kill_if_asked(checkpoint is not None, iterations, rank, world)
        val = _broadcast(trainer.validate() if rank == 0 else None, rank, world)
        thresholds = [float(t) for t in val.pop("thresholds")]
        metrics = {
            **record,
            **val,
            "epoch": trainer.epoch,
            "step": trainer.scheduler.last_epoch,
            "resumed_epoch": resumed_epoch,
            "train_s": train_s,
            **{HP_PREFIX + k: float(v) for k, v in config.items()},
        }
        if metrics[METRIC] > best[0]:
            best = (metrics[METRIC], trainer.epoch)
        if rank > 0:
            report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(
                    {
                        "trainer": trainer.state(),
                        "hparams": dict(config),
                        "thresholds": thresholds,
                        "metrics": metrics,
                        "single_label": trainer.single_label,
                        "best": best,
                    },
                    Path(directory) / STATE_FILE,
                )
                report(metrics, checkpoint=train.Checkpoint.from_directory(directory))
        if data.patience is not None and trainer.epoch - best[1] >= data.patience:
            break
