"""Stages only where the registry has them: the lifecycle on a registry that refuses every stage call (a test
double of Unity Catalog) and on the real SQLite registry with stages off and on, under a three-level name; and
what people read there: the model's description, each version's card, model metrics, one experiment."""

from __future__ import annotations

import os
import shutil

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from lifecycle.__main__ import main as lifecycle_main
from lifecycle.controller import Controller
from mlprojects.evaluate import main as evaluate_main
from registry import conventions as C
from registry.aliases import aliases, retire_archived
from registry.errors import ConfigError
from registry.lookup import classifier_dir, logged_model_id
from registry.model_card import refresh_cards
from registry.settings import write_settings
from registry.stages import stages_enabled
from serving.local_server import local_endpoint
from serving.local_target import LocalTarget
from tests.conftest import REPO, cli_args
from tests.lifecycle_helpers import register_variant, use_store
from tests.serving_model import MODEL_NAME, build_served_model

NAME = "main.default.tax_clf"  # catalog.schema.model, as on Unity Catalog


class UnityCatalogRegistryDouble(mlflow.MlflowClient):
    """TEST DOUBLE of a Unity Catalog registry client: every stage call is refused, as `databricks-uc` does."""

    def transition_model_version_stage(self, *args, **kwargs):
        raise MlflowException("TEST DOUBLE (Unity Catalog): stage transitions are not supported")

    def get_latest_versions(self, *args, **kwargs):
        raise MlflowException("TEST DOUBLE (Unity Catalog): stages are not supported")


@pytest.mark.parametrize(
    "uri,mode,expected",
    [
        ("databricks-uc", None, False),
        ("databricks-uc://profile", "auto", False),
        ("sqlite:///x.db", None, True),
        ("postgresql+psycopg2://h/db", "", True),
        ("databricks", None, True),
        ("/tmp/mlruns", None, True),
        ("http://mlflow:5000", "off", False),
        ("databricks-uc", "on", True),
    ],
)
def test_stage_mode_from_the_registry_uri_and_the_setting(uri, mode, expected):
    assert stages_enabled(uri, mode) is expected


def test_unknown_stage_mode_or_registry_kind_is_one_line_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"REGISTRY_STAGES='maybe' is not a stage mode; use one of auto, on, off"):
        stages_enabled("sqlite:///x.db", "maybe")
    with pytest.raises(ConfigError, match=r"unknown registry kind 'mongodb'") as err:
        stages_enabled("mongodb://h/db")
    assert "\n" not in str(err.value)
    monkeypatch.setenv("REGISTRY_STAGES", "sometimes")
    with pytest.raises(ConfigError, match="sometimes"):
        stages_enabled("sqlite:///x.db")


@pytest.fixture()
def store(tmp_path, tmp_path_factory, tiny_encoder, demo_frame, monkeypatch):
    """A fresh SQLite registry, the tiny served classifier to register variants of, and an evaluation set."""
    served = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    mlflow.set_tracking_uri(served.tracking_uri)
    local = tmp_path / "classifier"
    with classifier_dir(f"models:/{MODEL_NAME}/1") as saved:
        shutil.copytree(saved, local)
    use_store(monkeypatch, tmp_path)
    demo_frame.iloc[120:220].to_csv(tmp_path / "eval.csv", index=False)
    yield {"classifier": local, "eval": str(tmp_path / "eval.csv"), "work": tmp_path}
    while mlflow.active_run():
        mlflow.end_run()


def use_double(monkeypatch) -> None:
    monkeypatch.setattr(mlflow, "MlflowClient", UnityCatalogRegistryDouble)
    monkeypatch.setattr("lifecycle.controller.MlflowClient", UnityCatalogRegistryDouble)


def test_the_double_refuses_stages_so_stage_mirroring_on_it_fails(store, monkeypatch):
    use_double(monkeypatch)
    monkeypatch.setenv("REGISTRY_STAGES", "on")
    with pytest.raises(MlflowException, match="TEST DOUBLE"):
        register_variant(store["classifier"], NAME, store["work"])


@pytest.mark.parametrize("registry,mode", [("unity-catalog double", "off"), ("sqlite", "off"), ("sqlite", "on")])
def test_lifecycle_from_aliases_and_tags_alone(store, monkeypatch, registry, mode):
    if registry == "unity-catalog double":
        use_double(monkeypatch)
    monkeypatch.setenv("REGISTRY_STAGES", mode)
    client = mlflow.MlflowClient()
    work = store["work"]
    weak = register_variant(store["classifier"], NAME, work, thresholds=1.01)  # predicts no label at all
    write_settings(
        client,
        NAME,
        data=store["eval"],
        labels=str(REPO / "data/demo/labels.yaml"),
        text_columns="title,body",
        label_column="labels",
        bootstrap=200,
    )
    assert Controller(NAME).reconcile()
    assert aliases(client, NAME)["champion"] == weak
    good = register_variant(store["classifier"], NAME, work)
    log = Controller(NAME).reconcile()
    held = aliases(client, NAME)
    assert held["champion"] == good, log
    assert client.get_model_version(NAME, weak).tags[C.TAG_ARCHIVED] == "true"
    assert LocalTarget().current(NAME).version == good

    # rollback from tags and history alone, then retirement of the archived version
    assert any("rolled back" in line for line in Controller(NAME).rollback())
    assert aliases(client, NAME)["champion"] == weak
    assert C.TAG_ARCHIVED not in client.get_model_version(NAME, weak).tags
    assert client.get_model_version(NAME, good).tags[C.TAG_ARCHIVED] == "true"
    assert any("cloned champion" in line for line in Controller(NAME).reconcile())
    assert retire_archived(client, NAME, 0) == [good]
    refresh_cards(client, NAME)  # as the controller does after acting
    assert client.get_model_version(NAME, good).tags[C.TAG_RETIRED] == "true"

    versions = client.search_model_versions(f"name='{NAME}'")
    stages = {str(v.version): v.current_stage for v in versions}
    if mode == "off":
        assert set(stages.values()) == {"None"}, stages
    else:
        assert stages[weak] == "Production" and stages[good] == "None"

    # a registry people can read
    model = client.get_registered_model(NAME)
    assert "tax_question" in model.description and "Judged" in model.description
    champion_card = client.get_model_version(NAME, weak).description
    assert "Test-split metrics" in champion_card and "`champion`" in champion_card and "f1_macro" in champion_card
    good_card = client.get_model_version(NAME, good).description
    assert "rolled_back" in good_card and "retired" in good_card and f"replaced by version {weak}" in good_card
    clones = [v for v in versions if v.tags.get(C.TAG_KIND) == "clone"]
    assert clones and all(
        v.tags[C.TAG_CLONE_OF] in (weak, good)
        and "**clone** of champion version" in client.get_model_version(NAME, v.version).description
        for v in clones
    )
    # the champion of the rollback had clones already: they were re-used, not copied again
    assert sorted(v.tags[C.TAG_CLONE_OF] for v in clones) == sorted([weak, weak, good, good])

    # evaluation results as MLflow 3 model metrics on the logged model, linked to the evaluation dataset
    model_id = logged_model_id(f"models:/{NAME}/{good}")
    metrics = {m.key: m for m in mlflow.get_logged_model(model_id).metrics}
    assert {"f1_macro", "f1_macro_low", "f1_macro_high"} <= set(metrics)
    assert metrics["f1_macro"].dataset_digest and metrics["f1_macro"].dataset_name.startswith("evaluation-")
    # the controller's runs are in the model's experiment
    run = mlflow.get_run(client.get_model_version(NAME, good).tags[C.TAG_CONTROLLER_RUN])
    assert mlflow.get_experiment(run.info.experiment_id).name == NAME


def test_a_three_level_name_through_the_entry_points(store, monkeypatch, capsys):
    """evaluate, the lifecycle CLI and the endpoint take `catalog.schema.model` whole (stages off, as on UC)."""
    monkeypatch.setenv("REGISTRY_STAGES", "off")
    version = register_variant(store["classifier"], NAME, store["work"])
    labels = str(REPO / "data/demo/labels.yaml")
    judged_on = {"text_columns": "title,body", "bootstrap": 200}
    assert (
        lifecycle_main(
            ["configure", *cli_args(model_name=NAME, eval_data=store["eval"], eval_labels=labels, **judged_on)]
        )
        == 0
    )
    assert lifecycle_main(["reconcile", "--once", "--model-name", NAME]) == 0
    assert lifecycle_main(["history", "--model-name", NAME]) == 0
    assert f"{version} " in capsys.readouterr().out
    assert (
        evaluate_main(cli_args(model_uri=f"models:/{NAME}@champion", data=store["eval"], labels=labels, **judged_on))
        == 0
    )
    assert f"model version {version} tagged" in capsys.readouterr().out
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with local_endpoint(f"models:/{NAME}@champion", env=env) as (url, _):
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["model"] == {"name": NAME, "version": version}
