"""Registration → promotion: `lifecycle listen` (MLflow registry webhooks) vs `reconcile --watch` (polling).

A real `mlflow server` (SQLite store) on 127.0.0.1. Per repeat and mode a fresh registered model whose champion
predicts no label (the bundled MiniLM's zero-shot head with every threshold at 1.01), then a better version (the
same head at 0.5) is registered and judged by the controller on the Made With ML test split (the model's default
settings, ONNX export off). Time = from the registration call's return to the moment the champion alias names the
new version, seen by this script reading the registry every 0.2 s; split into waiting (until the controller's
run for that decision starts) and deciding (evaluate both, promote, deploy). Polling registers at a random moment
of the interval, as real registrations fall. Results -> bench/results/listener.json.

    python -m bench.bench_listener [--repeats 3] [--interval 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import requests

from bench.bench_limits import summary
from bench.bench_serving import zero_shot_classifier
from bench.machine import new_results, write_results
from bench.madewithml import LABELS, load_split
from lifecycle.config import WATCH_INTERVAL_S
from registry import conventions as C
from registry.locations import REPO_ROOT
from registry.settings import write_settings
from serving.local_server import free_port
from tests.lifecycle_helpers import register_variant
from tests.mlflow_server import mlflow_server

RESULTS = REPO_ROOT / "bench" / "results" / "listener.json"
SECRET = "bench-listener-secret"


def lifecycle(*args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=REPO_ROOT,
        env={**env, "LIFECYCLE_WEBHOOK_SECRET": SECRET},
        **popen,
    )


def prepare(name: str, classifier: Path, work: Path, eval_csv: Path) -> None:
    """A model whose champion predicts nothing, judged, deployed and cloned, so only the promotion is left."""
    register_variant(classifier, name, work, thresholds=1.01)
    write_settings(
        mlflow.MlflowClient(), name, data=str(eval_csv), labels=str(LABELS), text_columns="text", label_column="labels"
    )
    mlflow.MlflowClient().set_registered_model_tag(name, C.TAG_ONNX_ON_PROMOTION, "off")
    proc = lifecycle("reconcile", "--once", "--model-name", name, stdout=subprocess.DEVNULL)
    if proc.wait() != 0:
        raise RuntimeError(f"the first reconcile of {name} failed")


def promotion(name: str, classifier: Path, work: Path, timeout: float = 900) -> dict:
    """Register a better version; seconds until the champion alias names it, and where they went."""
    client = mlflow.MlflowClient()
    start = time.time()
    version = register_variant(classifier, name, work)
    registered = time.time()
    while client.get_registered_model(name).aliases.get(C.CHAMPION) != version:
        if time.time() - registered > timeout:
            raise TimeoutError(f"{name} version {version} not promoted within {timeout} s")
        time.sleep(0.2)
    promoted = time.time()
    while not (run_id := client.get_model_version(name, version).tags.get(C.TAG_CONTROLLER_RUN)):
        time.sleep(0.2)  # the decision's tags follow the alias within the same promotion
    decided_from = client.get_run(run_id).info.start_time / 1000
    return {
        "model": name,
        "version": version,
        "register_call_s": registered - start,
        "registration_to_promotion_s": promoted - registered,
        "waiting_s": decided_from - registered,
        "deciding_s": promoted - decided_from,
        "loadavg_1m": os.getloadavg()[0],
    }


def webhook_mode(names: list[str], classifier: Path, work: Path) -> list[dict]:
    port = free_port()
    args = [a for n in names for a in ("--model-name", n)]
    proc = lifecycle(
        "listen",
        *args,
        "--port",
        str(port),
        "--poll-interval",
        "3600",
        "--register-webhook",
        stdout=open(work / "listener.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:  # the catch-up pass over every model, before the clock starts
            try:
                passes = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["passes"]
                if len(passes) == len(names):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        time.sleep(3)  # the webhooks of the controller's own writes in those passes settle
        return [promotion(name, classifier, work) for name in names]
    finally:
        proc.terminate()
        proc.wait(300)


def polling_mode(names: list[str], classifier: Path, work: Path, interval: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    procs = [
        lifecycle(
            "reconcile",
            "--watch",
            "--interval",
            str(interval),
            "--model-name",
            name,
            stdout=open(work / f"watch-{name}.log", "w"),
            stderr=subprocess.STDOUT,
        )
        for name in names
    ]
    try:
        time.sleep(interval + 10)  # each watcher's first (empty) pass is done
        results = []
        for name in names:
            time.sleep(rng.uniform(0, interval))  # a registration falls anywhere in the watcher's interval
            results.append(promotion(name, classifier, work))
        return results
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="promotions per mode")
    p.add_argument("--interval", type=float, default=WATCH_INTERVAL_S, help="the polling baseline's interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    results = new_results(interval_s=args.interval, repeats=args.repeats)
    _, test, descriptions = load_split()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with mlflow_server(work) as url:
            os.environ.update(
                MLFLOW_TRACKING_URI=url,
                LIFECYCLE_DB=f"sqlite:///{work / 'lifecycle.db'}",
                LOCAL_DEPLOY_DIR=str(work / "deployments"),
            )
            mlflow.set_tracking_uri(url)
            mlflow.set_experiment("bench-listener")
            zero_shot_classifier(descriptions).save(work / "classifier")
            eval_csv = work / "test.csv"
            test.assign(labels=test["labels"].map("|".join))[["text", "labels"]].to_csv(eval_csv, index=False)
            for mode in ("webhook", "polling"):
                names = [f"{mode}-{r}" for r in range(args.repeats)]
                for name in names:
                    prepare(name, work / "classifier", work, eval_csv)
                print(f"{mode}: measuring", flush=True)
                runs = (
                    webhook_mode(names, work / "classifier", work)
                    if mode == "webhook"
                    else polling_mode(names, work / "classifier", work, args.interval, args.seed)
                )
                for run in runs:
                    print(json.dumps(run), flush=True)
                results[mode] = {
                    "runs": runs,
                    **{k: summary(runs, k) for k in ("registration_to_promotion_s", "waiting_s", "deciding_s")},
                }
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
