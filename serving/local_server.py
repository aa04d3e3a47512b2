"""Start-up helpers for a local endpoint process: a free loopback port, waiting until it answers /health, and the
endpoint itself run as `python -m serving serve` (the pipeline's demo, benchmarks and tests start it so)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterator

import requests

from registry.errors import PlatformError
from registry.locations import REPO_ROOT


class EndpointStartError(PlatformError):
    """The endpoint process exited, or did not become healthy in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, proc: subprocess.Popen, timeout: float = 180, path: str = "/health") -> None:
    """Poll `url` + `path` until it answers OK; fail at once with the server's output if the process exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            stream = proc.stderr or proc.stdout
            output = stream.read()[-2000:] if stream else ""
            raise EndpointStartError(f"the local endpoint exited with code {proc.returncode}: {output}")
        try:
            if requests.get(f"{url}{path}", timeout=2).ok:
                return
        except requests.RequestException:  # not listening yet
            pass
        time.sleep(0.5)  # also after a not-ready answer (e.g. 503 while loading): no busy loop
    raise EndpointStartError(f"{url} did not become healthy within {timeout:.0f} s")


@contextlib.contextmanager
def local_endpoint(
    model_uri: str,
    *options: str,
    log_level: str | None = None,
    env: dict | None = None,
    output: int | IO = subprocess.DEVNULL,
    timeout: float = 180,
    cwd: Path = REPO_ROOT,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m serving serve --model <model_uri> <options>` on a free 127.0.0.1 port: (its URL, the process)
    once it answers /health; stopped afterwards. Its stderr goes to a pipe read only when it fails to start, or
    with its stdout to `output` when that is a file; a server with a busy access log needs `log_level` WARNING
    or a file, or the unread pipe fills and blocks it. `cwd`: the checkout whose `serving` runs (a benchmark
    serves an older one beside this one)."""
    port = free_port()
    level = ["--log-level", log_level] if log_level else []
    command = [sys.executable, "-m", "serving", *level, "serve", "--model", model_uri, "--port", str(port), *options]
    stderr = subprocess.PIPE if output == subprocess.DEVNULL else subprocess.STDOUT
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, timeout)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)
