"""Log a saved classifier as an MLflow pyfunc (models-from-code) and register it with lineage tags."""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from packaging.version import InvalidVersion, Version

from registry import conventions as C
from registry.aliases import set_alias
from registry.contract import DESCRIPTIONS_PARAM, THRESHOLD_PARAM, Scorer, predict
from registry.errors import ConfigError
from registry.locations import REPO_ROOT
from registry.model_card import publish
from registry.stages import client_stages_enabled


def signature(text_columns: Sequence[str], example_output: pd.DataFrame) -> ModelSignature:
    """`text` or the configured text columns (each optional: one of the two forms is enough); the params."""
    columns = ["text"] + [c for c in text_columns if c != "text"]
    inputs = Schema([ColSpec("string", c, required=False) for c in columns])
    outputs = infer_signature(None, example_output).inputs
    params = ParamSchema([ParamSpec(DESCRIPTIONS_PARAM, "string", None), ParamSpec(THRESHOLD_PARAM, "double", None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def public_pin(package: str, installed: str | None) -> str:
    """`package==<public version>`: a local label (`2.13.0+cpu`) names a build no ordinary index serves, so it is
    dropped as MLflow's own pinning does; a package that is not installed, or whose version is not PEP 440, cannot
    be rebuilt anywhere and is refused (ConfigError naming it) before anything is logged."""
    if installed is None:
        raise ConfigError(f"cannot pin requirement {package!r}: it is not installed in this environment")
    try:
        return f"{package}=={Version(installed).public}"
    except InvalidVersion:
        raise ConfigError(
            f"cannot pin requirement {package!r}: version {installed!r} is not a PEP 440 version "
            "any package index can serve"
        ) from None


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _pinned(packages: tuple[str, ...]) -> list[str]:
    """Pinned to what built the model; listing them skips MLflow's slow requirement inference."""
    return [public_pin(p, _installed(p)) for p in packages]


def torch_requirements() -> list[str]:
    return _pinned(("mlflow", "torch", "transformers", "pandas", "numpy"))


def onnx_requirements() -> list[str]:
    """What the ONNX pyfunc needs at inference: no torch, no transformers."""
    return _pinned(("mlflow", "onnxruntime", "tokenizers", "pandas", "numpy"))


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log_pyfunc(
    python_model: Path,
    artifacts: dict[str, str],
    requirements: list[str],
    model: Scorer,
    example_texts: Sequence[str],
    code_paths: list[str],
    name: str = "model",
    model_config: dict | None = None,
    new_label_adapter_scale: float = 1.0,
):
    """Log a models-from-code pyfunc into the active run with the code it imports (so every version carries its
    own code and loads after ours has moved on); returns MLflow's ModelInfo. `model` is what the pyfunc loads,
    in memory: its answer to `example_texts` (through the contract's predict path) is the logged example and
    gives the output schema; its label set is logged beside it in full (`LABEL_SET_FILE`), readable without the
    model's own formats, with the share of the fine-tuning update in the encoder that serves request label sets
    (`new_label_adapter_scale`; 1.0: the same encoder as the model's own labels) and the threshold their labels
    are decided with."""
    example = pd.DataFrame({"text": list(example_texts)})
    with tempfile.TemporaryDirectory() as tmp:
        label_set = Path(tmp) / C.LABEL_SET_FILE
        recorded = {
            C.LABEL_SET_DESCRIPTIONS: model.label_descriptions,
            C.LABEL_SET_NEW_LABEL_SCALE: new_label_adapter_scale,
            C.LABEL_SET_REQUEST_THRESHOLD: float(model.request_threshold),
        }
        label_set.write_text(json.dumps(recorded, indent=2, ensure_ascii=False), encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(python_model),
            artifacts={**artifacts, "label_set": str(label_set)},
            code_paths=code_paths,
            signature=signature(model.text_columns, predict(model, example)),
            input_example=example,
            pip_requirements=requirements,
            model_config=model_config,
        )


def register(model_uri: str, model_name: str, tags: dict[str, str], alias: str | None = C.CHALLENGER) -> ModelVersion:
    """Register `model_uri` as a new version of `model_name` with lineage tags (git commit always added).

    New versions are candidates: they get the `challenger` alias (and the Staging stage) for the controller. The
    registered model gets its description the first time, the version its model card.
    """
    client = mlflow.MlflowClient()
    client_stages_enabled(client)  # a bad stage setting stops here, before anything is registered
    tags = {C.TAG_GIT_COMMIT: git_commit(), **{k: str(v) for k, v in tags.items() if v is not None}}
    version_ = mlflow.register_model(model_uri, model_name, tags=tags)
    if alias:
        set_alias(client, model_name, alias, version_.version)
    publish(client, model_name, version_.version)
    return version_
