"""The lifecycle controller on a real MLflow registry (SQLite) with tiny models: first champion, promotion,
rejection with reasons, a person's stage transition, rollback, bad states, concurrency and crashes."""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
import warnings

import mlflow
import pandas as pd
import pytest

from lifecycle import db, history
from lifecycle.__main__ import main as lifecycle_main
from lifecycle.controller import Controller
from lifecycle.faults import FAULT_ENV, STEPS
from mlprojects.evaluate import main as evaluate_main
from registry import conventions as C
from registry.aliases import aliases
from registry.contract import OUTPUT_COLUMNS
from registry.errors import ConfigError, DataError
from registry.lookup import logged_model_id
from registry.settings import write_settings
from serving.local_target import LocalTarget
from tests.conftest import REPO
from tests.lifecycle_helpers import lifecycle_cli, register_variant, spawn_lifecycle, train_sft_model, use_store
from tests.test_sft_stage import mlflow_run

LABELS = str(REPO / "data" / "demo" / "labels.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder, demo_frame):
    """One tiny SFT run through the sft code path (in-process): its store, its classifier, an evaluation set."""
    return train_sft_model(tmp_path_factory.mktemp("lifecycle-trained"), tiny_encoder, demo_frame)


@pytest.fixture()
def registry_env(mlflow_env, tmp_path, monkeypatch):
    """A fresh registry and deployment directory per test; the controller's lease and history share the store."""
    monkeypatch.setenv("LOCAL_DEPLOY_DIR", str(tmp_path / "deployments"))
    monkeypatch.delenv(FAULT_ENV, raising=False)
    return {"uri": mlflow_env, "deploy_dir": tmp_path / "deployments", "work": tmp_path}


def configure(name: str, data: str, **extra) -> None:
    write_settings(
        mlflow.MlflowClient(),
        name,
        data=data,
        labels=LABELS,
        text_columns="title,body",
        label_column="labels",
        bootstrap=300,
        **extra,
    )


def version(name: str, v: str):
    return mlflow.MlflowClient().get_model_version(name, v)


def reconcile(name: str) -> list[str]:
    log = Controller(name).reconcile()
    assert log is not None
    return log


def predicts(model_uri: str) -> None:
    out = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"text": ["Payroll tax memo for 2023"]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 1


# --- sft -> first champion, clones, deployment ----------------------------------------------------------------


def test_sft_version_is_a_challenger_that_becomes_the_first_champion(trained, monkeypatch, tmp_path):
    use_store(monkeypatch, trained["root"])
    client = mlflow.MlflowClient()
    tags = client.get_registered_model("sft-model").tags
    run_id = version("sft-model", "1").run_id
    assert tags["eval.data"] == f"runs:/{run_id}/data/test.parquet"  # judged on the split nothing selected on
    assert tags["eval.labels"] == f"runs:/{run_id}/labels.json"
    assert (tags["eval.text_columns"], tags["eval.label_column"], tags["eval.margin"]) == ("text", "labels", "0.0")
    assert aliases(client, "sft-model") == {"challenger": "1"}
    assert version("sft-model", "1").current_stage == "Staging"

    log = reconcile("sft-model")
    assert any("promoted version 1" in line and "first model passing the gates" in line for line in log), log
    state = aliases(client, "sft-model")
    assert state["champion"] == "1" and "challenger" not in state
    ref, pol = state["reference"], state["policy"]
    for v, role in ((ref, "reference"), (pol, "policy")):
        mv = version("sft-model", v)
        assert (mv.tags["lineage.kind"], mv.tags["lineage.parent_version"], mv.tags["lifecycle.role"]) == (
            "clone",
            "1",
            role,
        )
        assert "lifecycle.decision" not in mv.tags
        predicts(f"models:/sft-model@{role}")
    champion = version("sft-model", "1")
    assert champion.current_stage == "Production" and champion.tags["lifecycle.decision"] == "promoted"
    assert float(champion.tags["eval.f1_macro"]) == pytest.approx(float(champion.tags["lifecycle.candidate_f1_macro"]))
    assert LocalTarget().current("sft-model").version == "1"
    # idempotent: a second pass finds nothing to do
    assert reconcile("sft-model") == []
    entries = history.rows(db.engine(), "sft-model")
    assert [(e["action"], e["version"]) for e in entries] == [("promote", "1")]
    run = mlflow.get_run(champion.tags["lifecycle.controller_run_id"])
    assert run.data.tags["lifecycle.promoted"] == "1"
    # the sft run and the controller's decisions in one experiment, named after the model
    assert {mlflow.get_experiment(r.info.experiment_id).name for r in (run, mlflow.get_run(run_id))} == {"sft-model"}
    assert "**Trained**" in client.get_registered_model("sft-model").description
    card = champion.description  # the split digests the sft stage tagged, in the card the controller refreshed
    assert all(
        f"| {split}_digest | `{champion.tags[f'lineage.{split}_digest']}` |" in card
        for split in ("data", "validation", "test")
    ), card
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "v1/evaluation")}
    assert {
        "v1/evaluation/confusion_matrices.png",
        "v1/evaluation/precision_recall.png",
        "v1/evaluation/threshold_curves.png",
        "v1/evaluation/metrics.json",
    } <= artifacts


# --- the evaluate entry point ----------------------------------------------------------------------------------------


def test_evaluate_entry_point(trained, monkeypatch, tmp_path):
    uri = use_store(monkeypatch, trained["root"])
    out = tmp_path / "metrics.json"
    proc = mlflow_run(
        "evaluate",
        {
            "model_uri": "models:/sft-model/1",
            "data": trained["eval"],
            "labels": LABELS,
            "text_columns": "title,body",
            "label_column": "labels",
            "output": out,
            "bootstrap": 200,
        },
        uri,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["report"]) == {"f1_macro", "f1_micro", "f1_weighted", "subset_accuracy", "per_label"}
    low, high = result["intervals"]["f1_macro"]
    assert low <= result["report"]["f1_macro"] <= high
    assert float(version("sft-model", "1").tags["eval.f1_macro"]) == pytest.approx(
        result["report"]["f1_macro"], abs=1e-4
    )
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.run_name = 'evaluate'", output_format="list"
    )[0]
    assert run.data.metrics["f1_macro"] == pytest.approx(result["report"]["f1_macro"])
    assert {
        "evaluation/confusion_matrices.png",
        "evaluation/precision_recall.png",
        "evaluation/threshold_curves.png",
        "evaluation/metrics.json",
    } <= {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    # also MLflow 3 model metrics of the logged model (linked to the dataset), and the version's card says them

    linked = [
        m
        for m in mlflow.get_logged_model(logged_model_id("models:/sft-model/1")).metrics
        if m.key == "f1_macro" and m.run_id == run.info.run_id
    ]
    assert linked and linked[0].value == pytest.approx(result["report"]["f1_macro"]) and linked[0].dataset_digest
    assert f"| f1_macro | {result['report']['f1_macro']:.4f} |" in version("sft-model", "1").description

    # a bad dataset (unknown label) stops with one readable line, through the module itself (no mlflow run needed)

    bad = tmp_path / "bad.csv"
    bad.write_text("title,body,labels\nVAT question,Is VAT due?,not_a_label\n")
    assert (
        evaluate_main(
            [
                "--model-uri",
                "models:/sft-model/1",
                "--data",
                str(bad),
                "--labels",
                LABELS,
                "--text-columns",
                "title,body",
            ]
        )
        == 2
    )


def test_evaluate_scores_a_new_label_set_zero_shot_and_leaves_the_version_alone(trained, monkeypatch, tmp_path, capsys):
    use_store(monkeypatch, trained["root"])
    data, fruit = tmp_path / "fruit.csv", tmp_path / "fruit.yaml"
    rows = [("Apple harvest", "Orchards picked apples early", "apple"), ("Loan rates", "The bank raised rates", "bank")]
    pd.DataFrame(
        [r for i in range(4) for r in [(f"{t} {i}", b, l) for t, b, l in rows]], columns=["title", "body", "labels"]
    ).to_csv(data, index=False)
    fruit.write_text("apple: Apples, orchards and fruit harvests.\nbank: Banks, loans and interest rates.\n")
    tags_before = dict(version("sft-model", "1").tags)
    out = tmp_path / "zero_shot.json"
    common = ["--model-uri", "models:/sft-model/1", "--data", str(data), "--text-columns", "title,body"]
    assert evaluate_main([*common, "--label-descriptions", str(fruit), "--output", str(out), "--bootstrap", "100"]) == 0
    report = json.loads(out.read_text())["report"]
    assert set(report["per_label"]) == {"apple", "bank"} and 0.0 <= report["f1_macro"] <= 1.0
    assert dict(version("sft-model", "1").tags) == tags_before  # zero-shot results are not the version's own

    # the model's own label described otherwise is refused in one line, and nothing is logged as its result
    bad = json.dumps({"apple": "Apples.", "bank": "Banks.", "vat": "Vehicle tax."})
    capsys.readouterr()
    assert evaluate_main([*common, "--label-descriptions", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Loading weights" in line for line in err), err  # refused before the encoder loads
    last = err[-1]
    assert last.startswith("error: ") and "gives the model's own label(s) ['vat'] other descriptions" in last


# --- the main story: bad states, promotion, rejection, a person's request, rollback ------------------------------


def test_lifecycle_story(trained, registry_env, tmp_path, capsys):
    name, work = "clf", registry_env["work"]
    client = mlflow.MlflowClient()
    weak = register_variant(trained["classifier"], name, work, thresholds=1.01)  # predicts no label at all

    # no evaluation configuration: the candidate waits, with the reason on it; nothing is promoted
    with pytest.raises(ConfigError, match="no evaluation configuration"):
        reconcile(name)
    assert "no evaluation configuration" in version(name, weak).tags["lifecycle.blocked"]
    assert "champion" not in aliases(client, name)

    # an evaluation set that fails its gate (an unknown label): same
    bad = pd.read_csv(trained["eval"])
    bad.loc[0, "labels"] = "no_such_label"
    bad.to_csv(tmp_path / "bad_eval.csv", index=False)
    configure(name, str(tmp_path / "bad_eval.csv"))
    with pytest.raises(DataError, match="no_such_label"):
        reconcile(name)
    assert "evaluation dataset unusable" in version(name, weak).tags["lifecycle.blocked"]
    assert "champion" not in aliases(client, name)

    configure(name, trained["eval"])
    reconcile(name)
    assert aliases(client, name)["champion"] == weak

    good = register_variant(trained["classifier"], name, work)
    log = reconcile(name)
    assert aliases(client, name)["champion"] == good, log
    mv = version(name, good)
    assert mv.current_stage == "Production" and mv.tags["lifecycle.decision"] == "promoted"
    assert mv.tags["lifecycle.champion_version"] == weak
    assert float(mv.tags["lifecycle.candidate_f1_macro"]) > float(mv.tags["lifecycle.champion_f1_macro"])
    low, high = map(float, mv.tags["lifecycle.gain_ci"].strip("[]").split(","))
    assert 0 < low <= high
    for key in ("lifecycle.actor", "lifecycle.decided_at", "lifecycle.margin", "eval.f1_macro_ci", "eval.dataset"):
        assert mv.tags[key]
    assert version(name, weak).current_stage == "Archived"
    assert LocalTarget().current(name).version == good
    assert version(name, aliases(client, name)["reference"]).tags["lineage.parent_version"] == good

    worse = register_variant(trained["classifier"], name, work, thresholds=1.01)
    broken = register_variant(trained["classifier"], name, work, corrupt=True, alias=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, broken, "Staging")  # a person asks for an evaluation
    reconcile(name)
    assert aliases(client, name)["champion"] == good
    worse_tags = version(name, worse).tags
    assert (
        worse_tags["lifecycle.decision"] == "rejected" and "not better by the margin" in worse_tags["lifecycle.reason"]
    )
    assert version(name, worse).current_stage == "None" and "challenger" not in aliases(client, name)
    broken_mv = version(name, broken)
    assert broken_mv.tags["lifecycle.decision"] == "rejected"
    assert "artifact does not load or predict" in broken_mv.tags["lifecycle.reason"]
    assert broken_mv.tags["lifecycle.requested_by"] == "stage transition to Staging"

    # a person moves the rejected weak version to Staging again: it is evaluated again, and rejected again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, worse, "Staging")
    reconcile(name)
    assert version(name, worse).tags["lifecycle.requested_by"] == "stage transition to Staging"
    assert version(name, worse).current_stage == "None"

    # rollback: champion back to the previous one, redeployed, recorded
    proc = lifecycle_cli("rollback", "--model-name", name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert aliases(client, name)["champion"] == weak
    assert version(name, weak).current_stage == "Production"
    assert version(name, good).tags["lifecycle.decision"] == "rolled_back"
    assert LocalTarget().current(name).version == weak
    capsys.readouterr()
    assert lifecycle_main(["history", "--model-name", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "first champion" in lines[1] and lines[1].split()[0] == weak
    assert lines[2].split()[0] == good and "promote (from version" in lines[2]
    assert lines[3].split()[0] == weak and "rollback (from version" in lines[3] and lines[3].split()[-1] != "now"
    # nothing earlier to roll back to now
    assert lifecycle_main(["rollback", "--model-name", name]) == 2
    assert "error: clf has no previous champion" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--margin", "nan", "setting margin='nan' is not a finite number"),
        ("--bootstrap", "1e999", "setting bootstrap='1e999' is not a finite number"),
        ("--keep-archived", "many", "setting keep_archived='many' is not a finite number"),
        ("--confidence", "1.5", "confidence must be in (0, 1)"),
    ],
)
def test_configure_rejects_a_bad_setting_and_keeps_the_old_ones(registry_env, capsys, flag, value, message):
    mlflow.MlflowClient().create_registered_model("m")
    assert (
        lifecycle_main(
            ["configure", "--model-name", "m", "--eval-data", "eval.csv", "--eval-labels", LABELS, "--margin", "0.02"]
        )
        == 0
    )
    before = mlflow.MlflowClient().get_registered_model("m").tags
    capsys.readouterr()
    assert lifecycle_main(["configure", "--model-name", "m", flag, value]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert mlflow.MlflowClient().get_registered_model("m").tags == before


# --- safety --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(trained, tmp_path_factory):
    """Once per module: a weak champion (deployed, cloned) and a better challenger waiting, in a store to copy."""
    root = tmp_path_factory.mktemp("lifecycle-prepared")
    mp = pytest.MonkeyPatch()
    use_store(mp, root)
    weak = register_variant(trained["classifier"], "clf", root, thresholds=1.01)
    configure("clf", trained["eval"])
    reconcile("clf")
    good = register_variant(trained["classifier"], "clf", root)
    mp.undo()
    return root, weak, good


@pytest.fixture()
def champion_and_challenger(prepared, tmp_path, monkeypatch):
    """A private copy of the prepared store (registry, lease, history) and deployment record."""
    root, weak, good = prepared
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(root / "deployments", tmp_path / "deployments")
    use_store(monkeypatch, tmp_path, artifacts=root / "artifacts")  # shared artifacts: new runs get new paths
    monkeypatch.delenv(FAULT_ENV, raising=False)
    yield "clf", weak, good
    while mlflow.active_run():
        mlflow.end_run()


def assert_consistent(name: str, champion: str, previous: str) -> None:
    client = mlflow.MlflowClient()
    state = aliases(client, name)
    assert state["champion"] == champion and "challenger" not in state
    assert C.TAG_PENDING not in client.get_registered_model(name).tags
    production = [
        str(v.version) for v in client.search_model_versions(f"name='{name}'") if v.current_stage == "Production"
    ]
    assert production == [champion]
    assert version(name, previous).current_stage == "Archived"
    assert version(name, champion).tags["lifecycle.decision"] == "promoted"
    assert [e["version"] for e in history.rows(db.engine(), name)] == [previous, champion]
    assert LocalTarget().current(name).version == champion
    assert version(name, state["reference"]).tags["lineage.parent_version"] == champion
    copies = {
        str(v.version)
        for v in client.search_model_versions(f"name='{name}'")
        if v.source == f"models:/{name}/{champion}"
    }
    assert copies == {state["reference"], state["policy"]}  # cloned once, no orphan copy
    predicts(f"models:/{name}@champion")


def test_four_concurrent_reconcilers_promote_exactly_once(champion_and_challenger):
    name, weak, good = champion_and_challenger
    procs = [spawn_lifecycle("reconcile", "--once", "--model-name", name) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert sum(f"promoted version {good}" in out for out in outputs) == 1, outputs
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`lifecycle.promoted` = '{good}'", output_format="list"
    )
    assert len(runs) == 1
    assert_consistent(name, good, weak)


def _lines(proc) -> "queue.Queue[str]":
    """The process's output lines as they come (a reader thread), so a test can wait for one with a deadline."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return lines


def wait_for(lines: "queue.Queue[str]", text: str, timeout: float = 240) -> list[str]:
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            seen.append(lines.get(timeout=max(0.1, deadline - time.time())))
        except queue.Empty:
            break
        if text in seen[-1]:
            return seen
    raise AssertionError(f"no line with {text!r} within {timeout} s; got: {''.join(seen)[-3000:]}")


def test_watch_acts_on_each_new_candidate_until_stopped(champion_and_challenger, trained, tmp_path):
    """`reconcile --watch`: promotes the waiting challenger, keeps running, rejects a worse candidate registered
    later on a following tick, and stops cleanly on SIGTERM."""
    name, weak, good = champion_and_challenger
    proc = spawn_lifecycle("reconcile", "--watch", "--interval", "1", "--model-name", name)
    try:
        lines = _lines(proc)
        wait_for(lines, f"promoted version {good}")
        wait_for(lines, "cloned champion")
        assert proc.poll() is None
        worse = register_variant(trained["classifier"], name, tmp_path, thresholds=1.01)
        wait_for(lines, f"rejected version {worse}")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert version(name, worse).tags["lifecycle.decision"] == "rejected"
    assert_consistent(name, good, weak)


def kill_then_reconcile(name: str, weak: str, good: str, step: str) -> None:
    proc = lifecycle_cli(
        "reconcile", "--once", "--model-name", name, env={FAULT_ENV: step, "LIFECYCLE_LEASE_TTL_S": "2"}
    )
    assert proc.returncode == -9, f"{step}: {proc.returncode} {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    time.sleep(2.1)  # the killed controller's lease lapses
    reconcile(name)
    assert_consistent(name, good, weak)
    # the killed controller's MLflow run does not stay RUNNING forever: the next pass marks it failed
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.status = 'RUNNING'", output_format="list"
    )
    assert [r.info.run_id for r in runs if r.data.tags.get("lifecycle.model_name") == name] == []
    failed = mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string="attributes.status = 'FAILED'"
    )
    assert any(r.data.tags.get("lifecycle.model_name") == name and "lifecycle.orphaned" in r.data.tags for r in failed)


FAST_STEPS = ("promote.history", "clone.reference.created")


@pytest.mark.parametrize("step", FAST_STEPS)
def test_sigkill_then_reconcile_leaves_a_consistent_registry(champion_and_challenger, step):
    kill_then_reconcile(*champion_and_challenger, step)


@pytest.mark.slow
@pytest.mark.parametrize("step", [s for s in STEPS if s not in FAST_STEPS])
def test_sigkill_at_every_other_step(champion_and_challenger, step):
    kill_then_reconcile(*champion_and_challenger, step)
