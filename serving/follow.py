"""A local endpoint that follows the local deployment target: when the target records a new version of its model
(promotion, rollback), the endpoint loads that version beside the one it serves, checks it predicts, then swaps
the two in one assignment. Requests in flight finish on the model they started with; none fails during a swap.

The endpoint announces itself (URL, pid) under the deployment directory so the target can wait until every
running endpoint names the new version on `/health`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from registry.contract import CORE_COLUMNS

log = logging.getLogger(__name__)

SMOKE_TEXT = "Smoke test: is VAT due on consulting invoices sent to Germany in 2022?"


class ModelSlot:
    """The model an endpoint serves now; `current` is read once per request, `swap` replaces it atomically."""

    def __init__(self, model):
        self._model = model
        self._lock = threading.Lock()  # one swap at a time; readers never wait

    @property
    def current(self):
        return self._model

    def swap(self, model) -> None:
        with self._lock:
            self._model = model


def smoke_check(pyfunc) -> None:
    """A model that does not answer one document with the contract's columns is never swapped in."""
    out = pyfunc.predict(pd.DataFrame({"text": [SMOKE_TEXT]}))
    if len(out) != 1 or not set(CORE_COLUMNS) <= set(out.columns):
        raise RuntimeError(f"smoke prediction broke the contract: {out!r}")


def record_path(deploy_dir: Path, model_name: str) -> Path:
    """The local target's record of what it deployed for `model_name` (one JSON file per model)."""
    return Path(deploy_dir) / f"{model_name}.json"


def endpoints_dir(deploy_dir: Path, model_name: str) -> Path:
    """Where running endpoints that follow `model_name` announce themselves (one file per process)."""
    return Path(deploy_dir) / "endpoints" / model_name


def deployed_version(deploy_dir: Path, model_name: str) -> str | None:
    """The version the local target deployed, if it deployed one."""
    try:
        record = json.loads(record_path(deploy_dir, model_name).read_text())
    except (OSError, ValueError):
        return None
    return str(record["version"]) if record.get("status") == "deployed" else None


def running_endpoints(deploy_dir: Path, model_name: str) -> list[str]:
    """URLs of the live endpoints following `model_name`; announcements of dead processes are removed."""
    urls = []
    for path in sorted(endpoints_dir(deploy_dir, model_name).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            os.kill(int(entry["pid"]), 0)
        except (OSError, ValueError, KeyError):  # gone (or unreadable): not an endpoint any more
            path.unlink(missing_ok=True)
            continue
        urls.append(entry["url"])
    return urls


class DeploymentFollower:
    """Polls the deployment record (a stat per tick) and swaps in each newly deployed version."""

    def __init__(
        self, slot: ModelSlot, model_name: str, deploy_dir: Path, load: Callable[[str], object], interval: float = 0.25
    ):
        self.slot, self.model_name, self.deploy_dir = slot, model_name, Path(deploy_dir)
        self.load, self.interval = load, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deployment-follower", daemon=True)
        self._announcement: Path | None = None

    def start(self, url: str) -> "DeploymentFollower":
        folder = endpoints_dir(self.deploy_dir, self.model_name)
        folder.mkdir(parents=True, exist_ok=True)
        self._announcement = folder / f"{os.getpid()}.json"
        self._announcement.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._announcement:
            self._announcement.unlink(missing_ok=True)

    def check(self) -> bool:
        """Swap in the deployed version if it is not the one served; True when a swap happened. A version that
        does not load is tried again only when the record is written again."""
        wanted = deployed_version(self.deploy_dir, self.model_name)
        if wanted is None or wanted == self.slot.current.version:
            return False
        started = time.perf_counter()
        try:
            model = self.load(f"models:/{self.model_name}/{wanted}")
            smoke_check(model.pyfunc)
        except Exception:  # noqa: BLE001 - a bad version must never stop the endpoint serving the old one
            log.exception(
                "version %s of %s did not load; still serving version %s",
                wanted,
                self.model_name,
                self.slot.current.version,
            )
            return False
        previous = self.slot.current.version
        self.slot.swap(model)
        log.warning(
            "now serving %s version %s (was %s; loaded in %.1f s)",
            self.model_name,
            wanted,
            previous,
            time.perf_counter() - started,
        )
        return True

    def _run(self) -> None:
        path, seen = record_path(self.deploy_dir, self.model_name), None
        while not self._stop.wait(self.interval):
            try:
                stat = path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError:
                continue
            if stamp != seen:
                seen = stamp
                self.check()
