"""`sft --tune pbt`: real Ray Tune PBT on the tiny encoder — interrupt, resume, exploits, child runs, registration.

A 3-trial run exploits and registers its best trial (default suite); the interrupted-then-resumed run is
marked slow (see the note on it); bad input is rejected before Ray starts, and a run whose trials all crash
registers nothing.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from mlprojects.config import PBTConfig, RayConfig, TrainConfig
from mlprojects.data import load_splits
from mlprojects.model.encoder import merged_encoder
from mlprojects.sft import main
from mlprojects.training.faults import FAULT_ENV
from mlprojects.training.pbt import _scheduler, clip_to_ranges, run_tuning
from mlprojects.training.trial import TrialData, build_trainer, trial_config
from registry.contract import OUTPUT_COLUMNS
from tests.conftest import REPO, cli_args
from tests.test_sft_stage import mlflow_run


@pytest.fixture()
def pbt_args(small_dataset, tiny_encoder, tmp_path) -> dict:
    """78 fit documents (of 120: validation and test are held out) = 5 steps per epoch: 2 epochs in intervals of
    4 steps end at steps 4, 8 (both mid-epoch) and 10."""
    return {
        **small_dataset,
        "encoder": tiny_encoder,
        "max_epochs": 2,
        "min_examples": 2,
        "model_name": "tiny-pbt",
        "tune": "pbt",
        "pbt_trials": 3,
        "perturbation_interval": 4,
        "perturbation_unit": "steps",
        "cpus_per_trial": 0.5,
        "storage_path": str(tmp_path / "ray"),
    }


def _wait_for_checkpoint(storage: Path, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(storage.glob("*/*/checkpoint_000000")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no trial checkpoint appeared (rc={proc.poll()})")


def test_pbt_run_exploits_and_registers_the_best_trial(mlflow_env, pbt_args):
    """A 3-trial PBT run through `mlflow run`: exploits happen, the best trial is registered with its hparams."""
    proc = mlflow_run("sft", pbt_args, mlflow_env)
    assert_best_trial_registered(proc, n_sft_runs=1)
    client = mlflow.MlflowClient()
    for child in mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.stage = 'sft-pbt-trial'", output_format="list"
    ):  # perturbation intervals in steps, ending mid-epoch
        steps = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "step"), key=lambda m: m.step)]
        epochs = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "epoch"), key=lambda m: m.step)]
        assert steps[-3:] == [4, 8, 10] and epochs[-3:] == [0, 1, 2], (steps, epochs)
    first_lrs = [  # the hyperparameters each trial reported at its first interval, before any exploit
        min(client.get_metric_history(child.info.run_id, "hp_learning_rate"), key=lambda m: m.step).value
        for child in mlflow.search_runs(
            search_all_experiments=True, filter_string="tags.stage = 'sft-pbt-trial'", output_format="list"
        )
    ]
    assert TrainConfig().learning_rate in first_lrs, first_lrs  # the population starts from the configured recipe


@pytest.mark.slow  # Known issue: restoring a *synchronous* PBT run whose trials were all PAUSED at the barrier can
# stall (Ray restores the scheduler's barrier state inconsistently); seen once in a clean-clone CI run.
@pytest.mark.timeout(1200)  # two Ray start-ups and a resumed tuning run: past 600 s on 2 cores at load ~4
def test_interrupted_pbt_run_resumes_exploits_and_registers_the_best_trial(mlflow_env, pbt_args):
    storage = Path(pbt_args["storage_path"])
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_env, FAULT_ENV: "once"}
    # first attempt of every trial crashes (test hook) and is retried by Ray; then Ctrl-C stops the run
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlprojects.sft", *cli_args(**pbt_args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(storage, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "nothing registered; resume it with --resume" in err
    experiment = next(storage.iterdir())
    assert f"--resume {experiment}" in out + err
    assert list(experiment.glob("*/test_hook_crashed")), "the test hook crashed no trial"
    assert mlflow.MlflowClient().search_registered_models() == []

    proc = mlflow_run("sft", {**pbt_args, "resume": str(experiment)}, mlflow_env)
    assert_best_trial_registered(proc, n_sft_runs=2)


def assert_best_trial_registered(proc, n_sft_runs: int) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Registered tiny-pbt version 1" in proc.stdout

    client = mlflow.MlflowClient()
    version = client.get_model_version("tiny-pbt", "1")
    parent = client.get_run(version.run_id)
    assert version.tags["lineage.source_run_id"] == parent.info.run_id
    hparams = json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/pbt/best_hparams.json"))
    assert set(hparams) == {"learning_rate", "weight_decay", "warmup_ratio", "lora_r", "contrastive_weight"}
    for name, value in hparams.items():
        assert float(version.tags[f"hparam.{name}"]) == pytest.approx(float(value))
    assert 1e-4 <= float(version.tags["hparam.learning_rate"]) <= 3e-3
    assert int(version.tags["hparam.lora_r"]) in (4, 8, 16, 32)

    # at least one exploit, read from Ray's perturbation log as logged to MLflow
    perturbations = pd.DataFrame(
        **json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/pbt/perturbations.json"))
    )
    assert len(perturbations) >= 1 and parent.data.metrics["pbt_exploits"] == len(perturbations)
    trials = pd.DataFrame(**json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/pbt/trials.json")))
    assert trials["trial_id"].nunique() == 3 and {"step", "epoch", "f1_macro", "hp_lora_r"} <= set(trials.columns)
    assert (perturbations["trial"] != perturbations["cloned_from"]).all()
    assert {"before.lora_r", "after.lora_r", "iteration"} <= set(perturbations.columns)
    assert set(perturbations["after.lora_r"]) <= {4, 8, 16, 32}
    assert set(perturbations["after.contrastive_weight"]) <= {0.05, 0.1, 0.2, 0.5, 1.0}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pbt_trajectories.png" in artifacts

    # every trial is a child run (of the interrupted or the resumed SFT run) with metrics per iteration
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    sft_runs = {r.info.run_id for r in runs if r.data.tags.get("stage") == "sft"}
    assert parent.info.run_id in sft_runs and len(sft_runs) == n_sft_runs
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in sft_runs]
    assert {r.data.tags["trial_name"].split("_")[-1] for r in children} == {"00000", "00001", "00002"}
    assert any(len(client.get_metric_history(r.info.run_id, "f1_macro")) >= 2 for r in children)

    model = mlflow.pyfunc.load_model("models:/tiny-pbt/1")
    out = model.predict(pd.DataFrame({"text": ["Is VAT due on consulting invoices to Germany for 2022?"]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)


def test_all_trials_failing_registers_nothing(mlflow_env, pbt_args, capsys, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "always")
    rc = main(cli_args(**{**pbt_args, "pbt_trials": 2, "max_epochs": 1, "max_failures": 1}))
    assert rc == 2
    assert "all 2 trials failed, nothing registered" in capsys.readouterr().err
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.parametrize(
    "change,message",
    [
        ({"pbt_trials": 1}, "population of at least 2"),
        ({"mutations": "learning_rate,dropout"}, "unknown mutation(s) ['dropout']"),
        ({"lr_range": "1e-2,1e-4"}, "learning_rate range has low > high"),
        ({"weight_decay_range": "0.2,0.1"}, "weight_decay range has low > high"),
        ({"perturbation_unit": "minutes"}, "perturbation_unit must be one of ('epochs', 'steps')"),
        ({"ray_address": "127.0.0.1:1"}, "cannot reach the Ray cluster at 127.0.0.1:1"),
        ({"lora_r": 64, "mutations": "learning_rate"}, "lora_r 64 exceeds the encoder's hidden size 32"),
        ({"lora_r": 12}, "lora_r 12 is not among PBT's lora_r choices [4, 8, 16, 32]"),
        ({"learning_rate": 1e-2}, "learning_rate 0.01 lies outside PBT's learning_rate range [0.0001, 0.003]"),
    ],
)
def test_bad_tuning_input_fails_before_any_trial(mlflow_env, pbt_args, capsys, change, message):
    import ray

    assert main(cli_args(**pbt_args | change)) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not Path(pbt_args["storage_path"]).exists()


def test_exploit_continues_the_source_weights_at_a_new_rank_and_learning_rate(tiny_encoder, small_dataset):
    """What a trial does with a cloned checkpoint, without Ray: resized LoRA, source epoch, own lr/wd/warmup."""
    import torch

    train, val, _, descriptions = load_splits(small_dataset["data"], small_dataset["labels"], "title,body", "labels")
    base = TrainConfig(encoder=tiny_encoder, max_epochs=4, lora_r=4).to_params()
    data = TrialData(base, train.head(16), val.head(8), descriptions, interval=1)
    source = build_trainer(trial_config(base, {}), data)
    source.train_epoch()
    with torch.no_grad():  # a visible update in every adapter
        for name, p in source.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    target_cfg = trial_config(base, {"lora_r": 16, "learning_rate": 5e-4, "weight_decay": 0.07, "warmup_ratio": 0.0})
    target = build_trainer(target_cfg, data, source.state())
    assert target.epoch == 1
    before, after = merged_encoder(source.model).state_dict(), merged_encoder(target.model).state_dict()
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=1e-5)
    step = target.scheduler.last_epoch
    assert step == source.scheduler.last_epoch > 0
    for group in target.optimizer.param_groups:  # no warmup now: linear decay from the new lr
        assert group["weight_decay"] == 0.07
        assert group["lr"] == pytest.approx(5e-4 * target.scheduler.lr_lambdas[0](step))
    target.train_epoch()  # the resized adapters train on
    assert target.epoch == 2


def test_a_checkpoint_taken_mid_epoch_continues_exactly(tiny_encoder, small_dataset):
    """PBT in steps stops trials mid-epoch: stop after 2 of 3 batches, restore into a new trainer, finish 2 epochs
    and get the same weights and schedule as training straight through."""
    import torch

    train, val, _, descriptions = load_splits(small_dataset["data"], small_dataset["labels"], "title,body", "labels")
    base = TrainConfig(encoder=tiny_encoder, max_epochs=2, batch_size=16).to_params()
    data = TrialData(base, train.head(40), val.head(8), descriptions, interval=2, unit="steps")  # 3 batches/epoch
    cfg = trial_config(base, {})
    straight = build_trainer(cfg, data)
    straight.train_epoch()
    straight.train_epoch()
    stopped = build_trainer(cfg, data)
    stopped.train_steps(2)
    assert (stopped.epoch, stopped.cursor, stopped.scheduler.last_epoch) == (0, 2, 2)
    resumed = build_trainer(cfg, data, stopped.state())
    resumed.train_steps(100)  # stops at max_epochs
    assert (resumed.epoch, resumed.order, resumed.scheduler.last_epoch) == (2, None, 6)
    after, expected = resumed.model.trainable_state(), straight.model.trainable_state()
    for key in expected:
        torch.testing.assert_close(after[key], expected[key], atol=0, rtol=0)


def test_explore_keeps_mutated_hyperparameters_inside_their_ranges():
    """Ray's explore scales a continuous value by 0.8 or 1.2, unbounded: 1.2e-4 × 0.8 would leave [1e-4, 3e-3]."""
    pbt = PBTConfig(mutations=("learning_rate", "weight_decay", "lora_r"))
    explored = {"learning_rate": 9.6e-5, "weight_decay": 0.12, "warmup_ratio": 0.5, "lora_r": 8}
    assert clip_to_ranges(explored, pbt) == {
        "learning_rate": 1e-4,
        "weight_decay": 0.1,
        "warmup_ratio": 0.5,
        "lora_r": 8,
    }
    nested = {"train_loop_config": {"learning_rate": 3.6e-3, "weight_decay": 0.05}}  # a distributed trial's config
    assert clip_to_ranges(nested, pbt) == {"train_loop_config": {"learning_rate": 3e-3, "weight_decay": 0.05}}
    scheduler = _scheduler(pbt, "pbt", lambda space: space, seed=0)
    assert scheduler._custom_explore_fn({"learning_rate": 5e-5})["learning_rate"] == 1e-4


@pytest.mark.slow  # two Ray start-ups and two 4-trial runs: about a minute on 2 cores
def test_a_seeded_pbt_run_repeats_its_population_and_exploits(small_dataset, tiny_encoder, tmp_path):
    """The same seed samples the same population, exploits alike and explores to the same hyperparameters, although
    Ray's event loop draws from the process-wide `random` as often as trial timing makes it."""
    train, val, _, descriptions = load_splits(small_dataset["data"], small_dataset["labels"], "title,body", "labels")
    cfg = TrainConfig(encoder=tiny_encoder, max_epochs=3, min_examples=2)

    def history(run: int) -> tuple:
        pbt = PBTConfig(population=4, cluster=RayConfig(storage_path=str(tmp_path / f"ray{run}")))
        outcome = run_tuning(cfg, pbt, train, val, descriptions, name=f"run{run}")
        index = lambda trial_id: trial_id.rsplit("_", 1)[-1]  # noqa: E731  (the id's prefix is random per run)
        trials = outcome.trials.assign(trial_id=outcome.trials["trial_id"].map(index))
        perturbations = outcome.perturbations.assign(
            trial=outcome.perturbations["trial"].map(index), cloned_from=outcome.perturbations["cloned_from"].map(index)
        )
        hp = sorted(c for c in trials.columns if c.startswith("hp_"))
        return (
            trials.sort_values(["trial_id", "epoch"])[["trial_id", "epoch", "f1_macro", *hp]].values.tolist(),
            # Ray's log of the source trial's last reported iteration: Ray's bookkeeping, not a scheduler decision
            perturbations.drop(columns="source_iteration").to_dict("records"),
            index(outcome.best_trial),
            outcome.best_hparams,
        )

    first, second = history(0), history(1)
    assert len(first[1]) >= 2  # exploits happened
    assert first == second
