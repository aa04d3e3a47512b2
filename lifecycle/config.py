"""The controller's defaults; per-model values (margin, bootstrap, archived versions kept...) live in
registered-model tags (`registry.settings`) and are changed with `python -m lifecycle configure`."""

from __future__ import annotations

import os

from registry.errors import ConfigError
from registry.locations import tracking_uri

LEASE_TTL_S = float(os.environ.get("LIFECYCLE_LEASE_TTL_S", 120))  # a killed holder blocks others this long at most
WATCH_INTERVAL_S = 30.0
DEFAULT_DEPLOY_TARGET = "local"
ONNX_ON_PROMOTION = "dynamic"  # a new champion's ONNX export (int8, then partly and wholly fp32: export_ladder); "off"
LISTEN_PORT = 5002  # `python -m lifecycle listen` (the endpoint's default is 5001)
LISTEN_POLL_INTERVAL_S = 300.0  # every model is reconciled this often too: events missed, stage transitions, feedback
LISTEN_LEASE_RETRY_S = 5.0  # a model whose lease another controller holds is tried again after this
WEBHOOK_SECRET_ENV = "LIFECYCLE_WEBHOOK_SECRET"  # the variable holding the webhook's HMAC secret
WEBHOOK_TOLERANCE_S = 300.0  # deliveries signed longer ago (or ahead) than this are refused: Standard Webhooks' 5 min
RETRAIN_TIMEOUT_S = 4 * 3600.0  # a GRPO run the controller started is cancelled after this (its lease held meanwhile)


def lifecycle_db_url() -> str:
    """SQL database for the controller's lease and history: LIFECYCLE_DB, else the tracking store itself."""
    url = os.environ.get("LIFECYCLE_DB") or tracking_uri()
    if "://" not in url or url.split(":", 1)[0] in ("http", "https", "databricks", "file"):
        raise ConfigError(
            f"the tracking store {url} is not a SQL database; set LIFECYCLE_DB to a SQLAlchemy URL "
            "(e.g. postgresql://... or sqlite:///lifecycle.db) for the controller's lease and history"
        )
    return url
