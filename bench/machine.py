"""What every benchmark records about the machine it ran on: timings on a shared 2-core box mean little without it."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch


def machine_info() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": list(os.getloadavg()),
    }


def new_results(**settings) -> dict:
    """A results record: when, on what machine (load before the run), with which settings."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(), **settings}


def write_results(results: dict, out: str | Path) -> None:
    """The load after the run beside the load before it, then the results file."""
    results.setdefault("machine", {})["load_avg_after"] = list(os.getloadavg())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
