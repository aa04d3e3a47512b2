"""The deployment-target interface the lifecycle controller deploys through (local now; Azure ML by config)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from registry.errors import ConfigError


@dataclass
class Deployment:
    """What a target reports after a deploy or rollback."""

    target: str
    model_uri: str  # e.g. models:/tax-doc-classifier/3 (a concrete version, never an alias)
    version: str
    status: str  # "deployed" | "failed" | "rolled_back"
    detail: dict = field(default_factory=dict)


@runtime_checkable
class DeploymentTarget(Protocol):
    """A place a registered model version is served from. Implementations must be idempotent:
    deploying the version that is already live is a no-op that returns its Deployment."""

    name: str

    def deploy(self, model_name: str, version: str) -> Deployment:
        """Serve `model_name` version `version`; raise on failure and leave the previous deployment serving."""
        ...

    def current(self, model_name: str) -> Deployment | None:
        """The deployment now serving `model_name`, if any."""
        ...


# Target name -> "module:Class"; imported on use so the Azure SDK is only loaded for the Azure target.
TARGETS: dict[str, str] = {
    "local": "serving.local_target:LocalTarget",
    "azureml": "serving.azureml.target:AzureMLTarget",
}


def get_target(name: str, **options) -> DeploymentTarget:
    """The deployment target a registered model names in its `deploy.target` tag."""
    if name not in TARGETS:
        raise ConfigError(f"unknown deployment target {name!r}; known: {sorted(TARGETS)}")
    module, cls = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
