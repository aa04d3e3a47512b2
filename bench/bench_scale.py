"""SFT training throughput (documents/s) per worker count: one process against Ray Train DDP workers.

    python -m bench.bench_scale                      # MiniLM, 256 Made With ML documents, 2 epochs, 2 repeats
    python -m bench.bench_scale --docs 64 --repeats 1 --out /tmp/x.json

Every configuration trains the same documents with the same global batch through the same trial loop
(`mlprojects.training.trial.run_trial`); documents/s = fit documents / training seconds of one epoch (validation,
model loading and Ray start-up excluded). Epoch 1 warms up; epoch 2 is the measured one. The machine's load is
recorded before and after each run: on a shared machine only ratios measured side by side in one run mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import machine_info
from bench.madewithml import load_split
from mlprojects.config import RayConfig, ScaleConfig, TrainConfig
from mlprojects.training.distributed import torch_trainer
from mlprojects.training.ray_cluster import start_ray
from mlprojects.training.trial import TrialData, run_trial
from registry.cli import cli_entry

RESULTS = Path(__file__).resolve().parent / "results"
MEASURED_EPOCH = 2


def one_process(data: TrialData, threads: int) -> float:
    """Training seconds of the measured epoch in this process (no Ray), `threads` torch threads."""
    torch.set_num_threads(threads)
    reports = []
    run_trial({}, data, None, lambda metrics, checkpoint=None: reports.append(metrics))
    return reports[MEASURED_EPOCH - 1]["train_s"]


def ray_workers(
    data: TrialData, workers: int, storage: Path, scale: ScaleConfig | None = None, datasets: dict | None = None
) -> float:
    """Training seconds of the measured epoch on rank 0 of a Ray Train job (by default 1 CPU and torch thread per
    worker); `datasets` are streamed to the workers."""
    from ray.train import RunConfig

    run_config = RunConfig(storage_path=str(storage), name=f"bench-scale-{workers}-{time.time_ns()}")
    scale = scale or ScaleConfig(num_workers=workers)
    result = torch_trainer(data, scale, run_config, datasets=datasets).fit()
    if result.error:
        raise result.error
    reports = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    return reports[MEASURED_EPOCH - 1]["train_s"]


def timed_run(name: str, repeat: int, docs: int, seconds: float, load_before: tuple) -> dict:
    """One measured run, with the machine's load before and after it (the box is shared)."""
    print(f"{name}: {docs / seconds:.1f} documents/s (load {load_before[0]:.1f})", flush=True)
    return {
        "repeat": repeat,
        "train_s": seconds,
        "docs_per_s": docs / seconds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def summarise(runs: dict[str, list[dict]]) -> dict:
    return {
        name: {
            "docs_per_s_mean": float(np.mean([r["docs_per_s"] for r in rows])),
            "docs_per_s_min": float(np.min([r["docs_per_s"] for r in rows])),
            "docs_per_s_max": float(np.max([r["docs_per_s"] for r in rows])),
        }
        for name, rows in runs.items()
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_scale", description=__doc__)
    p.add_argument("--docs", type=int, default=256, help="fit documents (Made With ML train split)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--storage", default="/tmp/bench_scale_ray")
    p.add_argument("--out", default=str(RESULTS / "scale.json"))
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train, test, descriptions = load_split()
    cfg = TrainConfig(max_epochs=MEASURED_EPOCH, batch_size=args.batch_size)
    fit, val = train.head(args.docs), test.head(16)  # validation only to complete the loop; not measured
    data = TrialData(cfg.to_params() | {"lora_target_modules": None}, fit, val, descriptions, 1)
    lengths = fit["text"].str.split().str.len()
    runs = {"one process, 1 thread": [], "one process, 2 threads": [], "Ray Train, 2 workers × 1 thread": []}
    start_ray(RayConfig(local_num_cpus=2))
    for repeat in range(args.repeats):
        for name in runs:
            load_before = os.getloadavg()
            if name.startswith("Ray"):
                seconds = ray_workers(data, 2, Path(args.storage))
            else:
                seconds = one_process(data, 1 if "1 thread" in name else 2)
            runs[name].append(timed_run(name, repeat, len(fit), seconds, load_before))
    summary = summarise(runs)
    out = {
        "encoder": cfg.encoder,
        "fit_docs": len(fit),
        "words_per_doc_mean": float(lengths.mean()),
        "max_length": cfg.max_length,
        "batch_size": cfg.batch_size,
        "labels": len(descriptions),
        "measured_epoch": MEASURED_EPOCH,
        "machine": machine_info(),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
