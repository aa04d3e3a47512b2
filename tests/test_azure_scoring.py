"""The generated score.py and an exported model under Microsoft's azureml-inference-server-http (azmlinfsrv),
in its own virtualenv (`.venv-azmlinfsrv`, cached), laid out as Azure ML lays out a deployment:
AZUREML_MODEL_DIR=<...>/azureml-models/<name>/<version> holding `model/`, the code directory as app root.
With the ONNX exporter in the build, the deployed artifact is the ONNX pyfunc (as `AzureMLTarget` deploys it).

The venv is created on the first run and cached in `.venv-azmlinfsrv` (gitignored); with the ONNX
artifact's requirements that takes a minute or two, so the default suite (and CI) always runs this contract."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import mlflow
import pytest
import requests

from mlprojects.export_onnx import main as export_main
from serving.azureml.bundle import build_bundle, scoring_requirements
from serving.azureml.inference_venv import ensure_venv
from serving.local_server import free_port, wait_until_healthy
from tests.conftest import REPO
from tests.serving_model import ServedModel, build_served_model

VENV = REPO / ".venv-azmlinfsrv"


def onnx_exported(served, demo_frame, root) -> ServedModel | None:
    """A copy of the served model with its ONNX export (the `export_onnx` stage's), or None without the exporter.
    A copy, so that the other modules' bundles of the served model stay torch."""
    if importlib.util.find_spec("mlprojects.export_onnx") is None:
        return None

    version = str(mlflow.MlflowClient().copy_model_version(served.uri, "tiny-served-azure").version)
    data = root / "eval.csv"
    demo_frame.head(40).to_csv(data, index=False)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = served.tracking_uri
    try:
        rc = export_main(
            [
                "--model-uri",
                f"models:/tiny-served-azure/{version}",
                "--eval-data",
                str(data),
                "--text-columns",
                "title,body",
                "--label-column",
                "labels",
                "--max-f1-drop",
                "1",
            ]
        )
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if previous is None else os.environ.update(MLFLOW_TRACKING_URI=previous)
    assert rc == 0
    return ServedModel(served.tracking_uri, "tiny-served-azure", version)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tiny_encoder, demo_frame):
    root = tmp_path_factory.mktemp("azureml-app")
    served = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    mlflow.set_tracking_uri(served.tracking_uri)
    served = onnx_exported(served, demo_frame, root) or served
    bundle = build_bundle(served.name, served.version, root / "bundle")
    if served.name == "tiny-served-azure":
        assert bundle.artifact.startswith("models:/tiny-served-azure-onnx/"), bundle.artifact
        assert "torch" not in (bundle.model_dir / "requirements.txt").read_text()
    model_dir = root / "azureml-models" / served.name / served.version
    shutil.copytree(bundle.model_dir, model_dir / "model")
    return {
        "bundle": bundle,
        "model_dir": model_dir,
        "served": served,
        "requirements": scoring_requirements(bundle.model_dir),
    }


def check_score_py_under_azmlinfsrv(deployment) -> None:
    bundle, served = deployment["bundle"], deployment["served"]
    port, health = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_"))}
    env.update(MODEL_NAME=served.name, MODEL_VERSION=served.version, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [
            str(VENV / "bin" / "azmlinfsrv"),
            "--entry_script",
            str(bundle.code_dir / "score.py"),
            "--model_dir",
            str(deployment["model_dir"]),
            "--port",
            str(port),
            "--health_port",
            str(health),
        ],
        cwd=bundle.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, timeout=240, path="/")  # raises with the server's output if it exits
        score = f"{url}/score"
        headers = {"Content-Type": "application/json"}
        texts = ["Is VAT due on consulting invoices to Germany?", "Board memo on payroll tax"]
        for payload in (
            {"input_data": texts},
            {"input_data": {"columns": ["text"], "index": [0, 1], "data": [[t] for t in texts]}},
            {"dataframe_records": [{"title": t, "body": "b"} for t in texts]},
        ):
            answer = requests.post(score, json=payload, timeout=60)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"] == {"name": served.name, "version": served.version}
            assert len(body["predictions"]) == 2
            for p in body["predictions"]:
                assert p["prediction_id"] and p["top_label"] in p["scores"] and set(p["labels"]) <= set(p["scores"])
                assert p["label_set"] == "model"
        zero_shot = requests.post(
            score,
            timeout=60,
            json={"input_data": texts[:1], "params": {"label_descriptions": {"fruit": "Apples.", "bank": "Loans."}}},
        )
        assert set(zero_shot.json()["predictions"][0]["scores"]) == {"fruit", "bank"}
        assert zero_shot.json()["predictions"][0]["label_set"] == "request"
        for data, message in [
            (b"{oops", "not valid JSON"),
            (b'{"input_data": 5}', "input_data must be"),
            (b'{"inputs": {"text": [1]}}', "must be a string"),
            (b'{"input_data": ["x"], "params": {"threshold": 2}}', "threshold"),
            (b"\xff\xfe", "UTF-8"),
            (b'{"input_data": ["x"], "params": {"label_descriptions": {"a": "x.", "A ": "y."}}}', "twice"),
        ]:
            bad = requests.post(score, data=data, headers=headers, timeout=60)
            assert bad.status_code == 400, (data, bad.text)
            assert message in bad.text
        assert requests.post(score, json={"input_data": texts}, timeout=60).status_code == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(30)


def test_score_py_answers_the_contract_under_azmlinfsrv(deployment):
    """Creates (once, cached) the inference server's own venv with the deployment's requirements, then scores."""
    ensure_venv(VENV, deployment["requirements"])
    check_score_py_under_azmlinfsrv(deployment)
