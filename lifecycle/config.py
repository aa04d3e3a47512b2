"""The controller's defaults; per-model values (margin, bootstrap, archived versions kept...) live in
registered-model tags (`registry.settings`) and are changed with `python -m lifecycle configure`."""

from __future__ import annotations

import os

from registry.errors import ConfigError
from registry.locations import tracking_uri

LEASE_TTL_S = float(os.environ.get("LIFECYCLE_LEASE_TTL_S", 120))  # a killed holder blocks others this long at most
WATCH_INTERVAL_S = 30.0
DEFAULT_DEPLOY_TARGET = "local"
ONNX_ON_PROMOTION = "dynamic"  # a new champion's ONNX export (int8, fp32 when int8 fails its gates); "off"


def lifecycle_db_url() -> str:
    """SQL database for the controller's lease and history: LIFECYCLE_DB, else the tracking store itself."""
    url = os.environ.get("LIFECYCLE_DB") or tracking_uri()
    if "://" not in url or url.split(":", 1)[0] in ("http", "https", "databricks", "file"):
        raise ConfigError(
            f"the tracking store {url} is not a SQL database; set LIFECYCLE_DB to a SQLAlchemy URL "
            "(e.g. postgresql://... or sqlite:///lifecycle.db) for the controller's lease and history"
        )
    return url
