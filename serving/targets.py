"""The deployment-target interface the lifecycle controller deploys through (local now; Azure ML by config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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


def get_target(name: str, **config) -> DeploymentTarget:
    """The deployment target called `name`: `azureml` (settings from `config=<yaml>` and AZUREML_* variables;
    `client=` injects an MLClient) or `local`."""
    from mlprojects.errors import ConfigError

    if name == "azureml":
        from serving.azureml.settings import load_settings  # azure-ai-ml is imported only when asked for
        from serving.azureml.target import AzureMLTarget

        return AzureMLTarget(load_settings(config.pop("config", None)), **config)
    if name == "local":
        target = globals().get("LocalTarget")
        if target is None:
            raise ConfigError("the local deployment target is not available in this build")
        config.pop("config", None)
        return target(**config)
    raise ConfigError(f"unknown deployment target {name!r}; known: local, azureml")
