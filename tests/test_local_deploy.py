"""The local deployment target deploys: a running `python -m serving serve --model models:/NAME@champion` on
127.0.0.1 swaps to each version the target deploys (promotion, then rollback) while requests are in flight, and
no request fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from registry.lookup import classifier_dir
from serving.feedback import FeedbackStore
from serving.follow import running_endpoints
from serving.local_server import free_port, local_endpoint
from serving.local_target import LocalTarget
from tests.conftest import REPO
from tests.lifecycle_helpers import register_variant, use_store
from tests.serving_model import MODEL_NAME, build_served_model


@pytest.fixture()
def two_versions(tmp_path_factory, tmp_path, tiny_encoder, monkeypatch):
    """A copy of the served model's registry (version 1) with a second version; deployments under tmp_path."""
    served = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    shutil.copy(served.tracking_uri[len("sqlite:///") :], tmp_path / "mlflow.db")
    use_store(monkeypatch, tmp_path)
    local = tmp_path / "classifier"
    with classifier_dir(f"models:/{MODEL_NAME}/1") as saved:
        shutil.copytree(saved, local)
    assert register_variant(local, MODEL_NAME, tmp_path, thresholds=0.3, alias=None) == "2"
    return tmp_path


@contextlib.contextmanager
def following_endpoint(target: LocalTarget):
    """Version 1 deployed, then `python -m serving serve --model models:/NAME@champion` on a free port: its URL
    and process (stopped afterwards)."""
    target.deploy(MODEL_NAME, "1")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")},
        "PYTHONPATH": str(REPO),
    }
    # no access log: nothing reads this pipe while the load runs
    champion = f"models:/{MODEL_NAME}@champion"
    with local_endpoint(champion, log_level="WARNING", env=env, output=subprocess.PIPE) as (url, proc):
        try:
            assert health_version(url) == "1"
            yield url, proc
        finally:
            proc.send_signal(signal.SIGCONT)


class Load:
    """Clients posting /invocations back to back; every answer's status and serving version is kept."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.answers, self._stop = url, [], threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, i: int) -> None:
        seen = []
        while not self._stop.is_set():
            try:
                r = requests.post(
                    f"{self.url}/invocations", json={"inputs": {"text": [f"VAT question {i}"]}}, timeout=60
                )
                seen.append((r.status_code, r.json().get("model", {}).get("version")))
            except requests.RequestException as exc:
                seen.append((type(exc).__name__, None))
        self.answers.append(seen)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def health_version(url: str) -> str:
    return requests.get(f"{url}/health", timeout=5).json()["model"]["version"]


def test_promotion_and_rollback_swap_a_running_endpoint_with_no_failed_request(two_versions):
    target = LocalTarget()
    with following_endpoint(target) as (url, _), Load(url) as load:
        time.sleep(1.0)
        started = time.perf_counter()
        promoted = target.deploy(MODEL_NAME, "2")  # returns once the endpoint names version 2
        promote_s = time.perf_counter() - started
        assert health_version(url) == "2"
        assert promoted.detail["endpoints"] == [url]
        time.sleep(1.0)
        started = time.perf_counter()
        target.deploy(MODEL_NAME, "1")  # a rollback is a deploy of the previous version
        rollback_s = time.perf_counter() - started
        assert health_version(url) == "1"
        time.sleep(0.5)
    answers = [a for client in load.answers for a in client]
    print(
        f"\nswap to /health naming the new version: promotion {promote_s:.2f} s, rollback {rollback_s:.2f} s; "
        f"{len(answers)} requests in flight, load {os.getloadavg()[0]:.1f}"
    )
    assert {status for status, _ in answers} == {200}, answers
    for client in load.answers:  # each client saw 1, then 2, then 1 again: never a mix
        runs = [v for i, (_, v) in enumerate(client) if i == 0 or client[i - 1][1] != v]
        assert " ".join(runs) in "1 2 1", runs
    assert {v for _, v in answers} == {"1", "2"}
    # a stopped endpoint is no longer waited for (its announcement is dropped once its process is gone)
    assert running_endpoints(two_versions / "deployments", MODEL_NAME) == []
    assert not list((two_versions / "deployments" / "endpoints" / MODEL_NAME).glob("*.json"))


def test_an_endpoint_that_cannot_swap_keeps_the_old_version_and_the_deploy_fails(two_versions):
    """The record goes back when a running endpoint does not name the new version in time."""
    target = LocalTarget(swap_timeout=1.0)
    with following_endpoint(target) as (url, proc):
        proc.send_signal(signal.SIGSTOP)  # alive and announced, but cannot swap
        with pytest.raises(RuntimeError, match="did not serve version 2"):
            target.deploy(MODEL_NAME, "2")
        assert target.current(MODEL_NAME).version == "1"
        proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        assert health_version(url) == "1"


def test_an_announcement_with_nothing_listening_is_not_waited_for(two_versions):
    """A live pid (here: this test's) but no server at the URL, as after a pid is reused: the deploy goes on."""
    folder = two_versions / "deployments" / "endpoints" / MODEL_NAME
    folder.mkdir(parents=True)
    (folder / f"{os.getpid()}.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{free_port()}", "pid": os.getpid()})
    )
    deployment = LocalTarget(swap_timeout=5.0).deploy(MODEL_NAME, "2")  # waiting for it would raise
    assert deployment.version == "2" and LocalTarget().current(MODEL_NAME).version == "2"


def test_feedback_after_a_swap_is_credited_to_the_version_that_answered(two_versions, monkeypatch):
    store_url = f"sqlite:///{two_versions / 'feedback.db'}"
    monkeypatch.setenv("FEEDBACK_DB_URL", store_url)
    target = LocalTarget()
    with following_endpoint(target) as (url, _):
        answer = requests.post(f"{url}/invocations", json={"inputs": {"text": ["VAT question"]}}, timeout=60).json()
        assert answer["model"]["version"] == "1"
        target.deploy(MODEL_NAME, "2")
        assert health_version(url) == "2"
        stored = requests.post(
            f"{url}/feedback", json={"prediction_id": answer["predictions"][0]["prediction_id"], "score": 4}, timeout=30
        )
        assert stored.status_code == 201, stored.text
    rows = FeedbackStore(store_url).query(model_name=MODEL_NAME)
    assert list(rows["model_version"]) == ["1"]
