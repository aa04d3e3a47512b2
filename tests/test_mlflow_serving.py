"""Portable models: a registered torch model and its ONNX export served by MLflow's own scoring server
(`mlflow models serve --env-manager local` on 127.0.0.1) answer MLflow's payload forms exactly as
`python -m serving serve` does; `mlflow models generate-dockerfile` writes a build context for both; their
requirements name only versions an ordinary package index serves, and unresolvable ones are refused."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import mlflow
import pytest
import requests

import registry.log_model as L
from mlprojects.model.registered import log_classifier
from registry.errors import ConfigError
from registry.log_model import public_pin, torch_requirements
from serving.local_server import free_port, wait_until_healthy
from tests.conftest import REPO
from tests.test_onnx_export import exported, registry_env, source_model  # noqa: F401 - fixtures used below

TEXTS = ["Is VAT due on consulting invoices to Germany for 2022?", "Payroll tax memo for new hires"]
FRUIT = {"apple": "Apples, orchards and fruit harvests.", "bank": "Banks, loans and interest rates."}
PAYLOADS = {
    "dataframe_split": {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
    "dataframe_records": {"dataframe_records": [{"text": t} for t in TEXTS]},
    "inputs": {"inputs": {"text": TEXTS}},
    "dataframe_split with params": {
        "dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]},
        "params": {"label_descriptions": json.dumps(FRUIT), "threshold": 0.5},
    },
}


@pytest.mark.parametrize(
    "installed,pin",
    [("2.13.0+cpu", "torch==2.13.0"), ("2.13.0", "torch==2.13.0"), ("1.2.3.post1+local.7", "torch==1.2.3.post1")],
)
def test_pins_drop_the_local_version_label(installed, pin):
    assert public_pin("torch", installed) == pin


def test_a_requirement_that_cannot_be_resolved_is_refused_naming_the_package():
    with pytest.raises(ConfigError, match="cannot pin requirement 'no-such-pkg': it is not installed"):
        public_pin("no-such-pkg", None)
    with pytest.raises(ConfigError, match="cannot pin requirement 'odd': version 'not a version'"):
        public_pin("odd", "not a version")
    assert all("+" not in r for r in torch_requirements())


def test_logging_a_model_with_an_unresolvable_requirement_is_refused(monkeypatch, mlflow_env, tmp_path):
    """Refused before anything is logged: the run has no model."""
    monkeypatch.setattr(L, "_installed", lambda package: None if package == "torch" else "1.0")
    mlflow.set_experiment("requirements")  # not an experiment id left active by an earlier test's store
    with mlflow.start_run() as run, pytest.raises(ConfigError, match="cannot pin requirement 'torch'"):
        log_classifier(object(), ["a"], saved=tmp_path)  # refused before the model is saved or asked anything
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list") == []


@pytest.fixture(scope="module")
def champions(registry_env, source_model, exported):  # noqa: F811 - fixtures from test_onnx_export
    """The torch model and its ONNX export, each under the `champion` alias."""
    client = mlflow.MlflowClient()
    for uri in (source_model, exported):
        name, version = uri[len("models:/") :].split("/")
        client.set_registered_model_alias(name, "champion", version)
    return {"torch": "models:/tiny-clf@champion", "onnx": "models:/tiny-clf-onnx@champion"}


@contextlib.contextmanager
def server(command: list[str], health: str):
    """A scoring server on a free 127.0.0.1 port, stopped afterwards; yields its URL. The venv's bin is on PATH,
    as in an activated environment: MLflow's server runs its `uvicorn` from there."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")},
        "PYTHONPATH": str(REPO),
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        command + ["--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, timeout=240, path=health)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def answers(url: str) -> dict[str, list[dict]]:
    """labels, top label and scores per document, for every payload form."""
    out = {}
    for form, payload in PAYLOADS.items():
        r = requests.post(f"{url}/invocations", json=payload, timeout=120)
        assert r.status_code == 200, (form, r.text[:500])
        out[form] = [{k: p[k] for k in ("labels", "top_label", "scores")} for p in r.json()["predictions"]]
    return out


@pytest.mark.parametrize("flavour", ["torch", "onnx"])
def test_mlflow_models_serve_answers_as_our_endpoint_does(champions, flavour):
    uri = champions[flavour]
    mlflow_cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
    ]
    ours_cmd = [sys.executable, "-m", "serving", "serve", "--model", uri, "--no-follow"]
    with server(mlflow_cmd, "/ping") as mlflow_url:
        theirs = answers(mlflow_url)
    with server(ours_cmd, "/health") as ours_url:
        ours = answers(ours_url)
    for form in PAYLOADS:
        assert len(theirs[form]) == len(TEXTS)
        for a, b in zip(theirs[form], ours[form]):
            assert a["labels"] == b["labels"] and a["top_label"] == b["top_label"], form
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-6), form
    assert set(theirs["dataframe_split with params"][0]["scores"]) == set(FRUIT)


@pytest.mark.parametrize("flavour", ["torch", "onnx"])
def test_generate_dockerfile_writes_a_build_context_with_public_pins(champions, flavour, tmp_path):
    out = tmp_path / "docker"
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", champions[flavour], "-d", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FROM " in (out / "Dockerfile").read_text()
    requirements = (out / "model_dir" / "requirements.txt").read_text().split()
    assert requirements and not [r for r in requirements if re.search(r"==\S*\+", r)], requirements
    assert any(r.startswith("mlflow==") for r in requirements)
