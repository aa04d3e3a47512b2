"""The local deployment target: loads the version, runs a smoke prediction, then records it as live.

The record (one JSON file per model under `deploy_dir()`) is what a local endpoint serves from; it is
replaced atomically, so a crash leaves either the old deployment or the new one, never half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd

from mlprojects.config import deploy_dir
from serving.targets import Deployment

SMOKE_TEXT = "Smoke test: is VAT due on consulting invoices sent to Germany in 2022?"


class LocalTarget:
    name = "local"

    def __init__(self, state_dir: str | Path | None = None):
        self.state_dir = Path(state_dir or deploy_dir())

    def _path(self, model_name: str) -> Path:
        return self.state_dir / f"{model_name}.json"

    def current(self, model_name: str) -> Deployment | None:
        path = self._path(model_name)
        if not path.exists():
            return None
        return Deployment(**{k: v for k, v in json.loads(path.read_text()).items() if k != "previous"})

    def deploy(self, model_name: str, version: str) -> Deployment:
        current = self.current(model_name)
        if current and current.version == str(version) and current.status == "deployed":
            return current
        uri = f"models:/{model_name}/{version}"
        out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [SMOKE_TEXT]}))
        if len(out) != 1 or not {"labels", "top_label", "scores"} <= set(out.columns):
            raise RuntimeError(f"smoke prediction of {uri} broke the contract: {out!r}")
        deployment = Deployment(self.name, uri, str(version), "deployed",
                                {"deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "smoke_top_label": str(out.loc[0, "top_label"])})
        self._write(model_name, {**asdict(deployment), "previous": asdict(current) if current else None})
        return deployment

    def _write(self, model_name: str, record: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2)
        os.replace(tmp, self._path(model_name))
