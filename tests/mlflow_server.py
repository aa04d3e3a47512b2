"""A real `mlflow server` (SQLite store, local artifacts) on 127.0.0.1 for the webhook tests and benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cryptography.fernet import Fernet

from serving.local_server import free_port, wait_until_healthy
from tests.conftest import REPO

# The server's webhook settings for a listener on loopback: plain http and a private address are refused by
# default (SSRF protection); the webhook list is cached for 60 s by default, so a new webhook would wait that long.
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """Start the server, yield its URL, stop it (its whole process group: it runs uvicorn as a child)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(WEBHOOK_ENV, MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode())
    with open(root / "mlflow-server.log", "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--default-artifact-root",
                str(root / "artifacts"),
                "--no-serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, timeout=300)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
