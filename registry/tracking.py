"""MLflow set-up and the small logging helpers stages share (datasets, per-epoch metrics, figures)."""

from __future__ import annotations

import json
import logging
import os

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from registry.conventions import DEFAULT_MODEL_NAME
from registry.locations import artifact_root, tracking_uri

log = logging.getLogger(__name__)
_SET_HERE: set[str] = set()  # experiments this process's setup() chose (MLflow then exports their id)
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's `Default`, where `mlflow run` puts runs when given no experiment


def setup(model_name: str | None = None) -> str:
    """Point MLflow at the configured store, and at the model's experiment (named after the model, or
    MLFLOW_EXPERIMENT_NAME), created with the local artifact root if needed: every run of one model in one place.

    Under `mlflow run` the run (and its experiment) already exist; MLFLOW_EXPERIMENT_ID is then kept.
    """
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or model_name or DEFAULT_MODEL_NAME
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")  # by `mlflow run` or the caller, unless an earlier setup here
    if os.environ.get("MLFLOW_RUN_ID") or (chosen and chosen not in _SET_HERE):
        if os.environ.get("MLFLOW_EXPERIMENT_ID") == DEFAULT_EXPERIMENT_ID:
            log.warning(
                "this run is in MLflow's Default experiment; `mlflow run ... --experiment-name %s` keeps "
                "every run of the model in one experiment",
                experiment,
            )
        return uri
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(experiment) is None:
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        try:
            client.create_experiment(experiment, artifact_location=artifact_root() if local else None)
        except MlflowException as exc:  # another process created it between our check and our insert
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    _SET_HERE.add(mlflow.set_experiment(experiment).experiment_id)  # set_experiment exports MLFLOW_EXPERIMENT_ID
    return uri


def log_dataset(frame: pd.DataFrame, source: str, name: str, context: str) -> str:
    """Log an input dataset (mlflow.data, with its digest) and return the digest for lineage tags."""
    flat = frame.assign(labels=frame["labels"].map(lambda ls: "|".join(ls or []))) if "labels" in frame else frame
    dataset = mlflow.data.from_pandas(flat, source=source, name=name)
    mlflow.log_input(dataset, context=context)
    return dataset.digest


def log_epoch(epoch: int, record: dict, prefix: str = "") -> None:
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in record.items()}, step=epoch)


def log_json(obj, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


def log_params_once(params: dict) -> None:
    """Log params the run does not have yet: `mlflow run` has already logged the entry point's own."""
    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})
