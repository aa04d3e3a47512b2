"""Resolve model URIs to what stages need: (name, version), a local classifier directory, its metadata."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
from mlflow.store.artifact.utils.models import get_model_name_and_version
from mlflow.utils.file_utils import local_file_uri_to_path

from registry.errors import ConfigError
from registry.names import name_filter

# The torch and the ONNX pyfunc's artifact names, and their classifier's metadata file inside each.
META_FILES = {"classifier": "classifier.json", "onnx_classifier": "onnx_classifier.json"}


def _in_place(uri: str) -> Path | None:
    """Where a `runs:/` or `models:/` artifact already lies on this file system (a local artifact store), else None."""
    repository = {"runs:/": RunsArtifactRepository, "models:/": ModelsArtifactRepository}
    scheme = next((s for s in repository if uri.startswith(s)), None)
    if scheme is None:
        return None
    underlying = repository[scheme].get_underlying_uri(uri)
    if urlparse(underlying).scheme not in ("", "file"):
        return None
    path = Path(local_file_uri_to_path(underlying))
    return path if path.exists() else None  # a run's model logged under the logged model, not the run


@contextlib.contextmanager
def artifact_files(uri: str) -> Iterator[Path]:
    """An artifact URI (or a local path) as local files, read inside the `with`: in place where they already are
    on this file system, else downloaded into a folder removed on exit. MLflow's own download folder is never
    removed, and a controller judging every pass would fill the disk with copies of models and test splits."""
    local = Path(uri) if Path(uri).exists() else _in_place(uri)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="artifact-", ignore_cleanup_errors=True) as tmp:
        yield Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))


@contextlib.contextmanager
def classifier_dir(model_uri: str) -> Iterator[Path]:
    """The directory of the saved Classifier (encoder with LoRA merged + classifier.json) of a torch pyfunc model
    (`models:/name@alias`, `models:/name/3`, `runs:/...`), read inside the `with` (`artifact_files`)."""
    with artifact_files(model_uri) as root:
        path = root / "artifacts" / "classifier"
        if not (path / "classifier.json").exists():
            raise FileNotFoundError(f"{model_uri} holds no dual-encoder classifier (looked in {path})")
        yield path


def classifier_meta(model_name: str, version: str) -> dict:
    """The metadata file (labels, descriptions, text columns) of a registered torch or ONNX version, alone (the
    weights are not downloaded); found through the pyfunc's artifact map in its MLmodel file."""
    uri = f"models:/{model_name}/{version}"
    artifacts = mlflow.models.get_model_info(uri).flavors.get("python_function", {}).get("artifacts") or {}
    for key, meta_file in META_FILES.items():
        if key in artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                path = ModelsArtifactRepository(uri).download_artifacts(f"{artifacts[key]['path']}/{meta_file}", tmp)
                return json.loads(Path(path).read_text())
    raise FileNotFoundError(f"{uri} holds no dual-encoder classifier (pyfunc artifacts: {sorted(artifacts)})")


def label_names(model_name: str, version: str) -> list[str]:
    """The label set of a registered version, from its metadata alone (the encoder is not downloaded)."""
    return list(classifier_meta(model_name, version)["labels"])


def logged_model_id(model_uri: str) -> str | None:
    """The MLflow 3 logged model behind any model URI (read from its MLmodel file); None for models without one."""
    try:
        return mlflow.models.get_model_info(model_uri).model_id
    except Exception:  # noqa: BLE001 - a path or run without an MLmodel file simply has no logged model
        return None


def parse_models_uri(model_uri: str) -> tuple[str, str, str] | None:
    """(name, '@' or '/', the alias or the version, stage or `latest`) of a registry URI, without asking the registry;
    None for other URIs (runs:/, paths, logged models models:/m-<id>). Names are never split on '.', so Unity
    Catalog's `catalog.schema.model` passes whole."""
    if not model_uri.startswith("models:/"):
        return None
    path = model_uri[len("models:/") :].strip("/")
    if "@" in path:
        name, alias = path.split("@", 1)
        return (name, "@", alias) if name and alias else None
    name, _, ref = path.rpartition("/")
    return (name, "/", ref) if name and ref else None


def model_name_of(model_uri: str) -> str | None:
    """The registered model a URI names, without asking the registry; None for other URIs."""
    parsed = parse_models_uri(model_uri)
    return parsed[0] if parsed else None


def registered_version(model_uri: str, client: MlflowClient | None = None) -> tuple[str, str] | None:
    """(name, version) behind `models:/name/N`, `models:/name@alias` (or a stage, or `latest`); None for other
    URIs. The one place a model URI becomes a version: an alias or stage is asked of the registry (MlflowException
    when it has none), a version number is taken as it is."""
    parsed = parse_models_uri(model_uri)
    if parsed is None:
        return None
    name, kind, ref = parsed
    client = client or MlflowClient()
    if kind == "@":
        return name, str(client.get_model_version_by_alias(name, ref).version)
    if ref.isdigit():
        return name, ref
    name, version = get_model_name_and_version(client, model_uri)  # a stage or `latest`: MLflow's own rule
    return name, str(version)


def registered_model_version(model_uri: str, client: MlflowClient | None = None) -> ModelVersion:
    """The registered version a URI names, which must exist; a one-line ConfigError saying why not."""
    client = client or MlflowClient()
    try:
        found = registered_version(model_uri, client)
        if found is None:
            raise ConfigError(
                f"cannot resolve {model_uri}: expected a registry URI models:/<name>@<alias> or "
                "models:/<name>/<version>"
            )
        return client.get_model_version(*found)
    except MlflowException as exc:
        raise ConfigError(f"cannot resolve {model_uri}: {exc.message}") from None


def resolve_version(model_uri: str, client: MlflowClient | None = None) -> tuple[str, str]:
    """(name, version) of the registered version a URI names, which must exist (ConfigError otherwise)."""
    found = registered_model_version(model_uri, client)
    return found.name, str(found.version)


def versions_of(client: MlflowClient, name: str) -> list:
    """Every version of one registered model: the name is checked and quoted in the filter, and the result
    kept to exact matches, so no name can make a search read another model's versions."""
    return [v for v in client.search_model_versions(name_filter(name)) if v.name == name]
