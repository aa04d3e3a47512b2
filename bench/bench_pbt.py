"""Benchmark: PBT vs random search (Ray Tune, same trials × epochs budget) on the Made With ML split.

    python -m bench.bench_pbt --trials 4 --epochs 4 [--unit steps --interval 13] [--repeats 3]

Ray samples the initial configurations unseeded, so repeats differ in where each search starts; with --repeats
every method's runs are listed and summarised (mean, standard deviation).

Validation is carved from the 80 % training part (stratified 15 %, seed 42), the 20 % test part is only used
to score each method's best trial. Results go to bench/results/pbt.json, written after each method.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.madewithml import SEED, load_split
from mlprojects.config import PBTConfig, RayConfig, TrainConfig
from mlprojects.data import stratified_split
from mlprojects.training.pbt import best_classifier, run_tuning
from registry.cli import ArgumentParser

OUT = Path(__file__).resolve().parent / "results" / "pbt.json"


def main() -> None:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--methods", default="pbt,random")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--unit", default=PBTConfig.perturbation_unit, help="perturbation unit: epochs or steps")
    p.add_argument("--interval", type=int, default=PBTConfig.perturbation_interval, help="perturbation interval")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--storage", default="/tmp/bench_pbt_ray")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    train_all, test, descriptions = load_split()
    train, val = stratified_split(train_all, 0.15, SEED)
    cfg = TrainConfig(encoder="minilm", max_epochs=args.epochs, seed=SEED)
    pbt = PBTConfig(
        population=args.trials,
        cpus_per_trial=args.cpus_per_trial,
        cluster=RayConfig(storage_path=args.storage),
        perturbation_unit=args.unit,
        perturbation_interval=args.interval,
    )
    report = {
        "dataset": "madewithml",
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "trials": args.trials,
        "epochs": args.epochs,
        "encoder": "all-MiniLM-L6-v2 (bundled)",
        "cpus_per_trial": args.cpus_per_trial,
        "pbt": {
            k: getattr(pbt, k)
            for k in (
                "perturbation_interval",
                "perturbation_unit",
                "quantile_fraction",
                "resample_probability",
                "synch",
                "learning_rate",
            )
        },
        "methods": {},
    }
    for _ in range(args.repeats):
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            outcome = run_tuning(cfg, pbt, train, val, descriptions, search=method, name=f"bench-{method}-{int(t0)}")
            wall = time.perf_counter() - t0
            scores = best_classifier(cfg, outcome, descriptions, ["text"]).f1_scores(test)
            run = {
                "best_val_f1_macro": outcome.best_metrics["f1_macro"],
                "best_epoch": outcome.best_metrics["epoch"],
                "test_f1_macro": scores["f1_macro"],
                "test_f1_weighted": scores["f1_weighted"],
                "wall_s": round(wall, 1),
                "exploits": len(outcome.perturbations),
                "best_hparams": outcome.best_hparams,
            }
            print(json.dumps({method: run}, indent=2), flush=True)
            if args.repeats == 1:
                report["methods"][method] = run
            else:
                runs = report["methods"].setdefault(method, {"runs": []})["runs"]
                runs.append(run)
                report["methods"][method]["summary"] = summary(runs)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))


def summary(runs: list[dict]) -> dict:
    keys = ("best_val_f1_macro", "test_f1_macro", "wall_s", "exploits")
    return {
        k: {"mean": float(np.mean([r[k] for r in runs])), "sd": float(np.std([r[k] for r in runs], ddof=1))}
        for k in keys
    } | {"n": len(runs)}


if __name__ == "__main__":
    main()
