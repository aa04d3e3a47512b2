"""Serving defaults: the local endpoint, the local deployment target, Spark batch scoring, Azure ML."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from registry.locations import REPO_ROOT

SERVE_HOST = "127.0.0.1"
SERVE_PORT = 5001
# the endpoint's HTTP stack: name -> (uvicorn HTTP protocol, event loop). httptools parses in C and uvloop runs the
# loop in C: the /feedback benchmark's server spends less CPU per request than on pure-Python h11 and asyncio
HTTP_STACKS = {"httptools": ("httptools", "uvloop"), "h11": ("h11", "asyncio")}
SERVE_HTTP = "httptools"
LOCAL_SWAP_TIMEOUT_S = 120.0  # how long the local target waits for running endpoints to serve a new version
BATCH_SPARK_MASTER = "local[*]"
BATCH_ENV_MANAGER = "local"  # spark_udf's env_manager; "local" scores with a model cached per Python worker
BATCH_ARROW_RECORDS = 2048  # spark.sql.execution.arrow.maxRecordsPerBatch: documents per pyfunc call


def deploy_dir() -> Path:
    """Where the local deployment target records what it serves (one JSON file per model)."""
    return Path(os.environ.get("LOCAL_DEPLOY_DIR") or REPO_ROOT / "deployments")


@dataclass
class AzureMLConfig:
    """Azure ML workspace and rollout settings; from a YAML file and/or AZUREML_<FIELD> environment variables.
    Holds no secret: authentication is azure-identity's DefaultAzureCredential, endpoint keys stay in Azure."""

    subscription_id: str = ""
    resource_group: str = ""
    workspace: str = ""
    endpoint_name: str = "tax-doc-classifier"
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    traffic_steps: list[int] = field(default_factory=lambda: [10, 100])
    deployment_names: list[str] = field(default_factory=lambda: ["blue", "green"])
    image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    request_timeout_ms: int = 10_000
