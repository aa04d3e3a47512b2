"""Registered-model names: checked once, before any work, against the registry's own rules and ours.

MLflow refuses '/' and ':' only at registration (after training); a name with a quote breaks the filter
strings of searches, a tab or newline registers but never resolves in a URI, '@' reads as an alias. Unity
Catalog (`databricks-uc` registries) wants `catalog.schema.model`.
"""

from __future__ import annotations

import re

MAX_LENGTH = 250  # the registry's name column holds 256; room for a derived name's suffix
FORBIDDEN = set("/:@'\"`\\")
UC_PART = re.compile(r"^[A-Za-z0-9_-]+$")


class InvalidModelName(ValueError):
    """A registered-model name the registry would refuse, or that could not be found again."""


def check_model_name(name: str, registry_uri: str | None = None) -> str:
    """`name` itself when it is usable as a registered-model name in `registry_uri` (default: MLflow's)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidModelName("the model name is empty")
    if name != name.strip():
        raise InvalidModelName(f"model name {name!r} starts or ends with whitespace")
    bad = sorted({c for c in name if c in FORBIDDEN or not c.isprintable()})
    if bad:
        raise InvalidModelName(
            f"model name {name!r} contains {', '.join(map(repr, bad))}; use letters, digits, '-', '_', '.' and spaces"
        )
    if len(name) > MAX_LENGTH:
        raise InvalidModelName(f"model name is {len(name)} characters long; at most {MAX_LENGTH}")
    if name in (".", "..") or name.startswith("../") or "/../" in name:
        raise InvalidModelName(f"model name {name!r} is not a valid name")
    if registry_uri is None:
        import mlflow

        registry_uri = mlflow.get_registry_uri()
    if (registry_uri or "").startswith("databricks-uc"):
        parts = name.split(".")
        if len(parts) != 3 or not all(UC_PART.match(p) for p in parts):
            raise InvalidModelName(
                f"model name {name!r}: a Unity Catalog registry needs catalog.schema.model, "
                "each part letters, digits, '_' or '-'"
            )
    return name


def name_filter(name: str) -> str:
    """`name='...'` for search filters, for a checked name (it holds no quote to escape)."""
    return f"name='{check_model_name(name, registry_uri='')}'"
