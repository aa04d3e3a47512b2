"""Helpers for the lifecycle tests: a trained tiny classifier, and variants of it registered as new versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from mlprojects.model.classifier import Classifier
from mlprojects.model.registered import log_classifier
from mlprojects.sft import main as sft_main
from registry.log_model import register
from registry.lookup import classifier_dir
from registry.tracking import setup
from tests.conftest import REPO, use_mlflow_store


def register_variant(
    classifier_dir: Path,
    name: str,
    workdir: Path,
    *,
    thresholds: float | None = None,
    corrupt: bool = False,
    alias: str | None = "challenger",
) -> str:
    """Log a copy of a saved Classifier (optionally with every threshold replaced, or its weights corrupted)
    as a new registered version; returns the version."""
    target = workdir / f"variant-{len(list(workdir.glob('variant-*')))}"
    shutil.copytree(classifier_dir, target)
    # the unchanged model answers the example, loaded from the original: a loaded model's weights are mapped
    # from its files, and `corrupt` overwrites the copy's
    clf = Classifier.load(classifier_dir, "cpu")
    if thresholds is not None:
        meta = json.loads((target / "classifier.json").read_text())
        meta["thresholds"] = [thresholds] * len(meta["thresholds"])
        (target / "classifier.json").write_text(json.dumps(meta))
    if corrupt:
        for weights in (target / "encoder").glob("*.safetensors"):
            weights.write_bytes(b"not a model")
    setup("variants")
    with mlflow.start_run(run_name="variant") as run:
        info = log_classifier(clf, ["Is VAT due on consulting invoices?"], saved=target)
    return str(
        register(
            info.model_uri, name, {"lineage.kind": "sft", "lineage.source_run_id": run.info.run_id}, alias=alias
        ).version
    )


def use_store(mp, root: Path, artifacts: Path | None = None) -> str:
    """The SQLite store under `root` (see conftest.use_mlflow_store), and the local deployment record beside it."""
    uri = use_mlflow_store(root, mp, artifacts)
    mp.setenv("LOCAL_DEPLOY_DIR", str(root / "deployments"))
    return uri


def _child_env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    return {**env, **(extra or {})}


def lifecycle_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(env),
    )


def spawn_lifecycle(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_child_env(env),
    )


def train_sft_model(root: Path, tiny_encoder: str, demo_frame: pd.DataFrame) -> dict:
    """One tiny SFT run through the sft code path (in-process) in a store under `root`: {root, uri, classifier (a
    local copy of version 1 of `sft-model`), eval (100 further demo documents)}."""
    mp = pytest.MonkeyPatch()
    uri = use_store(mp, root)
    demo_frame.head(120).to_csv(root / "train.csv", index=False)
    eval_path = root / "eval.csv"
    demo_frame.iloc[120:220].to_csv(eval_path, index=False)
    rc = sft_main(
        [
            "--data",
            str(root / "train.csv"),
            "--labels",
            str(REPO / "data" / "demo" / "labels.yaml"),
            "--encoder",
            tiny_encoder,
            "--max-epochs",
            "2",
            "--min-examples",
            "2",
            "--model-name",
            "sft-model",
            "--learning-rate",
            "3e-3",
            "--batch-size",
            "32",
        ]
    )
    assert rc == 0
    local = root / "classifier"
    with classifier_dir("models:/sft-model/1") as saved:
        shutil.copytree(saved, local)
    mp.undo()
    return {"root": root, "uri": uri, "classifier": local, "eval": str(eval_path)}
