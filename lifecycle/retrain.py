"""The controller's retraining: read what the trigger rules (`lifecycle.triggers`) look at, and start the `grpo`
entry point as an MLflow run and wait for it. The controller holds the model's lease meanwhile, so at most one such
run per model runs at a time; the challenger it registers is judged by the next plan, as any other."""

from __future__ import annotations

import functools
import subprocess
import time
from datetime import datetime, timezone

import mlflow
from mlflow import MlflowClient
from sqlalchemy.engine import Engine

from lifecycle import history
from lifecycle.triggers import Situation
from registry import conventions as C
from registry.lookup import versions_of
from registry.projects import start_entry_point
from serving.feedback import FeedbackStore


@functools.lru_cache(maxsize=4)
def _store(url: str) -> FeedbackStore:
    return FeedbackStore(url)


def situation(client: MlflowClient, name: str, eng: Engine, feedback_url: str) -> Situation:
    """The last GRPO run (the newest GRPO version, or the last run the controller started, whichever is later),
    the feedback given since, and the monitor's verdict on the champion."""
    versions = {str(v.version): v for v in versions_of(client, name)}
    triggered = history.trigger_rows(eng, name)
    last_trigger = triggered[-1]["at"] if triggered else None
    grpo = [v.creation_timestamp / 1000 for v in versions.values() if v.tags.get(C.TAG_KIND) == "grpo"]
    since = max([*grpo, *([last_trigger] if last_trigger else [])], default=None)
    new = _store(feedback_url).count(name, datetime.fromtimestamp(since, timezone.utc) if since else None)
    champion = client.get_registered_model(name).aliases.get(C.CHAMPION)
    tags = versions[str(champion)].tags if champion and str(champion) in versions else {}
    verdict_at = tags.get(C.TAG_MONITOR_AT)
    return Situation(
        new,
        since,
        last_trigger,
        tags.get(C.TAG_MONITOR_VERDICT),
        datetime.fromisoformat(verdict_at).timestamp() if verdict_at else None,
        time.time(),
    )


def run_grpo(
    name: str, epochs: float | None, reason: str, parent_run_id: str | None, timeout_s: float
) -> tuple[str, bool]:
    """(run id, whether it succeeded) of the `grpo` entry point started as an MLflow run in the controller's
    experiment (`epochs` None: the stage's default), tagged with its reason and as a child of the controller's
    run; cancelled after `timeout_s`."""
    experiment = mlflow.active_run().info.experiment_id if mlflow.active_run() else None
    parameters = {"model_name": name, **({"num_train_epochs": f"{epochs:g}"} if epochs else {})}
    submitted = start_entry_point("grpo", parameters, experiment, parent_run_id, run_name="grpo (auto-retrain)")
    client = MlflowClient()
    client.set_tag(submitted.run_id, C.TAG_RETRAIN_REASON, reason[:4000])
    try:
        submitted.command_proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        submitted.cancel()
        client.set_terminated(submitted.run_id, "KILLED")
        return submitted.run_id, False
    return submitted.run_id, submitted.wait()
