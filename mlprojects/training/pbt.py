"""Population Based Training of the SFT stage with Ray Tune: search space, trial function, tuner, and its history.

One Ray `training_iteration` is `perturbation_interval` epochs or optimiser steps. Each trial checkpoints its full
trainer state (LoRA weights, scale/bias, optimizer, schedule, data order and position) with the hyperparameters it
was trained with, so an exploit really continues the better trial's weights; a changed LoRA rank is carried over
by SVD (`lora_resize`).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mlprojects.config import PBTConfig, ScaleConfig, TrainConfig
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import build_model
from mlprojects.training.distributed import torch_trainer
from mlprojects.training.faults import fault_mode
from mlprojects.training.ray_cluster import check_cluster, check_local, start_ray, storage_root
from mlprojects.training.trial import METRIC, MODE, TrialData, load_trial_state, run_trial, trial_config
from registry.conventions import TAG_STAGE
from registry.errors import ConfigError, TrainingError

CONTINUOUS = {"learning_rate": "loguniform", "weight_decay": "uniform", "warmup_ratio": "uniform"}
CHOICES = ("lora_r", "contrastive_weight")
MUTABLE = tuple(CONTINUOUS) + CHOICES
SEARCHES = ("pbt", "random")
UNITS = ("epochs", "steps")


def validate_config(pbt: PBTConfig, cfg: TrainConfig | None = None) -> None:
    """Every mistake a user can make in the tuning config, reported before Ray or any trial starts; with `cfg`,
    also that its recipe (the population's first trial) lies inside the space PBT samples and mutates."""
    if pbt.population < 2:
        raise ConfigError(f"PBT needs a population of at least 2 trials, got {pbt.population}")
    unknown = sorted(set(pbt.mutations) - set(MUTABLE))
    if unknown:
        raise ConfigError(f"unknown mutation(s) {unknown}; known: {list(MUTABLE)}")
    if not pbt.mutations:
        raise ConfigError("no hyperparameter to mutate: give at least one of " + ", ".join(MUTABLE))
    for name in CONTINUOUS:
        low, high = getattr(pbt, name)
        if low > high:
            raise ConfigError(f"{name} range has low > high: [{low}, {high}]")
    if pbt.learning_rate[0] <= 0:
        raise ConfigError(f"learning_rate range must be positive (log-uniform), got {list(pbt.learning_rate)}")
    for name in CHOICES:
        values = getattr(pbt, name)
        if not values or any(v <= 0 for v in values):
            raise ConfigError(f"{name} choices must be positive numbers, got {list(values)}")
    if pbt.perturbation_unit not in UNITS:
        raise ConfigError(f"perturbation_unit must be one of {UNITS}, got {pbt.perturbation_unit!r}")
    if pbt.perturbation_interval < 1:
        raise ConfigError(
            f"perturbation_interval must be >= 1 {pbt.perturbation_unit[:-1]}, got {pbt.perturbation_interval}"
        )
    if not 0 < pbt.quantile_fraction <= 0.5:
        raise ConfigError(f"quantile_fraction must be in (0, 0.5], got {pbt.quantile_fraction}")
    if pbt.cpus_per_trial < 0 or pbt.gpus_per_trial < 0 or pbt.cpus_per_trial + pbt.gpus_per_trial == 0:
        raise ConfigError("cpus_per_trial/gpus_per_trial must be >= 0 and not both 0")
    local_cpus = pbt.cluster.local_num_cpus
    if not pbt.cluster.ray_address and pbt.cpus_per_trial > local_cpus:
        raise ConfigError(f"cpus_per_trial {pbt.cpus_per_trial} exceeds the local Ray's {local_cpus} CPUs")
    fault_mode()  # the test hook's setting, checked with the rest
    if cfg is not None:
        check_initial_point(cfg, pbt)


def initial_point(cfg: TrainConfig, pbt: PBTConfig) -> dict:
    """The configured recipe's values of the mutated hyperparameters: the population's first trial, so PBT
    starts from the defaults (a measured recipe) and the rest of the population explores around it."""
    return {name: getattr(cfg, name) for name in pbt.mutations}


def check_initial_point(cfg: TrainConfig, pbt: PBTConfig) -> None:
    for name, value in initial_point(cfg, pbt).items():
        if name in CHOICES and value not in getattr(pbt, name):
            raise ConfigError(f"{name} {value} is not among PBT's {name} choices {list(getattr(pbt, name))}")
        if name in CONTINUOUS and not getattr(pbt, name)[0] <= value <= getattr(pbt, name)[1]:
            raise ConfigError(f"{name} {value} lies outside PBT's {name} range {list(getattr(pbt, name))}")


def search_space(pbt: PBTConfig) -> dict:
    """Ray Tune domains for the mutated hyperparameters: the population is sampled from these."""
    from ray import tune

    domains = {
        "learning_rate": tune.loguniform(*pbt.learning_rate),
        "weight_decay": tune.uniform(*pbt.weight_decay),
        "warmup_ratio": tune.uniform(*pbt.warmup_ratio),
    }
    for name in CHOICES:
        domains[name] = tune.choice(list(getattr(pbt, name)))
    return {name: domains[name] for name in pbt.mutations}


def mutation_space(pbt: PBTConfig, rng: np.random.Generator) -> dict:
    """PBT's form of the space: choices as plain lists, so an explore step moves to a neighbouring value (a
    `tune.choice` would be scaled by 0.8/1.2 and leave the allowed set); a continuous hyperparameter as a sampler
    drawing from `rng` (a Ray domain would resample from numpy's global generator)."""
    return {
        name: list(getattr(pbt, name)) if name in CHOICES else partial(domain.sample, random_state=rng)
        for name, domain in search_space(pbt).items()
    }


def train_trial(config: dict, data: TrialData) -> None:
    """Ray Tune function trainable: one process trains the trial."""
    from ray import tune

    torch.set_num_threads(max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))))
    run_trial(config, data, tune.get_checkpoint(), tune.report)


@dataclass
class TuneOutcome:
    experiment_path: str
    best_trial: str
    best_state: dict  # the checkpoint: trainer state, hparams, thresholds, metrics
    trials: pd.DataFrame  # one row per trial and iteration (metrics and hp_* columns)
    perturbations: pd.DataFrame  # one row per exploit
    wall_s: float = 0.0

    @property
    def best_hparams(self) -> dict:
        return self.best_state["hparams"]

    @property
    def best_metrics(self) -> dict:
        return self.best_state["metrics"]


def clip_to_ranges(config: dict, pbt: PBTConfig) -> dict:
    """Ray's explore step multiplies a continuous hyperparameter by 0.8 or 1.2 without bounds, so a learning rate
    sampled near 1e-4 could leave the range; keep every mutated one inside its configured range (nested configs too,
    as Ray's explore walks them)."""
    for key, value in config.items():
        if isinstance(value, dict):
            clip_to_ranges(value, pbt)
        elif key in CONTINUOUS and key in pbt.mutations:
            low, high = getattr(pbt, key)
            config[key] = min(max(value, low), high)
    return config


def _seeded_pbt_class():
    """`SeededPBT`, defined on first use so that importing this module does not import Ray Tune."""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers import pbt as ray_pbt

    class SeededPBT(PopulationBasedTraining):
        """Ray's PBT with its own seeded generator, so a synchronous population exploits alike from run to run.

        Ray's PBT draws which top trial to clone and how to explore (resample or perturb, which factor, which
        neighbouring choice) from the process-wide `random`, which Ray's event loop also shuffles with, as often
        as trial timing makes it; here those draws come from the scheduler's own generator."""

        def __init__(self, seed: int, **kwargs):
            super().__init__(**kwargs)
            self._rng = random.Random(seed)

        def _checkpoint_or_exploit(self, *args, **kwargs):
            with _swapped(ray_pbt, "random", self._rng):
                return super()._checkpoint_or_exploit(*args, **kwargs)

    return SeededPBT


@contextlib.contextmanager
def _swapped(module, name: str, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _scheduler(pbt: PBTConfig, search: str, nest, seed: int):
    if search == "random":
        return None  # FIFO: every sampled configuration trains to the end
    return _seeded_pbt_class()(
        seed,
        time_attr="training_iteration",
        perturbation_interval=1,
        hyperparam_mutations=nest(mutation_space(pbt, np.random.default_rng(seed))),
        quantile_fraction=pbt.quantile_fraction,
        resample_probability=pbt.resample_probability,
        synch=pbt.synch,
        custom_explore_fn=partial(clip_to_ranges, pbt=pbt),
    )


def _callbacks(parent_run_id: str | None):
    """Every trial becomes an MLflow child run of the SFT run, with its metrics per iteration."""
    if not parent_run_id:
        return []
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    run = mlflow.MlflowClient().get_run(parent_run_id)
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id).name
    # params at trial end: PBT changes a trial's config, and MLflow params cannot change value
    return [
        MLflowLoggerCallback(
            tracking_uri=mlflow.get_tracking_uri(),
            experiment_name=experiment,
            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, TAG_STAGE: "sft-pbt-trial"},
            log_params_on_trial_end=True,
        )
    ]


def make_tuner(
    cfg: TrainConfig,
    pbt: PBTConfig,
    data: TrialData,
    search: str = "pbt",
    parent_run_id: str | None = None,
    name: str | None = None,
    resume: str | None = None,
    scale: ScaleConfig | None = None,
):
    """A new Tuner, or the interrupted one at `resume` (same trainable, same data).

    With a distributed `scale` each trial is a Ray Train TorchTrainer over `scale.num_workers` DDP workers, and
    the population's hyperparameters sit under its `train_loop_config`."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    if scale is not None and scale.distributed:
        trainable = torch_trainer(data, scale)
        nest = lambda space: {"train_loop_config": space}  # noqa: E731
    else:
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, data=data), {"cpu": pbt.cpus_per_trial, "gpu": pbt.gpus_per_trial}
        )
        nest = lambda space: space  # noqa: E731
    if resume:
        resume = str(Path(resume).expanduser())
        if not tune.Tuner.can_restore(resume):
            raise ConfigError(f"no tuning run to resume at {resume}")
        return tune.Tuner.restore(resume, trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=nest(search_space(pbt)),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=pbt.population,
            search_alg=BasicVariantGenerator(points_to_evaluate=[nest(initial_point(cfg, pbt))], random_state=cfg.seed),
            scheduler=_scheduler(pbt, search, nest, cfg.seed),
            reuse_actors=scale is None or not scale.distributed,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_root(pbt.cluster),
            verbose=1,
            callbacks=_callbacks(parent_run_id),
            failure_config=tune.FailureConfig(max_failures=pbt.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
        ),
    )


def run_tuning(
    cfg: TrainConfig,
    pbt: PBTConfig,
    train: pd.DataFrame,
    val: pd.DataFrame,
    descriptions: dict[str, str],
    search: str = "pbt",
    parent_run_id: str | None = None,
    name: str = "sft-tune",
    resume: str | None = None,
    on_start=None,
    scale: ScaleConfig | None = None,
) -> TuneOutcome:
    """Validate, start Ray, tune, and return the best checkpoint with the population's history.

    `on_start(experiment_path)` is called before the first trial (e.g. to tell the user how to resume)."""
    import time

    import ray

    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {SEARCHES}, got '{search}'")
    validate_config(pbt, cfg)
    distributed = scale is not None and scale.distributed
    if distributed:
        check_local(scale, pbt.cluster)
    data = TrialData(
        base_config(cfg),
        train,
        val,
        descriptions,
        pbt.perturbation_interval,
        pbt.perturbation_unit,
    )
    started = start_ray(pbt.cluster)
    t0 = time.perf_counter()
    try:
        if distributed:
            check_cluster(scale)
        tuner = make_tuner(cfg, pbt, data, search, parent_run_id, name, resume, scale)
        if on_start:
            on_start(resume or str(Path(storage_root(pbt.cluster)) / name))
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    return tuning_outcome(list(results), results.experiment_path, cfg, time.perf_counter() - t0)


def base_config(cfg: TrainConfig) -> dict:
    return cfg.to_params() | {"lora_target_modules": cfg.lora_target_modules}


def tuning_outcome(results: list, path: str, cfg: TrainConfig, wall_s: float, finished: bool = True) -> TuneOutcome:
    """The best checkpoint of `results` (Ray Tune or Ray Train results) with every trial's history.

    `finished`: every trial must have reached max_epochs (PBT; early stopping ends a single run sooner)."""
    ok = [r for r in results if r.error is None]
    if not ok:
        first = next((r.error for r in results), None)
        raise TrainingError(f"all {len(results)} trials failed, nothing registered; first error: {first}")
    unfinished = [r for r in ok if finished and r.metrics.get("epoch", 0) < cfg.max_epochs]
    if unfinished:
        raise TrainingError(
            f"tuning stopped before every trial finished ({len(unfinished)} unfinished), "
            f"nothing registered; resume it with --resume {path}"
        )
    scored = [(m[METRIC], i, r, c) for i, r in enumerate(ok) for c, m in r.best_checkpoints or [] if METRIC in m]
    if not scored:
        raise TrainingError(f"no trial left a checkpoint in {path}, nothing registered")
    _, _, best_result, best_ckpt = max(scored, key=lambda t: (t[0], -t[1]))
    # every report carries a checkpoint, so the checkpoints' metrics are each trial's history; Ray's
    # `metrics_dataframe` (read back from the logger files) was sometimes empty right after fit()
    trials = pd.DataFrame([{**m, "trial_id": trial_id(r)} for r in results for _, m in r.best_checkpoints or []])
    return TuneOutcome(
        path,
        trial_id(best_result),
        load_trial_state(best_ckpt),
        trials,
        perturbations(path, [trial_id(r) for r in results]),
        wall_s,
    )


def trial_id(result) -> str:
    """From the trial's directory name (`<trainable>_<id>_<index>_<tag>`): a reported `trial_id` can be a clone's."""
    match = re.search(r"([0-9a-f]{5}_\d{5})_\d+_", Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def perturbations(experiment_path: str, trial_ids: list[str]) -> pd.DataFrame:
    """Ray's PBT log (pbt_global.txt) as a table: who cloned whom at which iteration, config before/after.

    Ray logs each exploit as [target tag, source tag, target iteration, source iteration, source config,
    new config]; a tag starts with the trial's index, which is also the suffix of its trial id."""
    by_index = {int(t.rsplit("_", 1)[-1]): t for t in trial_ids}
    log = Path(experiment_path) / "pbt_global.txt"
    rows = []
    for line in log.read_text().splitlines() if log.exists() else []:
        target, source, target_iter, source_iter, before, after = json.loads(line)
        idx = lambda tag: int(str(tag).split("_", 1)[0])  # noqa: E731
        rows.append(
            {
                "trial": by_index.get(idx(target), target),
                "cloned_from": by_index.get(idx(source), source),
                "iteration": target_iter,
                "source_iteration": source_iter,
                **{f"before.{k}": v for k, v in before.items() if k in MUTABLE},
                **{f"after.{k}": v for k, v in after.items() if k in MUTABLE},
            }
        )
    return pd.DataFrame(rows)


def best_classifier(cfg: TrainConfig, outcome: TuneOutcome, descriptions: dict[str, str], text_columns: list[str]):
    """The best trial's checkpoint as a Classifier, at the hyperparameters it was trained with."""
    best_cfg = trial_config(base_config(cfg), outcome.best_hparams)
    torch.manual_seed(best_cfg.seed)
    model = build_model(best_cfg)
    model.load_trainable_state(outcome.best_state["trainer"]["model"])
    return Classifier(
        model,
        dict(descriptions),
        np.asarray(outcome.best_state["thresholds"]),
        outcome.best_state["single_label"],
        text_columns,
        best_cfg.new_label_adapter_scale,
    )
