"""What every benchmark records about the machine it ran on: timings on a shared 2-core box mean little without it."""

from __future__ import annotations

import os
import platform

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
