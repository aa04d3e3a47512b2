"""Azure ML target without Azure: settings, the dry run's YAML (loaded back by the SDK), and blue/green rollouts
through `RecordingMLClient`, a recording double of MLClient. Nothing here reaches Azure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest
from azure.ai.ml import load_online_deployment, load_online_endpoint

from registry.errors import ConfigError
from serving.__main__ import main
from serving.azureml.settings import load_settings
from serving.azureml.target import AzureMLTarget, DeploymentFailed
from serving.targets import DeploymentTarget, get_target
from tests.azureml_double import SECRET_KEY, RecordingMLClient
from tests.serving_model import build_served_model


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    return build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)


@pytest.fixture()
def store(served, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.tracking_uri)
    mlflow.set_tracking_uri(served.tracking_uri)
    return served


def two_versions(name: str) -> list[str]:
    """Two registered versions (copies of the served model) under a name of this test's own."""
    client = mlflow.MlflowClient()
    return [str(client.copy_model_version("models:/tiny-served/1", name).version) for _ in range(2)]


def test_settings_from_file_and_environment(tmp_path):
    path = tmp_path / "azureml.yaml"
    path.write_text("workspace: ws-file\nendpoint_name: from-file\ntraffic_steps: [25, 50, 100]\n")
    cfg = load_settings(path, {"AZUREML_ENDPOINT_NAME": "from-env", "AZUREML_INSTANCE_COUNT": "2"})
    assert (cfg.workspace, cfg.endpoint_name, cfg.instance_count, cfg.traffic_steps) == (
        "ws-file",
        "from-env",
        2,
        [25, 50, 100],
    )
    assert load_settings(None, {"AZUREML_TRAFFIC_STEPS": "10,100"}).traffic_steps == [10, 100]
    for text, message in [
        ("api_key: abc\n", "must not hold secrets"),
        ("traffic_steps: [50, 10]\n", "traffic_steps"),
        ("endpoint: x\n", "unknown Azure ML setting"),
        ("instance_count: many\n", "must be a number"),
        ("- a list\n", "must be a mapping"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings(path, {})


def test_dry_run_writes_yaml_the_sdk_loads_back(store, tmp_path, capsys):
    out = tmp_path / "deploy"
    rc = main(
        ["deploy", "--target", "azureml", "--model", f"models:/{store.name}@champion", "--dry-run", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "nothing was sent to Azure" in printed and "az ml online-deployment create" in printed
    endpoint = load_online_endpoint(source=str(out / "endpoint.yml"))
    assert endpoint.auth_mode == "key" and endpoint.name == "tax-doc-classifier"
    deployment = load_online_deployment(source=str(out / "deployment.yml"))
    assert deployment.name == "blue" and deployment.endpoint_name == endpoint.name
    assert deployment.code_configuration.scoring_script == "score.py"
    assert deployment.environment_variables == {
        "MODEL_NAME": store.name,
        "MODEL_VERSION": store.version,
        "MODEL_ARTIFACT": f"models:/{store.name}/{store.version}",
    }
    assert deployment.model.type == "custom_model"  # explicit score.py, not the no-code MLflow path
    assert (Path(deployment.model.path) / "MLmodel").exists()  # relative in the YAML, resolved by the SDK
    assert "path: model" in (out / "deployment.yml").read_text()
    assert {p.name for p in (out / "code").iterdir()} == {"score.py", "scoring.py"}
    pip = deployment.environment.conda_file["dependencies"][-1]["pip"]
    assert "azureml-inference-server-http" in pip and any(r.startswith("mlflow-skinny==") for r in pip)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["model"] == f"models:/{store.name}/{store.version}"


def test_dry_run_of_an_unknown_model_is_one_readable_error(store, tmp_path, capsys):
    rc = main(
        [
            "deploy",
            "--target",
            "azureml",
            "--model",
            "models:/no-such-model@champion",
            "--dry-run",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "cannot resolve models:/no-such-model@champion" in capsys.readouterr().err


def test_blue_green_rollout_moves_traffic_in_steps_and_removes_the_old_deployment(store, caplog):
    v1, v2 = two_versions("tiny-azure")
    client = RecordingMLClient()
    target = get_target("azureml", client=client)
    assert isinstance(target, DeploymentTarget) and isinstance(target, AzureMLTarget)
    caplog.set_level(logging.DEBUG)

    first = target.deploy("tiny-azure", v1)
    assert first.detail["deployment"] == "blue" and client.traffic_history == [{"blue": 100}]
    assert target.current("tiny-azure").version == v1

    client.calls.clear()
    second = target.deploy("tiny-azure", v2)
    names = [c[0] for c in client.calls]
    assert second.status == "deployed" and second.detail["deployment"] == "green"
    smoke = names.index("endpoint.invoke")
    assert client.calls[smoke][1] == {"deployment": "green"}  # direct call to the new deployment first
    assert smoke < names.index("endpoint.begin_create_or_update")
    assert client.traffic_history == [{"green": 10, "blue": 90}, {"green": 100, "blue": 0}]
    assert names[-1] == "deployment.begin_delete" and client.calls[-1][1] == {"name": "blue"}
    assert set(client.deployments) == {("tax-doc-classifier", "green")}
    assert target.current("tiny-azure").version == v2

    client.calls.clear()
    assert target.deploy("tiny-azure", v2).version == v2  # idempotent: nothing created, no traffic moved
    assert not [c for c in client.calls if c[0] != "endpoint.get"]

    # no secret in MLflow (params, tags, version tags) nor in the logs
    tags = mlflow.MlflowClient().get_model_version("tiny-azure", v2).tags
    assert tags["deployment.azureml.deployment"] == "green"
    everything = (
        json.dumps(
            [
                tags,
                [r.data.to_dictionary() for r in mlflow.search_runs(search_all_experiments=True, output_format="list")],
                second.detail,
            ]
        )
        + caplog.text
    )
    assert SECRET_KEY not in everything and SECRET_KEY[::-1] not in everything


def test_failed_smoke_test_leaves_traffic_on_the_old_deployment(store):
    v1, v2 = two_versions("tiny-azure-fail")
    client = RecordingMLClient(fail_smoke={"green"})
    target = AzureMLTarget(load_settings(None, {"AZUREML_ENDPOINT_NAME": "fail-ep"}), client=client)
    target.deploy("tiny-azure-fail", v1)
    with pytest.raises(DeploymentFailed, match="traffic is back on blue"):
        target.deploy("tiny-azure-fail", v2)
    assert client.traffic_history[-1] == {"blue": 100, "green": 0}
    assert ("fail-ep", "blue") in client.deployments
    assert target.current("tiny-azure-fail").version == v1
    assert "deployment.azureml.deployment" not in mlflow.MlflowClient().get_model_version("tiny-azure-fail", v2).tags


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown deployment target 'kubernetes'"):
        get_target("kubernetes")
