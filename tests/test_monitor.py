"""The `monitor` stage on a real registry (the tiny SFT champion), with traffic written by the inference log's
writer and feedback stored through the feedback store: no traffic, in-distribution traffic, off-domain traffic,
and a champion its users say is wrong."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import mlflow
import pandas as pd
import pytest

from mlprojects.monitor import main as monitor_main
from registry import conventions as C
from serving.feedback import FeedbackStore
from serving.inference_log import InferenceLog
from tests.lifecycle_helpers import train_sft_model, use_store
from tests.test_sft_stage import mlflow_run

NAME = "sft-model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder, demo_frame):
    """One tiny SFT run (version 1 of `sft-model`), its store, classifier and evaluation set."""
    return train_sft_model(tmp_path_factory.mktemp("sft-trained"), tiny_encoder, demo_frame)


OFF_DOMAIN = [
    f"def handler_{i}(event, context): return json.dumps({{'status': {i}, 'items': list(range({i}))}})"
    for i in range(40)
] + [
    f"Preheat the oven to {180 + i} degrees, whisk {i + 2} eggs with sugar and "
    "fold in the flour before baking the sponge."
    for i in range(40)
]


@pytest.fixture(scope="module")
def champion(trained, demo_frame):
    """Version 1 of the tiny SFT model as champion, with the test F1 the controller writes when it promotes, and
    66 demo documents it never saw (not among the 220 the SFT run and the evaluation set were cut from)."""
    mp = pytest.MonkeyPatch()
    use_store(mp, trained["root"])
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, C.CHAMPION, "1")
    client.set_model_version_tag(NAME, "1", f"{C.TAG_EVAL_PREFIX}f1_macro", "0.60")
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    mp.undo()
    unseen = demo_frame.iloc[220:]
    return {"pyfunc": pyfunc, "unseen": list(unseen["title"].str.strip() + ". " + unseen["body"].str.strip())}


def traffic(pyfunc, texts: list[str], tmp_path, rate=None, params=None) -> tuple[str, str]:
    """Serve `texts` with the champion (and `params`) into an inference log; with `rate(i, labels) -> (score,
    corrected)` users also give feedback on each. Returns the log's and the feedback store's URLs."""
    log_url, feedback_url = f"sqlite:///{tmp_path / 'log.db'}", f"sqlite:///{tmp_path / 'feedback.db'}"
    answers = pyfunc.predict(pd.DataFrame({"text": texts}), params=params)
    now = datetime.now(timezone.utc)
    log = InferenceLog(log_url, flush_interval_s=0.05)
    log.append(
        [
            {
                "prediction_id": f"p{i}",
                "model_name": NAME,
                "model_version": "1",
                "text": text,
                "labels": row["labels"],
                "scores": row["scores"],
                "label_set": row["label_set"],
                "latency_ms": 5.0,
                "at": now,
            }
            for i, (text, (_, row)) in enumerate(zip(texts, answers.iterrows()))
        ]
    )
    log.close()
    store = FeedbackStore(feedback_url)
    for i, (text, (_, row)) in enumerate(zip(texts, answers.iterrows())):
        if rate:
            score, corrected = rate(i, list(row["labels"]))
            store.add(
                {
                    "prediction_id": f"p{i}",
                    "model_name": NAME,
                    "model_version": "1",
                    "text": text,
                    "predicted_labels": list(row["labels"]),
                    "scores": row["scores"],
                    "score": score,
                    "corrected_labels": corrected,
                    "source": "test",
                },
                label_names=list(row["scores"]),
            )
    store.engine.dispose()
    return log_url, feedback_url


def monitor(trained, monkeypatch, capsys, log_url: str, feedback_url: str) -> tuple[str, dict]:
    use_store(monkeypatch, trained["root"])
    capsys.readouterr()
    assert monitor_main(["--model-name", NAME, "--inference-log", log_url, "--feedback-uri", feedback_url]) == 0
    out = capsys.readouterr().out
    run = mlflow.search_runs(
        experiment_names=[NAME],
        filter_string="tags.mlflow.runName = 'monitor'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )[0]
    return out, run


def version_tags() -> dict:
    return mlflow.MlflowClient().get_model_version(NAME, "1").tags


def test_a_window_without_traffic_says_so_and_writes_no_verdict(champion, trained, tmp_path, monkeypatch):
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):  # another store's, exported by an earlier test
        monkeypatch.delenv(var, raising=False)
    proc = mlflow_run(
        "monitor",
        {
            "model_name": NAME,
            "inference_log": f"sqlite:///{tmp_path / 'log.db'}",
            "feedback_uri": f"sqlite:///{tmp_path / 'feedback.db'}",
        },
        trained["uri"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no traffic in the window" in proc.stdout and "No verdict written" in proc.stdout
    assert C.TAG_MONITOR_VERDICT not in mlflow.MlflowClient(trained["uri"]).get_model_version(NAME, "1").tags


def test_in_distribution_traffic_with_good_feedback_is_ok(champion, trained, tmp_path, monkeypatch, capsys):
    urls = traffic(champion["pyfunc"], champion["unseen"], tmp_path, rate=lambda i, labels: (5, labels))
    out, run = monitor(trained, monkeypatch, capsys, *urls)
    tags = version_tags()
    assert tags[C.TAG_MONITOR_VERDICT] == "ok", out
    assert tags[C.TAG_MONITOR_RUN] == run.info.run_id and " .. " in tags[C.TAG_MONITOR_WINDOW]
    metrics = run.data.metrics
    assert metrics["served_docs"] == len(champion["unseen"]) and metrics["feedback"] == len(champion["unseen"])
    assert metrics["f1_macro"] == 1.0  # every user confirmed the answer
    for key in (
        "label_psi",
        "label_chi2_p_value",
        "score_psi",
        "score_ks_p_value",
        "mmd2",
        "mmd_p_value",
        "feedback_mean_score",
    ):
        assert key in metrics, key
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/monitor_distributions.png", "plots/monitor_feedback.png"}


def test_zero_shot_answers_on_another_label_set_are_not_the_champions_traffic(
    champion, trained, tmp_path, monkeypatch, capsys
):
    """Off-domain documents classified against a request's own labels would read as drift if they were counted."""
    fruit = json.dumps({"apple": "Apples, orchards and fruit.", "bank": "Banks, loans and interest rates."})
    urls = traffic(champion["pyfunc"], OFF_DOMAIN, tmp_path, lambda i, labels: (1, []), {"label_descriptions": fruit})
    out, run = monitor(trained, monkeypatch, capsys, *urls)
    assert "no traffic in the window" in out, out
    assert run.data.metrics["served_docs"] == 0 and run.data.metrics["feedback"] == 0


def test_a_request_set_naming_the_champions_own_labels_is_not_its_traffic(
    champion, trained, tmp_path, monkeypatch, capsys
):
    """Same names, so the scores look like the champion's; but a request set is scored as request sets are."""
    own = champion["pyfunc"].unwrap_python_model().classifier.label_descriptions
    params = {"label_descriptions": json.dumps(own)}
    urls = traffic(champion["pyfunc"], champion["unseen"], tmp_path, params=params)
    out, run = monitor(trained, monkeypatch, capsys, *urls)
    assert "no traffic in the window" in out, out
    assert run.data.metrics["served_docs"] == 0


def test_off_domain_traffic_is_drift(champion, trained, tmp_path, monkeypatch, capsys):
    out, run = monitor(trained, monkeypatch, capsys, *traffic(champion["pyfunc"], OFF_DOMAIN, tmp_path))
    assert version_tags()[C.TAG_MONITOR_VERDICT] == "drift", out
    assert "document embeddings drifted" in version_tags()[C.TAG_MONITOR_REASON]
    assert run.data.metrics["mmd_p_value"] < 0.01


def test_a_champion_its_users_correct_is_degraded(champion, trained, tmp_path, monkeypatch, capsys):
    labels = list(champion["pyfunc"].predict(pd.DataFrame({"text": ["probe"]})).iloc[0]["scores"])

    def unhappy(i: int, predicted: list[str]) -> tuple[int, list[str]]:
        return 1, [label for label in labels[i % 3 : i % 3 + 2] if label not in predicted] or [labels[-1]]

    out, run = monitor(
        trained, monkeypatch, capsys, *traffic(champion["pyfunc"], champion["unseen"], tmp_path, rate=unhappy)
    )
    tags = version_tags()
    assert tags[C.TAG_MONITOR_VERDICT] == "degraded", out
    assert "mean feedback score 1.00" in tags[C.TAG_MONITOR_REASON]
    assert "below the champion's test F1-macro 0.600" in tags[C.TAG_MONITOR_REASON]
    assert run.data.metrics["f1_macro_high"] < 0.55
