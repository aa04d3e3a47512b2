"""Azure ML settings from a YAML file and AZUREML_* environment variables (the environment wins)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Mapping

import yaml

from registry.errors import ConfigError
from serving.config import AzureMLConfig

ENV_PREFIX = "AZUREML_"
_SECRET_WORDS = ("key", "secret", "password", "token", "credential")


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> AzureMLConfig:
    """Defaults < config file < AZUREML_<FIELD> variables. Secrets are refused: they never belong in config."""
    environ = os.environ if environ is None else environ
    values: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read Azure ML config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"Azure ML config {path} must be a mapping of setting -> value")
        values.update(loaded)
    known = {f.name: f for f in fields(AzureMLConfig)}
    for name in known:
        if f"{ENV_PREFIX}{name.upper()}" in environ:
            values[name] = environ[f"{ENV_PREFIX}{name.upper()}"]
    secret = [k for k in values if any(w in k.lower() for w in _SECRET_WORDS)]
    if secret:
        raise ConfigError(
            f"Azure ML config must not hold secrets ({secret}): authentication uses "
            "DefaultAzureCredential (az login, managed identity or AZURE_* variables)"
        )
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown Azure ML setting(s) {unknown}; known: {sorted(known)}")
    return _validated(AzureMLConfig(**{k: _coerce(k, v) for k, v in values.items()}))


def _coerce(name: str, value):
    if name in ("traffic_steps", "deployment_names") and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        if name == "traffic_steps":
            return [int(v) for v in value]
        if name in ("instance_count", "request_timeout_ms"):
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Azure ML setting {name} must be a number (or a comma list of numbers), got {value!r}"
        ) from None
    return value


def _validated(cfg: AzureMLConfig) -> AzureMLConfig:
    steps = cfg.traffic_steps
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"traffic_steps must rise strictly within 1..100 and end at 100, got {steps}")
    if len(cfg.deployment_names) != 2 or len(set(cfg.deployment_names)) != 2:
        raise ConfigError(f"deployment_names must be two different names (blue/green), got {cfg.deployment_names}")
    if cfg.instance_count < 1:
        raise ConfigError(f"instance_count must be at least 1, got {cfg.instance_count}")
    return cfg


def require_workspace(cfg: AzureMLConfig) -> None:
    """A live deployment needs the workspace coordinates (a dry run does not)."""
    missing = [n for n in ("subscription_id", "resource_group", "workspace") if not getattr(cfg, n)]
    if missing:
        raise ConfigError(
            "Azure ML workspace not configured: set "
            + ", ".join(f"{ENV_PREFIX}{n.upper()}" for n in missing)
            + " (or put them in the --config file)"
        )
