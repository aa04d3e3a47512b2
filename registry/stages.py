"""Whether this registry has the deprecated stages: Unity Catalog (`databricks-uc`) has none and refuses every
stage call, so there aliases and tags alone carry the lifecycle. Decided from the registry URI; the
`REGISTRY_STAGES` setting (on | off | auto) overrides it."""

from __future__ import annotations

import os

import mlflow
from mlflow import MlflowClient

from registry.errors import ConfigError

STAGES_SETTING = "REGISTRY_STAGES"
MODES = ("auto", "on", "off")
# Registry kinds by URI scheme (the part before '+' for SQLAlchemy drivers); a bare path is a file store.
WITH_STAGES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
WITHOUT_STAGES = ("databricks-uc", "uc")


def registry_kind(registry_uri: str) -> str:
    """The scheme of a registry URI; a one-line ConfigError for a kind this platform does not know."""
    head, colon, _ = registry_uri.partition(":")
    named = head.lower() in WITHOUT_STAGES + ("databricks",)  # `databricks-uc` alone is a complete URI
    scheme = head.split("+", 1)[0].lower() if (colon and len(head) > 1) or named else ""  # else a path
    if scheme not in WITH_STAGES + WITHOUT_STAGES:
        raise ConfigError(
            f"unknown registry kind {scheme!r} in registry URI {registry_uri!r}; known: "
            f"{', '.join(k for k in WITH_STAGES + WITHOUT_STAGES if k)} "
            f"(or set {STAGES_SETTING}=on|off)"
        )
    return scheme


def stages_enabled(registry_uri: str, mode: str | None = None) -> bool:
    """True when stages are mirrored: `mode` (default: the REGISTRY_STAGES setting) on/off, or auto from the URI."""
    mode = (mode if mode is not None else os.environ.get(STAGES_SETTING, "auto")).strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"{STAGES_SETTING}={mode!r} is not a stage mode; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode == "on"
    return registry_kind(registry_uri) not in WITHOUT_STAGES


def client_stages_enabled(client: MlflowClient) -> bool:
    """The stage mode of the registry this client writes to."""
    return stages_enabled(getattr(client, "_registry_uri", None) or mlflow.get_registry_uri())
