"""A virtualenv of its own for Microsoft's `azureml-inference-server-http` (its pinned opentelemetry clashes
with the platform's), with a model's scoring requirements: runs score.py locally exactly as Azure ML does.

    python -m serving.azureml.inference_venv .venv-azmlinfsrv --model models:/<name>@champion
Created once; later calls install only requirements it does not have yet.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registry.cli import ArgumentParser, cli_entry, registered_uri_arg
from registry.lookup import resolve_version
from serving.azureml.bundle import INFERENCE_SERVER, build_bundle, scoring_requirements

MARKER = "installed-requirements.txt"


def missing_requirements(venv: str | Path, requirements: list[str]) -> list[str]:
    """Requirements (and the inference server) this venv was not given yet."""
    venv = Path(venv).resolve()
    marker = venv / MARKER
    have = set(marker.read_text().splitlines()) if marker.exists() and (venv / "bin" / "python").exists() else set()
    return [r for r in sorted(set(requirements) | {INFERENCE_SERVER}) if r not in have]


def ensure_venv(venv: str | Path, requirements: list[str]) -> Path:
    """The venv's python; `python -m venv` + pip install when the requirements are not all there yet."""
    venv = Path(venv).resolve()
    python = venv / "bin" / "python"
    marker = venv / MARKER
    missing = missing_requirements(venv, requirements)
    if not missing:
        return python
    have = set(marker.read_text().splitlines()) if marker.exists() else set()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *missing], check=True)
    marker.write_text("\n".join(sorted(have | set(missing))))
    return python


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="python -m serving.azureml.inference_venv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("venv")
    p.add_argument(
        "--model", required=True, type=registered_uri_arg, help="registered model whose scoring requirements to install"
    )
    args = p.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(*resolve_version(args.model), tmp)
        python = ensure_venv(args.venv, scoring_requirements(bundle.model_dir))
    print(f"{python} ready in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
