"""Start-up helpers for a local endpoint process: a free loopback port, and waiting until it answers /health."""

from __future__ import annotations

import socket
import subprocess
import time

import requests

from registry.errors import PlatformError


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
