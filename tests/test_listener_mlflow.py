"""`python -m lifecycle listen` against a real `mlflow server` (SQLite store, 127.0.0.1) whose registry webhook
points at it: registering a better version leads to its promotion with no other command."""

from __future__ import annotations

import time

import mlflow
import pytest
import requests

from lifecycle import db, history
from registry import conventions as C
from registry.aliases import aliases
from serving.local_server import free_port
from tests.lifecycle_helpers import register_variant, spawn_lifecycle, train_sft_model
from tests.mlflow_server import mlflow_server
from tests.test_lifecycle import _lines, configure, wait_for

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder, demo_frame):
    """One tiny SFT run (version 1 of `sft-model`), its store, classifier and evaluation set."""
    return train_sft_model(tmp_path_factory.mktemp("sft-trained"), tiny_encoder, demo_frame)


@pytest.mark.timeout(900)
def test_a_better_version_registered_on_the_server_is_promoted_through_the_webhook(trained, tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as url:
        for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("LIFECYCLE_DB", f"sqlite:///{tmp_path / 'lifecycle.db'}")  # lease and history
        monkeypatch.setenv("LOCAL_DEPLOY_DIR", str(tmp_path / "deployments"))
        mlflow.set_tracking_uri(url)
        client, name = mlflow.MlflowClient(), "clf"
        weak = register_variant(trained["classifier"], name, tmp_path, thresholds=1.01)  # predicts no label
        configure(name, trained["eval"])
        client.set_registered_model_tag(name, C.TAG_ONNX_ON_PROMOTION, "off")
        port = free_port()
        proc = spawn_lifecycle(
            "listen",
            "--model-name",
            name,
            "--port",
            str(port),
            "--poll-interval",
            "3600",
            "--register-webhook",
            env={"LIFECYCLE_WEBHOOK_SECRET": SECRET},
        )
        try:
            lines = _lines(proc)
            wait_for(lines, "listening for MLflow registry webhooks")
            wait_for(lines, f"promoted version {weak}")  # the catch-up pass every start makes
            wait_for(lines, "cloned champion")
            assert [h.url for h in client.list_webhooks()] == [f"http://127.0.0.1:{port}/webhook"]

            # the next poll is an hour away: from here on only a webhook can start a pass
            start = time.time()
            good = register_variant(trained["classifier"], name, tmp_path)
            seen = wait_for(lines, f"promoted version {good}", timeout=600)
            print(f"registration -> promotion through the webhook: {time.time() - start:.1f} s")
            assert any(f"alias challenger created on version {good}" in line for line in seen), seen
            assert aliases(client, name)["champion"] == good
            assert [e["version"] for e in history.rows(db.engine(), name)] == [weak, good]

            # a forged delivery is refused with the reason in the log, and the listener goes on
            forged = requests.post(
                f"http://127.0.0.1:{port}/webhook",
                json={"entity": "model_version"},
                headers={
                    "X-MLflow-Signature": "v1,AAAA",
                    "X-MLflow-Delivery-Id": "x",
                    "X-MLflow-Timestamp": str(int(time.time())),
                },
                timeout=10,
            )
            assert forged.status_code == 401
            wait_for(lines, "refused a delivery from 127.0.0.1 with 401: bad signature")
            assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"
        finally:
            proc.terminate()  # SIGTERM: the pass in progress finishes, then the listener exits
            code = proc.wait(120)
        assert code == 0
