"""A tiny registered model for the serving tests: trained for one epoch on 80 demo documents, logged as the
torch pyfunc, registered with the `champion` alias in a SQLite store of its own (built once per session)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlprojects.config import TrainConfig
from mlprojects.data import load_splits
from mlprojects.model.registered import log_classifier
from mlprojects.training.trainer import train_classifier
from registry.log_model import register
from serving.local_server import local_endpoint
from tests.conftest import REPO

MODEL_NAME = "tiny-served"


@dataclass(frozen=True)
class ServedModel:
    tracking_uri: str
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@champion"


_BUILT: dict[str, ServedModel] = {}


def build_served_model(root: Path, encoder: str) -> ServedModel:
    """Train, log, register and alias the tiny model once per process."""
    if encoder in _BUILT:
        return _BUILT[encoder]
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("serving-tests", artifact_location=(root / "artifacts").as_uri())
    train, val, _, descriptions = load_splits(
        str(REPO / "data/demo/tax_documents.csv"), str(REPO / "data/demo/labels.yaml"), "title,body", "labels"
    )
    cfg = TrainConfig(encoder=encoder, max_epochs=1, batch_size=16)
    classifier, _ = train_classifier(cfg, train.head(80), val.head(20), descriptions, ["title", "body"])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = log_classifier(classifier, list(val["text"].head(2)))
        version = register(info.model_uri, MODEL_NAME, {"lineage.kind": "sft"}).version
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
    finally:
        mlflow.set_tracking_uri(previous)
    _BUILT[encoder] = ServedModel(uri, MODEL_NAME, str(version))
    return _BUILT[encoder]


@contextmanager
def running_endpoint(model: ServedModel, root: Path, *args: str, env: dict | None = None):
    """`python -m serving serve` for `model` on a free 127.0.0.1 port, its output in `root`/server.log; yields
    {url, port, proc, db, log}."""
    db = f"sqlite:///{root / 'feedback.db'}"
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": model.tracking_uri, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log, "w") as out, local_endpoint(model.uri, "--feedback-db", db, *args, env=env, output=out) as served:
        url, proc = served
        yield {"url": url, "proc": proc, "db": db, "model": model, "log": log, "port": int(url.rsplit(":", 1)[1])}
