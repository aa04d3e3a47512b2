"""SFT as a Ray Train job: the trial loop of one process runs in every worker, DDP averaging the gradients (gloo on
CPU, NCCL on GPU) and each global batch split over the workers; checkpoints are Ray's, so PBT can tune the job
(`Tuner(torch_trainer(...))`) and a dead worker's group restarts from the last one."""

from __future__ import annotations

from functools import partial

import torch

from mlprojects.config import ScaleConfig
from mlprojects.training.trial import TrialData, run_trial


def train_worker(config: dict, data: TrialData, threads: int) -> None:
    """One Ray Train worker: its rank in the group, its device, then the shared trial loop."""
    from ray import train
    from ray.train.torch import get_device

    context = train.get_context()
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.cuda.set_device(get_device())  # build_model's "cuda" is then this worker's GPU
    run_trial(config, data, train.get_checkpoint(), train.report, context.get_world_rank(), context.get_world_size())


def torch_trainer(
    data: TrialData, scale: ScaleConfig, run_config=None, config: dict | None = None, datasets: dict | None = None
):
    """A TorchTrainer over `scale.num_workers` workers; the driver-side trainer actor takes no CPU of theirs.
    `datasets` (ray.data) are split over the workers as they stream (`get_dataset_shard`)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        partial(train_worker, data=data, threads=max(1, int(scale.cpus_per_worker))),
        train_loop_config=config or {},
        torch_config=TorchConfig(backend="nccl" if scale.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scale.num_workers,
            use_gpu=scale.use_gpu,
            resources_per_worker={"CPU": scale.cpus_per_worker, **({"GPU": 1} if scale.use_gpu else {})},
            trainer_resources={"CPU": 0},
        ),
        run_config=run_config,
        datasets=datasets,
    )
