"""Endpoint throughput with the inference log on vs off, side by side (goal: on within 10 % of off).

`python -m serving serve` on 127.0.0.1, the bundled MiniLM with a zero-shot head, Made With ML texts, requests
of `--docs` documents from 8 threads. Each repeat runs both settings on fresh servers, in alternating order; the
log is a SQLite file (the default kind), and its rows are counted after the server stops (none may be lost).
Results -> bench/results/inference_log.json.

    python -m bench.bench_inference_log [--repeats 3] [--requests 200] [--docs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import pandas as pd

from bench.bench_limits import endpoint, load, summary
from bench.bench_serving import zero_shot_model
from bench.machine import new_results, write_results
from bench.madewithml import load_split
from registry.locations import REPO_ROOT
from serving.inference_log import read_window

RESULTS = REPO_ROOT / "bench" / "results" / "inference_log.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--docs", type=int, default=1, help="documents per request")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    results = new_results(settings=vars(args), off=[], on=[])
    train, test, descriptions = load_split()
    texts = list(pd.concat([train, test])["text"])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment("bench-inference-log")
        model_uri = zero_shot_model(descriptions, Path(tmp))
        for repeat in range(args.repeats):
            bodies = [
                {"inputs": {"text": [texts[(repeat * 997 + i * args.docs + j) % len(texts)] for j in range(args.docs)]}}
                for i in range(args.requests)
            ]
            for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                log_url = f"sqlite:///{tmp}/log-{repeat}.db"
                with endpoint(
                    model_uri, f"sqlite:///{tmp}/feedback.db", "--inference-log", log_url if mode == "on" else "off"
                ) as url:
                    load(url, "/invocations", bodies[:8], args.concurrency)  # warm-up
                    run = load(url, "/invocations", bodies, args.concurrency)
                if mode == "on":
                    now = datetime.now(timezone.utc)
                    logged = len(read_window(log_url, "bench-serving", now - timedelta(hours=1), now))
                    run.update({"rows_logged": logged, "rows_lost": (8 + args.requests) * args.docs - logged})
                results[mode].append(run)
                print(mode, json.dumps(run), flush=True)
    ratios = [on["throughput_rps"] / off["throughput_rps"] for on, off in zip(results["on"], results["off"])]
    results["summary"] = {
        "throughput_ratio_on_over_off": ratios,
        "ratio_mean": sum(ratios) / len(ratios),
        "throughput_rps": {m: summary(results[m], "throughput_rps") for m in ("off", "on")},
        "p99_ms": {m: summary(results[m], "p99_ms") for m in ("off", "on")},
    }
    print(json.dumps(results["summary"], indent=1))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
