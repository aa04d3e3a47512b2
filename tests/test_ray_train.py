"""SFT on Ray Train with the tiny encoder on a real local Ray: DDP over gloo, PBT over multi-worker trials, a dead
worker's group restarted from the last checkpoint, and the `sft` stage with `--num-workers 2`."""

from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlprojects.config import PBTConfig, RayConfig, ScaleConfig, TrainConfig
from mlprojects.data import load_splits
from mlprojects.training.distributed import torch_trainer
from mlprojects.training.faults import FAULT_ENV
from mlprojects.training.pbt import run_tuning
from mlprojects.training.ray_cluster import start_ray
from mlprojects.training.trial import TrialData, build_trainer, load_trial_state, trial_config
from tests.test_sft_stage import mlflow_run


@pytest.fixture()
def splits(small_dataset):
    train, val, _, descriptions = load_splits(small_dataset["data"], small_dataset["labels"], "title,body", "labels")
    return train, val, descriptions


def _local_ray():
    import ray

    started = start_ray(RayConfig(local_num_cpus=2))
    yield
    if started:
        ray.shutdown()


@pytest.fixture()
def local_ray():
    yield from _local_ray()


@pytest.fixture()
def local_ray_killing_a_worker(monkeypatch):
    """A local Ray whose workers see the test hook's `kill` (start_ray forwards it to them), set before it starts."""
    monkeypatch.setenv(FAULT_ENV, "kill")
    yield from _local_ray()


@pytest.fixture(scope="module")
def no_dropout_encoder(tiny_encoder, tmp_path_factory) -> str:
    """The tiny encoder without dropout: one process draws masks for the whole batch, two workers one each for
    their half, so with dropout the runs would train different random functions and agree only in distribution."""
    from transformers import AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-no-dropout")
    model = AutoModel.from_pretrained(tiny_encoder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(path)
    return str(path)


def _trial_data(encoder, splits, max_epochs: int, docs: int = 40, **extra):
    train, val, descriptions = splits
    cfg = TrainConfig(encoder=encoder, max_epochs=max_epochs, batch_size=16, lora_dropout=0.0)
    return cfg, TrialData(cfg.to_params(), train.head(docs), val.head(16), descriptions, 1, **extra)


def _run_config(tmp_path: Path, max_failures: int = 0):
    from ray.train import FailureConfig, RunConfig

    return RunConfig(storage_path=str(tmp_path / "ray"), failure_config=FailureConfig(max_failures=max_failures))


def test_two_workers_train_the_loss_curve_of_one_worker_with_the_same_global_batch(
    local_ray, no_dropout_encoder, splits, tmp_path
):
    """Two DDP workers, each on half of every 16-document batch, against one process on the whole batch.

    Tolerance: rtol 1e-5 on each epoch's mean training loss, atol 1e-5 on the weights. With dropout off (LoRA and
    encoder) both runs compute the same function on the same documents in the same order, and the shard losses
    are weighted so that DDP's average of the gradients is the global batch's mean gradient. What remains is
    floating-point order: gloo sums two partial gradients where autograd sums one batch, and each shard is padded
    to its own longest document (masked positions weigh exactly 0, but the matmuls change shape). Measured: the
    loss curves differ by at most 5e-8 relative and the weights by 4.5e-8 after nine Adam steps; 1e-5 leaves a
    margin of 200 for other CPUs and BLAS builds, while the encoder's dropout alone (different masks for a
    batch and for its halves) moved the curves apart by 4e-4 in epoch 1 and 4e-3 in epoch 3. The 37 documents
    end in a batch of 5, split 3 + 2: the shard weights are exercised too."""
    cfg, data = _trial_data(no_dropout_encoder, splits, max_epochs=3, docs=37)  # batches of 16, 16 and 5
    one = build_trainer(trial_config(data.base, {}), data)
    expected = [one.train_epoch()["train_loss"] for _ in range(3)]

    result = torch_trainer(data, ScaleConfig(num_workers=2), _run_config(tmp_path)).fit()
    assert result.error is None, result.error
    curve = [m["train_loss"] for _, m in sorted(result.best_checkpoints, key=lambda cm: cm[1]["epoch"])]
    np.testing.assert_allclose(curve, expected, rtol=1e-5)
    assert curve[-1] < curve[0]  # it learns
    state = load_trial_state(result.checkpoint)["trainer"]
    assert state["epoch"] == 3 and state["scheduler"]["last_epoch"] == 9
    reference = one.model.trainable_state()
    for name, value in state["model"].items():
        np.testing.assert_allclose(value.numpy(), reference[name].numpy(), atol=1e-5, rtol=0)


def test_a_killed_worker_is_recovered_from_the_last_checkpoint(
    local_ray_killing_a_worker, tiny_encoder, splits, tmp_path
):
    """The last worker SIGKILLs itself in epoch 2 (test hook); Ray Train restarts the group (FailureConfig) from the
    epoch-1 checkpoint and finishes: the last report says it resumed at epoch 1."""
    _, data = _trial_data(tiny_encoder, splits, max_epochs=3)
    result = torch_trainer(data, ScaleConfig(num_workers=2), _run_config(tmp_path, max_failures=1)).fit()
    assert result.error is None, result.error
    assert result.metrics["epoch"] == 3 and result.metrics["resumed_epoch"] == 1, result.metrics


@pytest.mark.slow  # about 2.5 minutes on 2 shared cores: four workers start twice each
def test_pbt_with_two_trials_of_two_workers_exploits_and_completes(local_ray, tiny_encoder, splits, tmp_path):
    """`Tuner(TorchTrainer)`: 2 trials × 2 workers on 2 CPUs (0.5 each), PBT every epoch with the bottom half
    cloning the top half, so an exploit copies a Ray Train checkpoint between multi-worker trials."""
    cfg, data = _trial_data(tiny_encoder, splits, max_epochs=2)
    pbt = PBTConfig(
        population=2, quantile_fraction=0.5, max_failures=0, cluster=RayConfig(storage_path=str(tmp_path / "ray"))
    )
    train, val, descriptions = splits
    outcome = run_tuning(
        cfg, pbt, train.head(40), val.head(16), descriptions, name="pbt-ddp", scale=ScaleConfig(2, False, 0.5)
    )
    assert outcome.trials["trial_id"].nunique() == 2
    assert (outcome.trials.groupby("trial_id")["epoch"].max() == 2).all()
    assert len(outcome.perturbations) >= 1
    last = outcome.trials[outcome.trials["epoch"] == 2]
    assert (last["resumed_epoch"] == 1).all()  # every trial went on from an epoch-1 Ray checkpoint (its own or a clone)


@pytest.mark.slow  # about 100 s under load: `mlflow run`, Ray start-up, two workers, registration
def test_sft_stage_on_two_workers_registers_a_model(mlflow_env, small_dataset, tiny_encoder, tmp_path):
    """`mlflow run . -e sft -P num_workers=2`: Ray Train instead of one process, the rest of the stage unchanged."""
    params = {
        **small_dataset,
        "encoder": tiny_encoder,
        "max_epochs": 2,
        "min_examples": 2,
        "model_name": "tiny-ddp",
        "num_workers": 2,
        "storage_path": str(tmp_path / "ray"),
    }
    proc = mlflow_run("sft", params, mlflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Registered tiny-ddp version 1" in proc.stdout
    version = mlflow.MlflowClient().get_model_version("tiny-ddp", "1")
    run = mlflow.MlflowClient().get_run(version.run_id)
    assert run.data.params["num_workers"] == "2"
    assert "best_f1_macro" in run.data.metrics and "test_f1_macro" in run.data.metrics
