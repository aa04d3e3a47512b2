"""`RecordingMLClient`: a test double of azure.ai.ml.MLClient (no Azure is reached, ever).

It records every control-plane call, validates each entity with the SDK's own schema (serialise, then load
back with `load_online_endpoint` / `load_online_deployment`), keeps endpoint and deployment state, and answers
`invoke` by running the deployed MLflow model through the same request parser score.py uses. A deployment
named in `fail_smoke` answers with a broken reply, to test that traffic goes back to the old deployment.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import mlflow
import yaml
from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.core.exceptions import ResourceNotFoundError

from serving.scoring import answer

SECRET_KEY = "RECORDED-SECRET-PRIMARY-KEY-0123456789"  # what get_keys hands out; must never leave the client


class _Done:
    def __init__(self, value=None):
        self.value = value

    def result(self):
        return self.value


def _sdk_round_trip(entity, loader):
    """Serialise with the SDK and load it back: the SDK's own validation of what we would send."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "entity.yml"
        path.write_text(yaml.safe_dump(json.loads(json.dumps(entity._to_dict()))))
        return loader(source=str(path))


@dataclass
class RecordingMLClient:
    fail_smoke: set[str] = field(default_factory=set)
    calls: list[tuple] = field(default_factory=list)
    endpoints: dict = field(default_factory=dict)
    deployments: dict = field(default_factory=dict)
    models_registered: list = field(default_factory=list)
    _loaded: dict = field(default_factory=dict)

    def __post_init__(self):
        self.models = SimpleNamespace(create_or_update=self._create_model)
        self.online_endpoints = SimpleNamespace(
            get=self._get_endpoint,
            begin_create_or_update=self._put_endpoint,
            invoke=self._invoke,
            get_keys=self._get_keys,
        )
        self.online_deployments = SimpleNamespace(
            get=self._get_deployment, begin_create_or_update=self._put_deployment, begin_delete=self._delete_deployment
        )

    @property
    def traffic_history(self) -> list[dict]:
        return [c[1]["traffic"] for c in self.calls if c[0] == "endpoint.begin_create_or_update" and c[1]["traffic"]]

    def _create_model(self, model):
        self.calls.append(("models.create_or_update", {"name": model.name, "version": model.version}))
        self.models_registered.append(model)
        self._loaded[(model.name, str(model.version))] = mlflow.pyfunc.load_model(str(model.path))
        return model

    def _get_endpoint(self, name):
        self.calls.append(("endpoint.get", {"name": name}))
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        return self.endpoints[name]

    def _put_endpoint(self, endpoint):
        checked = _sdk_round_trip(endpoint, load_online_endpoint)
        assert checked.auth_mode == "key"
        self.calls.append(
            ("endpoint.begin_create_or_update", {"name": endpoint.name, "traffic": dict(endpoint.traffic or {})})
        )
        self.endpoints[endpoint.name] = endpoint
        return _Done(endpoint)

    def _get_keys(self, name):
        return SimpleNamespace(primary_key=SECRET_KEY, secondary_key=SECRET_KEY[::-1])

    def _get_deployment(self, name, endpoint_name):
        if (endpoint_name, name) not in self.deployments:
            raise ResourceNotFoundError(f"deployment {name} not found")
        return self.deployments[(endpoint_name, name)]

    def _put_deployment(self, deployment):
        checked = _sdk_round_trip(deployment, load_online_deployment)
        assert checked.code_configuration.scoring_script == "score.py"
        assert (Path(deployment.code_configuration.code) / "score.py").exists()
        model = deployment.model
        key = tuple(model.split(":")[1:]) if isinstance(model, str) else (model.name, str(model.version))
        assert key in self._loaded, f"deployment refers to unregistered model {model}"
        self.calls.append(
            (
                "deployment.begin_create_or_update",
                {"name": deployment.name, "model": key, "env": dict(deployment.environment_variables)},
            )
        )
        self.deployments[(deployment.endpoint_name, deployment.name)] = deployment
        return _Done(deployment)

    def _delete_deployment(self, name, endpoint_name):
        self.calls.append(("deployment.begin_delete", {"name": name}))
        del self.deployments[(endpoint_name, name)]
        return _Done()

    def _invoke(self, endpoint_name, request_file=None, deployment_name=None, **kwargs):
        self._get_keys(endpoint_name)  # like the SDK: the key is fetched and used inside the client only
        traffic = self.endpoints[endpoint_name].traffic or {}
        name = deployment_name or max(traffic, key=traffic.get)
        self.calls.append(("endpoint.invoke", {"deployment": deployment_name}))
        if name in self.fail_smoke:
            return json.dumps({"error": "model failed to load"})
        env = self.deployments[(endpoint_name, name)].environment_variables
        model = self._loaded[(env["MODEL_NAME"], env["MODEL_VERSION"])]
        return json.dumps(
            {
                "predictions": answer(model, Path(request_file).read_text())[1],
                "model": {"name": env["MODEL_NAME"], "version": env["MODEL_VERSION"]},
            }
        )
