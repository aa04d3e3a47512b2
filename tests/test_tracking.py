"""tracking.setup when several processes start at once (e.g. four lifecycle controllers on a new store)."""

from __future__ import annotations

import mlflow

from registry.tracking import setup


def test_setup_survives_another_process_creating_the_experiment_first(mlflow_env, monkeypatch):
    """The check-then-create race, made deterministic: our lookup misses, the insert then meets the other's row."""
    other = mlflow.MlflowClient().create_experiment("shared")
    with monkeypatch.context() as patched:
        patched.setattr(mlflow.MlflowClient, "get_experiment_by_name", lambda self, name: None)
        setup("shared")
    assert mlflow.get_experiment_by_name("shared").experiment_id == other
    with mlflow.start_run() as run:
        assert run.info.experiment_id == other
