"""azure-ai-ml v2 entities for the endpoint and its blue/green deployments, and their YAML for `az ml ... -f`.

The YAML is the SDK's own serialisation of the entities, so it is valid by construction; tests load it back
with `load_online_endpoint` / `load_online_deployment`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from azure.ai.ml.entities import (
    CodeConfiguration,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineRequestSettings,
)

from serving.azureml.bundle import Bundle
from serving.config import AzureMLConfig


def endpoint_entity(cfg: AzureMLConfig, traffic: dict[str, int] | None = None) -> ManagedOnlineEndpoint:
    return ManagedOnlineEndpoint(
        name=cfg.endpoint_name,
        auth_mode="key",
        traffic=traffic or {},
        description="Semantic dual-encoder document classifier (MLflow pyfunc, score.py)",
    )


def model_entity(bundle: Bundle) -> Model:
    """A custom model (not `mlflow_model`): the explicit score.py loads it, no-code MLflow serving is avoided."""
    return Model(
        path=str(bundle.model_dir),
        name=bundle.model_name,
        version=bundle.version,
        type="custom_model",
        description=f"MLflow pyfunc {bundle.artifact}, serving models:/{bundle.model_name}/{bundle.version}",
        tags={
            "mlflow.model_name": bundle.model_name,
            "mlflow.model_version": bundle.version,
            "mlflow.artifact": bundle.artifact,
        },
    )


def deployment_entity(
    cfg: AzureMLConfig, bundle: Bundle, name: str, model: Model | str | None = None
) -> ManagedOnlineDeployment:
    """`model` may be a registered model id (azureml:name:version); by default the local model directory."""
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=cfg.endpoint_name,
        model=model or model_entity(bundle),
        environment=Environment(
            name=f"{bundle.model_name}-scoring", image=cfg.image, conda_file=str(bundle.conda_file)
        ),
        code_configuration=CodeConfiguration(code=str(bundle.code_dir), scoring_script="score.py"),
        instance_type=cfg.instance_type,
        instance_count=cfg.instance_count,
        environment_variables={
            "MODEL_NAME": bundle.model_name,
            "MODEL_VERSION": bundle.version,
            "MODEL_ARTIFACT": bundle.artifact,
        },
        request_settings=OnlineRequestSettings(request_timeout_ms=cfg.request_timeout_ms),
        tags={"mlflow.model_name": bundle.model_name, "mlflow.model_version": bundle.version},
    )


def write_yaml(entity, path: Path) -> Path:
    """The entity's SDK serialisation as YAML; local paths made relative to the YAML file (as `az ml` reads them)."""
    data = json.loads(json.dumps(entity._to_dict()))
    _relativise(data, path.parent.resolve())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _relativise(node, base: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("path", "code", "conda_file") and isinstance(value, str) and os.path.isabs(value):
                node[key] = os.path.relpath(value, base)
            else:
                _relativise(value, base)
    elif isinstance(node, list):
        for item in node:
            _relativise(item, base)
