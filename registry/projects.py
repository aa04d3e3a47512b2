"""Starting this project's MLflow entry points from code (the pipeline's steps, the controller's retraining): each
an MLflow run of its own, a child of the run that started it."""

from __future__ import annotations

import os
import sys

import mlflow
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from registry.locations import REPO_ROOT


def start_entry_point(
    entry: str,
    parameters: dict,
    experiment_id: str | None,
    parent_run_id: str | None,
    run_name: str | None = None,
) -> SubmittedRun:
    """Start `entry` with the local environment, without waiting; the caller waits (`.wait()`) or cancels."""
    # the entry point's `python` must be this interpreter (its packages), whatever PATH this process was given
    bin_dir = os.path.dirname(sys.executable)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    submitted = mlflow.projects.run(
        str(REPO_ROOT),
        entry_point=entry,
        parameters=parameters,
        env_manager="local",
        experiment_id=experiment_id,
        run_name=run_name,
        synchronous=False,
    )
    if parent_run_id:
        mlflow.MlflowClient().set_tag(submitted.run_id, MLFLOW_PARENT_RUN_ID, parent_run_id)
    return submitted
