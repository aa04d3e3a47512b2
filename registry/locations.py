"""Where things are kept: the tracking store, artifacts and the feedback store; each an environment variable
away from a remote service, and a file in the repository by default so everything runs offline."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set (a remote server just works), else a SQLite file in the repo."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def artifact_root() -> str:
    """Where new experiments keep artifacts when the tracking store is local: `./mlruns`, the place MLflow itself
    uses for experiments it creates (Default, `mlflow run --experiment-name`), so all artifacts are in one place."""
    return os.environ.get("MLFLOW_ARTIFACT_ROOT") or (REPO_ROOT / "mlruns").as_uri()


FEEDBACK_DB_ENV = "FEEDBACK_DB_URL"


def feedback_db_url() -> str:
    """FEEDBACK_DB_URL if set (any SQLAlchemy URL, e.g. postgresql://...), else a SQLite file in the repo."""
    return os.environ.get(FEEDBACK_DB_ENV) or f"sqlite:///{REPO_ROOT / 'feedback.db'}"


INFERENCE_LOG_ENV = "INFERENCE_LOG_URL"


def inference_log_url() -> str:
    """INFERENCE_LOG_URL if set (any SQLAlchemy URL), else a SQLite file in the repo."""
    return os.environ.get(INFERENCE_LOG_ENV) or f"sqlite:///{REPO_ROOT / 'inference_log.db'}"
