"""The `sft` stage end to end through `mlflow run`, the pyfunc contract, zero-shot labels, and the gate."""

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from mlprojects.config import TrainConfig
from mlprojects.data import content_hashes
from mlprojects.sft import build_parser, config_from_args, main
from registry import conventions as C
from registry.contract import to_params
from tests.conftest import REPO


def mlflow_run(entry: str, params: dict, env_uri: str, timeout: float = 600) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        args += ["-P", f"{k}={v}"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": env_uri,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_sft_stage_registers_a_model_that_honours_the_contract(mlflow_env, tiny_encoder, small_dataset):
    proc = mlflow_run(
        "sft",
        {**small_dataset, "encoder": tiny_encoder, "max_epochs": 2, "min_examples": 2, "model_name": "tiny-clf"},
        mlflow_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Registered tiny-clf version 1" in proc.stdout

    client = mlflow.MlflowClient()
    version = client.get_model_version("tiny-clf", "1")
    assert version.tags["lineage.kind"] == "sft"
    assert version.tags["lineage.encoder"] == tiny_encoder
    run = client.get_run(version.run_id)
    assert version.tags["lineage.source_run_id"] == run.info.run_id
    assert run.data.tags["validation.training_data"] == "passed"
    assert "best_f1_macro" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "f1_macro")) == 2
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"train", "validation", "test"}
    assert "test_f1_macro" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "thresholds.json", "data", "labels.json", "validation"} <= artifacts

    # three disjoint splits; candidates are judged on the test split, which nothing trained or selected on

    splits = {
        name: pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/data/{name}.parquet"))
        for name in ("train", "validation", "test")
    }
    hashes = {name: set(content_hashes(frame["text"])) for name, frame in splits.items()}
    assert hashes["test"].isdisjoint(hashes["train"] | hashes["validation"])
    assert hashes["validation"].isdisjoint(hashes["train"])
    assert client.get_registered_model("tiny-clf").tags["eval.data"] == f"runs:/{run.info.run_id}/data/test.parquet"
    assert {f"docs_{name}": len(frame) for name, frame in splits.items()} == {
        k: v for k, v in run.data.metrics.items() if k.startswith("docs_")
    }
    assert len(splits["test"]) == pytest.approx(0.2 * 120, abs=3) and sum(map(len, splits.values())) == 120

    model = mlflow.pyfunc.load_model("models:/tiny-clf/1")
    texts = ["Is VAT due on our consulting invoices to Germany for 2022?", "Payroll tax memo"]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert list(out.columns) == ["labels", "top_label", "scores", "label_set"] and set(out["label_set"]) == {"model"}
    labels = set(mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/labels.json"))
    recorded = mlflow.artifacts.load_dict(f"models:/tiny-clf/1/artifacts/{C.LABEL_SET_FILE}")
    assert recorded[C.LABEL_SET_DESCRIPTIONS] == mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/labels.json")
    scale = TrainConfig().new_label_adapter_scale  # sft's default: a second encoder serves new labels
    assert recorded[C.LABEL_SET_NEW_LABEL_SCALE] == scale
    card = client.get_model_version("tiny-clf", "1").description
    assert "**Label set** (12 labels" in card
    assert f"a second encoder holding {scale:g} of the fine-tuning update" in card
    for row in out.itertuples():
        assert set(row.scores) == labels and row.top_label in labels
        assert set(row.labels) <= labels
        assert all(0.0 <= s <= 1.0 for s in row.scores.values())
        assert row.scores[row.top_label] == pytest.approx(max(row.scores.values()), abs=1e-6)

    # the configured text columns work as input too
    by_columns = model.predict(pd.DataFrame({"title": ["Is VAT due"], "body": ["on our consulting invoices"]}))
    assert set(by_columns.loc[0, "scores"]) == labels

    # a new label set, zero-shot, without retraining; one threshold for all labels
    fruit = {"apple": "Apples and orchards.", "bank": "Banks, loans and interest."}
    zero_shot = model.predict(pd.DataFrame({"text": texts}), params=to_params(fruit, threshold=0.5))
    for row in zero_shot.itertuples():
        assert set(row.scores) == set(fruit) and row.top_label in fruit and row.label_set == "request"
        assert row.labels == [l for l, s in row.scores.items() if s >= 0.5]


def test_gate_rejects_bad_data_and_registers_nothing(mlflow_env, tiny_encoder, small_dataset, tmp_path, capsys):
    frame = pd.read_csv(small_dataset["data"])
    frame.loc[0, "labels"] = "vat|not_a_label"
    frame.loc[1, "body"] = frame.loc[2, "body"]
    frame.loc[1, "title"] = frame.loc[2, "title"]
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    rc = main(
        [
            "--data",
            str(bad),
            "--labels",
            small_dataset["labels"],
            "--encoder",
            tiny_encoder,
            "--val-data",
            small_dataset["data"],
            "--min-examples",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "training data failed validation, nothing was trained or registered" in err
    assert "not_a_label" in err
    assert "duplicate text" in err
    assert "train/validation overlap" in err
    assert mlflow.MlflowClient().search_registered_models() == []
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.data.tags["validation.training_data"] == "failed"


def test_test_data_that_overlaps_training_data_is_refused(mlflow_env, small_dataset, tmp_path, capsys):
    test = tmp_path / "test.csv"
    pd.read_csv(small_dataset["data"]).head(7).to_csv(test, index=False)
    rc = main(["--data", small_dataset["data"], "--labels", small_dataset["labels"], "--test-data", str(test)])
    assert rc == 2
    assert "7 of 7 test_data document(s) also in the training or validation data" in capsys.readouterr().err
    assert mlflow.MlflowClient().search_registered_models() == []


def test_splits_too_small_for_the_labels_stop_before_training(mlflow_env, small_dataset, capsys):
    rc = main(["--data", small_dataset["data"], "--labels", small_dataset["labels"], "--min-examples", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "training data failed validation, nothing was trained or registered" in err
    assert "validation examples" in err and "test examples" in err
    assert mlflow.MlflowClient().search_registered_models() == []


def test_recipe_flags_set_the_train_config():
    args = build_parser().parse_args(
        "--lora-alpha 32 --lora-dropout 0 --lora-target-modules query,value --weight-decay 0.05 --warmup-ratio 0.2 "
        "--margin 0.3 --init-scale 10 --init-bias -3 --softmax-weight 0.3 --description-dropout 0.2 "
        "--anchor-weight 1 --lora-b-lr-ratio 4".split()
    )
    cfg = config_from_args(args)
    assert (cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) == (32, 0.0, ["query", "value"])
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.margin, cfg.init_scale, cfg.init_bias) == (0.05, 0.2, 0.3, 10, -3)
    assert (cfg.softmax_weight, cfg.description_dropout, cfg.anchor_weight, cfg.lora_b_lr_ratio) == (0.3, 0.2, 1, 4)
    assert config_from_args(build_parser().parse_args([])) == TrainConfig()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--label-column": "tags"}, "label column 'tags' not in data"),
        ({"--text-columns": "title,summary"}, "text column(s) ['summary'] not in data"),
        ({"--max-epochs": "inf"}, "argument --max-epochs: 'inf' is not a finite integer"),
    ],
)
def test_bad_parameters_exit_with_one_readable_line(mlflow_env, small_dataset, change, message):
    args = [
        sys.executable,
        "-m",
        "mlprojects.sft",
        "--data",
        small_dataset["data"],
        "--labels",
        small_dataset["labels"],
    ]
    for k, v in change.items():
        args += [k, v]
    proc = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_env},
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
