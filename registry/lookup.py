"""Resolve model URIs to what stages need: a local classifier directory or a loaded Classifier."""
from __future__ import annotations

from pathlib import Path

import mlflow


def classifier_dir(model_uri: str) -> Path:
    """Download a torch pyfunc model (`models:/name@alias`, `models:/name/3`, `runs:/...`) and return the
    directory of its saved Classifier (encoder with LoRA merged + classifier.json)."""
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    path = root / "artifacts" / "classifier"
    if not (path / "classifier.json").exists():
        raise FileNotFoundError(f"{model_uri} holds no dual-encoder classifier (looked in {path})")
    return path


def load_classifier(model_uri: str, device: str | None = None):
    """The Classifier behind a registered torch model, ready to fine-tune further (GRPO) or to export (ONNX)."""
    from mlprojects.classifier import Classifier

    return Classifier.load(classifier_dir(model_uri), device)


def label_names(model_name: str, version: str) -> list[str]:
    """The label set of a registered version, from its classifier.json alone (the encoder is not downloaded)."""
    import json
    import tempfile

    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    with tempfile.TemporaryDirectory() as tmp:
        path = ModelsArtifactRepository(f"models:/{model_name}/{version}").download_artifacts(
            "artifacts/classifier/classifier.json", tmp)
        return list(json.loads(Path(path).read_text())["labels"])


def registered_version(model_uri: str) -> tuple[str, str] | None:
    """(name, version) behind `models:/name/N` or `models:/name@alias`; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    path = model_uri[len("models:/"):].strip("/")
    client = mlflow.MlflowClient()
    if "@" in path:
        name, alias = path.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = path.rpartition("/")
    return (name, version) if name and version.isdigit() else None


def versions_of(client: mlflow.MlflowClient, name: str) -> list:
    """Every version of one registered model: the name is checked and quoted in the filter, and the result
    kept to exact matches, so no name can make a search read another model's versions."""
    from registry.names import name_filter

    return [v for v in client.search_model_versions(name_filter(name)) if v.name == name]
