"""`AzureMLTarget`: the lifecycle controller's DeploymentTarget for an Azure ML managed online endpoint.

Blue/green: the new version goes to the idle deployment, is smoke-tested through a direct call to that
deployment, then traffic moves in the configured steps (each step checked through the endpoint); on success
the old deployment is deleted, on any failure traffic returns to the old one and the error is raised.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from registry.contract import CORE_COLUMNS, SCORES, TOP_LABEL
from registry.conventions import TAG_AZUREML_PREFIX
from serving.azureml.bundle import build_bundle
from serving.azureml.entities import deployment_entity, endpoint_entity, model_entity
from serving.azureml.settings import load_settings, require_workspace
from serving.config import AzureMLConfig
from serving.targets import Deployment

log = logging.getLogger(__name__)
SMOKE_REQUEST = {"input_data": ["Is VAT due on consulting invoices to Germany?"]}


class DeploymentFailed(RuntimeError):
    """The new deployment failed its smoke test or a traffic step; traffic is back on the old one."""


@dataclass
class AzureMLTarget:
    """Settings: `cfg`, else the YAML file `config` (or $AZUREML_CONFIG) overlaid with AZUREML_* variables."""

    cfg: AzureMLConfig | None = None
    client: object | None = None  # azure.ai.ml.MLClient; built from DefaultAzureCredential when None
    workdir: Path | None = None  # where bundles are written (a temp dir by default)
    smoke_request: dict = field(default_factory=lambda: dict(SMOKE_REQUEST))
    config: str | None = None
    name: str = "azureml"

    def __post_init__(self):
        if self.cfg is None:
            self.cfg = load_settings(self.config or os.environ.get("AZUREML_CONFIG") or None)

    def ml_client(self):
        if self.client is None:
            from azure.ai.ml import MLClient
            from azure.identity import DefaultAzureCredential

            require_workspace(self.cfg)
            self.client = MLClient(
                DefaultAzureCredential(), self.cfg.subscription_id, self.cfg.resource_group, self.cfg.workspace
            )
        return self.client

    def current(self, model_name: str) -> Deployment | None:
        endpoint = self._endpoint()
        live = _live(endpoint.traffic if endpoint else {})
        if not live:
            return None
        dep = self.ml_client().online_deployments.get(name=live, endpoint_name=self.cfg.endpoint_name)
        version = (dep.tags or {}).get("mlflow.model_version", "")
        if (dep.tags or {}).get("mlflow.model_name") != model_name:
            return None
        return Deployment(
            self.name,
            f"models:/{model_name}/{version}",
            version,
            "deployed",
            {"endpoint": self.cfg.endpoint_name, "deployment": live, "traffic": dict(endpoint.traffic)},
        )

    def deploy(self, model_name: str, version: str) -> Deployment:
        now = self.current(model_name)
        if now and now.version == str(version):
            return now
        client = self.ml_client()
        with tempfile.TemporaryDirectory() as tmp:
            bundle = build_bundle(model_name, str(version), Path(self.workdir or tmp) / f"{model_name}-{version}")
            registered = client.models.create_or_update(model_entity(bundle))
            endpoint = (
                self._endpoint() or client.online_endpoints.begin_create_or_update(endpoint_entity(self.cfg)).result()
            )
            old = _live(endpoint.traffic or {})
            idle = next(n for n in self.cfg.deployment_names if n != old)
            log.info("deploying %s v%s to %s/%s (live: %s)", model_name, version, self.cfg.endpoint_name, idle, old)
            model_ref = (
                f"azureml:{registered.name}:{registered.version}" if getattr(registered, "version", None) else None
            )
            client.online_deployments.begin_create_or_update(
                deployment_entity(self.cfg, bundle, idle, model_ref)
            ).result()
        steps = self._rollout(idle, old)
        if old:
            client.online_deployments.begin_delete(name=old, endpoint_name=self.cfg.endpoint_name).result()
        _record(model_name, str(version), {"endpoint": self.cfg.endpoint_name, "deployment": idle})
        return Deployment(
            self.name,
            f"models:/{model_name}/{version}",
            str(version),
            "deployed",
            {"endpoint": self.cfg.endpoint_name, "deployment": idle, "replaced": old, "traffic_steps": steps},
        )

    def _rollout(self, new: str, old: str | None) -> list[dict]:
        """Smoke-test `new` directly, then shift traffic step by step; on failure put all traffic back on `old`."""
        steps: list[dict] = []
        try:
            self._smoke(deployment=new)
            for step in self.cfg.traffic_steps if old else [100]:
                traffic = {new: step, old: 100 - step} if old else {new: 100}
                self._set_traffic(traffic)
                steps.append(traffic)
                self._smoke(deployment=None)
        except Exception as exc:
            if old:
                self._set_traffic({old: 100, new: 0})
            else:
                self._set_traffic({new: 0})
            raise DeploymentFailed(f"deployment {new} failed ({exc}); traffic is back on {old or 'nothing'}") from exc
        return steps

    def _set_traffic(self, traffic: dict[str, int]) -> None:
        self.ml_client().online_endpoints.begin_create_or_update(endpoint_entity(self.cfg, traffic)).result()

    def _smoke(self, deployment: str | None) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(self.smoke_request, f)
        raw = self.ml_client().online_endpoints.invoke(
            endpoint_name=self.cfg.endpoint_name, request_file=f.name, deployment_name=deployment
        )
        Path(f.name).unlink(missing_ok=True)
        check_answer(raw, expected=len(self.smoke_request["input_data"]))

    def _endpoint(self):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client().online_endpoints.get(name=self.cfg.endpoint_name)
        except ResourceNotFoundError:
            return None


def _record(model_name: str, version: str, where: dict[str, str]) -> None:
    """Where the version is served, as model-version tags (names only: keys never leave the Azure client)."""
    client = mlflow.MlflowClient()
    for key, value in where.items():
        client.set_model_version_tag(model_name, version, f"{TAG_AZUREML_PREFIX}{key}", value)


def _live(traffic: dict[str, int]) -> str | None:
    """The deployment taking most traffic (None when nothing is served)."""
    serving = {k: v for k, v in (traffic or {}).items() if v}
    return max(serving, key=serving.get) if serving else None


def check_answer(raw: str | bytes, expected: int) -> None:
    """A smoke answer must follow the contract: one prediction per document with labels, top label, scores."""
    answer = json.loads(raw)
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise ValueError(f"smoke test answer has no {expected} predictions: {str(raw)[:200]}")
    for p in predictions:
        if not {"prediction_id", *CORE_COLUMNS} <= set(p) or p[TOP_LABEL] not in p[SCORES]:
            raise ValueError(f"smoke test answer breaks the contract: {json.dumps(p)[:200]}")
