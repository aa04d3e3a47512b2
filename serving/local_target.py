"""The local deployment target: loads the version, runs a smoke prediction, records it as live, and waits until
every running local endpoint of the model (`python -m serving serve --model models:/NAME@champion`) names it on
`/health`.

The record (one JSON file per model under `deploy_dir()`) is what a local endpoint follows (serving/follow.py);
it is replaced atomically, so a crash leaves either the old deployment or the new one, never half a file. An
endpoint that cannot swap in time gets the old record back and the deploy fails: the old version keeps serving.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import requests

from registry.loading import load_pyfunc
from serving.config import LOCAL_SWAP_TIMEOUT_S, deploy_dir
from serving.follow import record_path, running_endpoints, smoke_check
from serving.targets import Deployment


class LocalTarget:
    name = "local"

    def __init__(self, state_dir: str | Path | None = None, swap_timeout: float = LOCAL_SWAP_TIMEOUT_S):
        self.state_dir = Path(state_dir or deploy_dir())
        self.swap_timeout = swap_timeout

    def _path(self, model_name: str) -> Path:
        return record_path(self.state_dir, model_name)

    def current(self, model_name: str) -> Deployment | None:
        path = self._path(model_name)
        if not path.exists():
            return None
        return Deployment(**{k: v for k, v in json.loads(path.read_text()).items() if k != "previous"})

    def deploy(self, model_name: str, version: str) -> Deployment:
        current = self.current(model_name)
        if current and current.version == str(version) and current.status == "deployed":
            return current
        uri = f"models:/{model_name}/{version}"
        try:
            smoke_check(load_pyfunc(uri))
        except RuntimeError as exc:
            raise RuntimeError(f"{uri}: {exc}") from None
        deployment = Deployment(
            self.name,
            uri,
            str(version),
            "deployed",
            {"deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
        previous = self._path(model_name).read_text() if self._path(model_name).exists() else None
        self._write(
            model_name, json.dumps({**asdict(deployment), "previous": asdict(current) if current else None}, indent=2)
        )
        started = time.perf_counter()
        endpoints = running_endpoints(self.state_dir, model_name)
        lagging = self._wait_for_endpoints(endpoints, str(version))
        if lagging:
            if previous is not None:
                self._write(model_name, previous)  # endpoints keep (or go back to) the old version
            raise RuntimeError(
                f"local endpoint(s) {', '.join(lagging)} did not serve version {version} within "
                f"{self.swap_timeout:.0f} s; the previous deployment stays (see the endpoint's log)"
            )
        deployment.detail.update({"endpoints": endpoints, "swap_s": round(time.perf_counter() - started, 2)})
        return deployment

    def _wait_for_endpoints(self, urls: list[str], version: str) -> list[str]:
        """Poll each endpoint's /health until it names `version`; the ones that did not in time. Nothing
        listening at a URL (its process gone, the pid reused) is not an endpoint to wait for."""
        deadline, waiting = time.monotonic() + self.swap_timeout, list(urls)
        while waiting and time.monotonic() < deadline:
            waiting = [url for url in waiting if _serves(url) not in (version, GONE)]
            if waiting:
                time.sleep(0.1)
        return waiting

    def _write(self, model_name: str, text: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self._path(model_name))


GONE = ""  # what _serves says when nothing listens at the URL


def _serves(url: str) -> str | None:
    """The version an endpoint names on /health: None while it does not answer, GONE when nothing listens."""
    try:
        return str(requests.get(f"{url}/health", timeout=2).json()["model"]["version"])
    except requests.ConnectionError as exc:
        return None if isinstance(exc, requests.ConnectTimeout) else GONE
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
