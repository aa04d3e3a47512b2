"""What an Azure ML deployment is made of: the MLflow model files, the code directory (score.py + the shared
request parser) and a conda environment derived from the model's own requirements."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml

from registry.conventions import TAG_ONNX_VERSION
from serving import scoring

SCORE_SCRIPT = Path(__file__).with_name("score.py")
INFERENCE_SERVER = "azureml-inference-server-http"


@dataclass(frozen=True)
class Bundle:
    root: Path
    model_name: str  # the registered version clients are told they are served (the champion)
    version: str
    artifact: str  # what is actually served: its ONNX export when there is one

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    @property
    def conda_file(self) -> Path:
        return self.root / "environment" / "conda.yaml"


def serving_artifact(model_name: str, version: str) -> str:
    """The version's ONNX export (lean CPU serving: onnxruntime, no torch) when it has one, else the version."""
    onnx = mlflow.MlflowClient().get_model_version(model_name, version).tags.get(TAG_ONNX_VERSION)
    return f"models:/{onnx}" if onnx else f"models:/{model_name}/{version}"


def build_bundle(model_name: str, version: str, out: str | Path) -> Bundle:
    """Download what serves the version and write the code directory and environment next to it."""
    bundle = Bundle(Path(out), model_name, version, serving_artifact(model_name, version))
    if bundle.model_dir.exists():
        shutil.rmtree(bundle.model_dir)
    bundle.model_dir.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(artifact_uri=bundle.artifact, dst_path=str(bundle.model_dir))
    write_code_dir(bundle.code_dir)
    bundle.conda_file.parent.mkdir(parents=True, exist_ok=True)
    bundle.conda_file.write_text(yaml.safe_dump(conda_environment(bundle.model_dir), sort_keys=False))
    return bundle


def write_code_dir(code_dir: Path) -> Path:
    """score.py and the request parser it imports (one implementation, shared with the local endpoint)."""
    code_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCORE_SCRIPT, code_dir / "score.py")
    shutil.copy(scoring.__file__, code_dir / "scoring.py")
    return code_dir


def scoring_requirements(model_dir: Path) -> list[str]:
    """The model's pinned requirements with mlflow-skinny for mlflow (loading a pyfunc needs no server
    dependencies), plus Microsoft's inference server that runs score.py."""
    lines = (model_dir / "requirements.txt").read_text().splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    reqs = [re.sub(r"^mlflow(?=[=<>~!\s]|$)", "mlflow-skinny", r) for r in reqs]
    return reqs + [INFERENCE_SERVER]


def conda_environment(model_dir: Path) -> dict:
    python = "3.11"
    env_file = model_dir / "python_env.yaml"
    if env_file.exists():
        python = str(yaml.safe_load(env_file.read_text()).get("python", python))
    pip = scoring_requirements(model_dir)
    return {
        "name": "dual-encoder-scoring",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pip}],
    }
