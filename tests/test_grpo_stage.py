"""GRPO on a tiny registered model: learning from feedback, the KL anchor, and the `grpo` stage end to end."""

import json
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from mlprojects.config import GRPOParams, TrainConfig
from mlprojects.grpo import main
from mlprojects.model.classifier import META_FILE, NEW_LABEL_ENCODER_DIR
from mlprojects.model.registered import load_classifier, log_classifier
from mlprojects.training.grpo_trainer import GRPOTrainer, logits_of, prepare_policy
from mlprojects.training.rewards import targets_from_feedback
from mlprojects.training.trainer import train_classifier
from registry import conventions as C
from registry.documents import load_label_descriptions
from registry.log_model import register
from registry.lookup import classifier_dir, label_names
from registry.tracking import setup
from serving.feedback import FeedbackRecord, FeedbackStore
from tests.conftest import REPO, use_mlflow_store
from tests.test_sft_stage import mlflow_run

NAME = "grpo-clf"


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory):
    """One SQLite registry for the module: the SFT model is trained and registered once."""
    patch = pytest.MonkeyPatch()
    yield use_mlflow_store(tmp_path_factory.mktemp("grpo-registry"), patch)
    patch.undo()


@pytest.fixture(scope="module")
def registered(registry_uri, tiny_encoder, demo_frame, tmp_path_factory):
    """Tiny SFT model as version 1; `reference` (v2) and `policy` (v3) are registry copies of it."""
    descriptions = load_label_descriptions(str(REPO / "data" / "demo" / "labels.yaml"))
    frame = pd.DataFrame(
        {"text": demo_frame["title"] + ". " + demo_frame["body"], "labels": demo_frame["labels"].str.split("|")}
    ).head(60)
    # the random tiny encoder embeds every text alike (cos ≈ 0.97): a bias that puts logits near 0 keeps
    # the Bernoulli heads away from saturation, so sampled label sets differ and there is something to learn
    cfg = TrainConfig(encoder=tiny_encoder, max_epochs=1, init_bias=-19.3)
    classifier, _ = train_classifier(cfg, frame[:48], frame[48:], descriptions, ["text"])
    setup()
    with mlflow.start_run(run_name="sft"):
        validation = tmp_path_factory.mktemp("split") / "validation.parquet"
        frame[48:].to_parquet(validation)
        mlflow.log_artifact(str(validation), "data")  # what the grpo stage re-tunes thresholds on
        info = log_classifier(classifier, list(frame["text"].head(2)))
        register(info.model_uri, NAME, {"lineage.kind": "sft", "lineage.encoder": tiny_encoder})
    client = mlflow.MlflowClient()
    for alias in ("reference", "policy"):
        copy = client.copy_model_version(f"models:/{NAME}/1", NAME)
        client.set_registered_model_alias(NAME, alias, copy.version)
    return {"texts": list(frame["text"][:40]), "labels": classifier.labels}


def _train(registered, beta: float, learning_rate: float = 5e-3):
    reference = load_classifier(f"models:/{NAME}@reference")
    policy = load_classifier(f"models:/{NAME}@policy")
    texts = registered["texts"]
    start = torch.sigmoid(logits_of(reference, texts)).numpy()
    favoured = int(np.argmin(start.mean(0)))  # the least likely label: the one users keep asking for
    label = reference.labels[favoured]
    n = len(texts)
    targets = targets_from_feedback(
        [[label]] * n, [5] * n, [[label] if i % 2 else None for i in range(n)], reference.labels
    )
    # rewards only (sft_weight=0): these tests are about GRPO's own learning and its KL anchor
    params = replace(
        GRPOParams(),
        beta=beta,
        learning_rate=learning_rate,
        per_device_train_batch_size=64,
        num_train_epochs=2,
        sft_weight=0.0,
    )
    result = GRPOTrainer(prepare_policy(policy, params), reference, texts, targets, params).train()
    after = torch.sigmoid(logits_of(policy, texts)).numpy()
    return {"start": start, "after": after, "favoured": favoured, "result": result}


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Exact mean per-label KL(Bernoulli(p) ‖ Bernoulli(q))."""
    p, q = np.clip(p, 1e-7, 1 - 1e-7), np.clip(q, 1e-7, 1 - 1e-7)
    return float((p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).mean())


@pytest.fixture(scope="module")
def runs(registered):
    return {"small_beta": _train(registered, beta=0.04), "large_beta": _train(registered, beta=200.0)}


def test_feedback_favouring_one_label_raises_it_while_kl_stays_bounded(runs):
    run = runs["small_beta"]
    j = run["favoured"]
    assert run["after"][:, j].mean() > run["start"][:, j].mean() + 0.1
    history = run["result"].history
    assert np.mean([h["reward_mean"] for h in history[-3:]]) > np.mean([h["reward_mean"] for h in history[:3]])
    assert all(np.isfinite(h["loss"]) and 0 <= h["kl"] < 5.0 for h in history)
    assert _kl(run["after"], run["start"]) < 2.0
    assert {"reward_mean", "reward_std", "kl", "clip_fraction", "entropy"} <= set(history[0])


def test_large_beta_keeps_the_policy_near_the_reference(runs):
    small, large = runs["small_beta"], runs["large_beta"]
    j = small["favoured"]
    assert _kl(large["after"], large["start"]) < _kl(small["after"], small["start"]) / 3
    shift = lambda run: np.abs(run["after"][:, j] - run["start"][:, j]).mean()  # noqa: E731
    assert shift(large) < shift(small) / 2


def test_the_same_feedback_and_seed_train_the_same_policy(registered, runs):
    """The policy's fresh adapters are drawn from the seed, whatever state the process's generator is in: a rerun
    on the same feedback gives the same challenger, so the controller's verdict on it repeats."""
    torch.manual_seed(12345)
    again = _train(registered, beta=0.04)
    np.testing.assert_array_equal(again["after"], runs["small_beta"]["after"])


def test_grpo_stage_registers_a_challenger_child_of_the_reference(registered, registry_uri, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    label = registered["labels"][0]
    store = FeedbackStore(store_url)
    report = store.add_many(
        [
            FeedbackRecord(f"p{i}", NAME, "1", t, [label], 5 if i % 2 else 1)
            for i, t in enumerate(registered["texts"][:16])
        ],
        label_names(NAME, "1"),
    )
    assert report.accepted == 16
    proc = mlflow_run(
        "grpo",
        {
            "model_name": NAME,
            "feedback_uri": store_url,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 32,
            "learning_rate": 0.005,
        },
        registry_uri,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.MlflowClient()
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert str(challenger.version) == "4" and f"Registered {NAME} version 4" in proc.stdout
    assert challenger.tags["lineage.kind"] == "grpo"
    assert challenger.tags[C.TAG_LABEL_SET_DIGEST] == client.get_model_version(NAME, "1").tags[C.TAG_LABEL_SET_DIGEST]
    assert challenger.tags["lineage.parent_version"] == str(
        client.get_model_version_by_alias(NAME, "reference").version
    )
    assert challenger.current_stage == "Staging"
    run = client.get_run(challenger.run_id)
    assert challenger.tags["lineage.source_run_id"] == run.info.run_id
    assert run.data.metrics["feedback_used"] == 16
    for key in ("reward_mean", "reward_std", "kl", "clip_fraction", "entropy"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4  # 16 docs × 8 generations / 32
    assert {"plots", "data", "thresholds.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # thresholds re-tuned with the policy's own scores on the reference's validation split, logged with the run
    assert "val_f1_macro" in run.data.metrics and "val_f1_macro_reference" in run.data.metrics
    assert "data/validation.parquet" in {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["feedback"]
    out = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger").predict(pd.DataFrame({"text": ["VAT question"]}))
    assert set(out.loc[0, "scores"]) == set(registered["labels"])
    # request label sets: the reference's new-label encoder, carried over byte for byte (feedback is on own labels)
    weights, meta = {}, {}
    for role in ("reference", "challenger"):
        with classifier_dir(f"models:/{NAME}@{role}") as saved:
            weights[role] = (saved / NEW_LABEL_ENCODER_DIR / "model.safetensors").read_bytes()
            meta[role] = json.loads((saved / META_FILE).read_text())
    assert weights["reference"] == weights["challenger"]
    assert meta["challenger"]["new_label_adapter_scale"] == TrainConfig().new_label_adapter_scale


def test_missing_alias_or_feedback_is_a_clear_error_and_registers_nothing(registered, tmp_path, capsys):
    client = mlflow.MlflowClient()
    before = len(client.search_model_versions(f"name='{NAME}'"))
    client.create_registered_model("no-aliases")
    assert main(["--model-name", "no-aliases"]) == 2
    assert "has no 'reference' alias" in capsys.readouterr().err

    missing = tmp_path / "missing.parquet"  # no split to re-tune thresholds on: refused before training
    assert main(["--model-name", NAME, "--validation-data", str(missing)]) == 2
    assert "no validation split to re-tune the policy's thresholds on" in capsys.readouterr().err

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["--model-name", NAME, "--feedback-uri", empty]) == 2
    assert "no usable feedback" in capsys.readouterr().err

    bad = tmp_path / "bad.csv"  # feedback whose labels the model does not know is left out, with the reason
    pd.DataFrame(
        [
            {
                "prediction_id": "x",
                "model_name": NAME,
                "model_version": "1",
                "text": "t",
                "predicted_labels": "not_a_label",
                "score": 5,
            }
        ]
    ).to_csv(bad, index=False)
    assert main(["--model-name", NAME, "--feedback-uri", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "labels the model does not know" in err and "no usable feedback" in err
    assert len(client.search_model_versions(f"name='{NAME}'")) == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--loss-type", "ppo"], "argument --loss-type: invalid choice: 'ppo'"),
        (["--scale-rewards", "max"], "argument --scale-rewards: invalid choice: 'max'"),
        (["--num-generations", "1"], "error: num_generations must be at least 2"),
        (["--per-device-train-batch-size", "12"], "must be a multiple of num_generations (8)"),
    ],
)
def test_bad_grpo_parameters_stop_before_any_model_is_loaded(mlflow_env, capfd, args, message):
    try:
        rc = main(["--model-name", "nothing-registered", *args])
    except SystemExit as exc:  # argparse
        rc = exc.code
    assert rc == 2
    assert message in capfd.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
