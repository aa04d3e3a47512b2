"""Continuous training end to end with the tiny encoder: users' feedback arrives through the endpoint, and the
controller (`reconcile --watch`, opted in with `configure --auto-retrain on`) starts the `grpo` entry point as an
MLflow run, then judges the challenger it registered, with no further command; the trigger is in the history,
and the minimum interval keeps a second one from starting."""

from __future__ import annotations

import re

import mlflow
import pytest
import requests

from lifecycle import db, history
from lifecycle.__main__ import main as lifecycle_main
from lifecycle.controller import Controller
from registry import conventions as C
from tests.lifecycle_helpers import spawn_lifecycle, train_sft_model, use_store
from tests.serving_model import ServedModel, running_endpoint
from tests.test_lifecycle import _lines, wait_for

NAME = "sft-model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder, demo_frame):
    """One tiny SFT run (version 1 of `sft-model`), its store, classifier and evaluation set."""
    return train_sft_model(tmp_path_factory.mktemp("sft-trained"), tiny_encoder, demo_frame)


def rate(url: str, frame, first: int) -> int:
    """Serve the frame's documents and rate each answer against its true labels, as users would; how many."""
    texts = list(frame["title"].str.strip() + ". " + frame["body"].str.strip())
    answer = requests.post(f"{url}/invocations", json={"inputs": {"text": texts}}, timeout=120)
    assert answer.status_code == 200, answer.text
    for i, (prediction, truth) in enumerate(zip(answer.json()["predictions"], frame["labels"])):
        truth = truth.split("|")
        score = 5 if set(prediction["labels"]) == set(truth) else 2
        stored = requests.post(
            f"{url}/feedback",
            json={
                "prediction_id": prediction["prediction_id"],
                "score": score,
                "corrected_labels": truth,
                "source": f"user-{first + i}",
            },
            timeout=60,
        )
        assert stored.status_code == 201, stored.text
    return len(texts)


@pytest.mark.timeout(1500)
def test_feedback_through_the_endpoint_makes_the_controller_retrain_and_decide(
    trained, demo_frame, tmp_path, monkeypatch, capsys
):
    use_store(monkeypatch, trained["root"])
    monkeypatch.setenv("FEEDBACK_DB_URL", f"sqlite:///{tmp_path / 'feedback.db'}")  # the endpoint's store, below
    client = mlflow.MlflowClient()
    client.set_registered_model_tag(NAME, C.TAG_ONNX_ON_PROMOTION, "off")
    assert Controller(NAME).reconcile()  # version 1 becomes champion, cloned as reference and policy
    assert (
        lifecycle_main(
            [
                "configure",
                "--model-name",
                NAME,
                "--auto-retrain",
                "on",
                "--retrain-min-feedback",
                "30",
                "--retrain-min-interval",
                "3600",
                "--retrain-epochs",
                "1",
            ]
        )
        == 0
    )
    assert "retraining (GRPO started by the controller):" in capsys.readouterr().out

    unseen = demo_frame.iloc[220:]  # documents neither the SFT run nor the evaluation set used
    with running_endpoint(ServedModel(trained["uri"], NAME, "1"), tmp_path) as endpoint:
        controller = spawn_lifecycle("reconcile", "--watch", "--interval", "2", "--model-name", NAME)
        try:
            lines = _lines(controller)
            rated = rate(endpoint["url"], unseen.iloc[:35], 0)
            wait_for(lines, "retraining with GRPO:", timeout=300)
            seen = wait_for(lines, "retraining run", timeout=900)
            child = seen[-1].split("registered version ")[-1].strip()
            assert child.isdigit(), seen[-1]
            wait_for(lines, f" version {child}", timeout=600)  # promoted or rejected, with its reason
        finally:
            controller.terminate()
            controller.wait(120)

        triggered = history.trigger_rows(db.engine(), NAME)
        assert len(triggered) == 1 and triggered[0]["kind"] == "feedback"
        # the controller counts what has arrived by its tick: at least the threshold, at most all that were rated
        count = int(
            re.match(r"(\d+) new feedback records and no GRPO run yet \(threshold 30\)", triggered[0]["reason"]).group(
                1
            )
        )
        assert 30 <= count <= rated
        assert triggered[0]["outcome"] == f"registered version {child}"
        run = client.get_run(triggered[0]["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.entryPoint"] == "grpo"
        assert (
            run.data.tags[C.TAG_RETRAIN_REASON] == triggered[0]["reason"] and run.data.params["num_train_epochs"] == "1"
        )
        version = client.get_model_version(NAME, child)
        assert version.tags[C.TAG_KIND] == "grpo" and version.run_id == run.info.run_id
        assert version.tags[C.TAG_DECISION] in ("promoted", "rejected") and version.tags[C.TAG_REASON]

        # more feedback, but the last run started less than the minimum interval ago: nothing starts
        rate(endpoint["url"], unseen.iloc[35:], 35)
        log = Controller(NAME).reconcile()
        assert log is not None and not any("retraining" in line for line in log), log
        assert len(history.trigger_rows(db.engine(), NAME)) == 1

    capsys.readouterr()
    assert lifecycle_main(["history", "--model-name", NAME]) == 0
    out = capsys.readouterr().out
    assert "feedback" in out and f"registered version {child} (run {run.info.run_id})" in out
