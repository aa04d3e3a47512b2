"""Serving benchmark: the local endpoint's throughput and p50/p99 latency at concurrency 1 and 8 (one document per
request, 127.0.0.1 only, bounded request counts), torch vs ONNX pyfunc; batch scoring docs/s, Spark local[2] vs
the plain pandas pyfunc. Real Made With ML texts (bench/madewithml.py split), the bundled MiniLM encoder with the
zero-shot head (serving cost does not depend on training). Results -> bench/results/serving.json.

    python -m bench.bench_serving [--requests 64] [--batch-docs 600] [--model-uri models:/name/1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import requests

from bench.madewithml import load_split
from mlprojects.config import TrainConfig
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import build_model
from mlprojects.model.registered import log_classifier
from registry.cli import ArgumentParser
from registry.conventions import TAG_KIND
from registry.locations import REPO_ROOT
from registry.log_model import register
from registry.lookup import resolve_version
from serving.azureml.bundle import serving_artifact
from serving.batch_score import score, spark_session
from serving.local_server import local_endpoint

RESULTS = REPO_ROOT / "bench" / "results" / "serving.json"


def zero_shot_classifier(descriptions: dict[str, str]) -> Classifier:
    """The bundled MiniLM with its zero-shot head: frozen encoder, thresholds 0.5 (serving cost does not depend
    on training)."""
    return Classifier(
        build_model(TrainConfig(encoder="minilm"), lora=False), descriptions, np.full(len(descriptions), 0.5)
    )


def zero_shot_model(descriptions: dict[str, str], root: Path) -> str:
    """Log and register the zero-shot classifier as a torch pyfunc; its URI."""
    with mlflow.start_run(run_name="bench-serving-model"):
        info = log_classifier(zero_shot_classifier(descriptions), ["Transformers for text classification."])
    version = register(info.model_uri, "bench-serving", {TAG_KIND: "bench"}).version
    return f"models:/bench-serving/{version}"


def onnx_model(torch_uri: str, eval_frame: pd.DataFrame, tmp: Path) -> str | None:
    """The same model exported by the `export_onnx` stage; None when no ONNX version ended up linked to it."""
    data = tmp / "eval.csv"
    eval_frame.assign(labels=eval_frame["labels"].map("|".join))[["text", "labels"]].to_csv(data, index=False)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlprojects.export_onnx",
            "--model-uri",
            torch_uri,
            "--eval-data",
            str(data),
            "--text-columns",
            "text",
            "--label-column",
            "labels",
        ],
        cwd=REPO_ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )

    name, version = resolve_version(torch_uri)
    artifact = serving_artifact(name, version)
    return artifact if artifact != f"models:/{name}/{version}" else None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def endpoint_load(url: str, texts: list[str], concurrency: int, n_requests: int) -> dict:
    """n_requests single-document requests from `concurrency` threads; latency per request, throughput overall."""
    session = requests.Session()

    def one(i: int) -> float:
        start = time.perf_counter()
        r = session.post(f"{url}/invocations", json={"inputs": {"text": [texts[i % len(texts)]]}}, timeout=120)
        r.raise_for_status()
        return time.perf_counter() - start

    for i in range(3):  # warm-up
        one(i)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "throughput_rps": n_requests / wall,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "mean_ms": 1000 * statistics.fmean(latencies),
    }


def bench_endpoint(model_uri: str, texts: list[str], n_requests: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with local_endpoint(model_uri, log_level="WARNING", env=env, timeout=300) as (url, _):
        return [endpoint_load(url, texts, c, n_requests * (2 if c > 1 else 1)) for c in (1, 8)]


def bench_batch(model_uri: str, texts: list[str]) -> dict:
    """docs/s over the same documents: plain pyfunc.predict on one pandas frame vs Spark local[2] (write included)."""
    frame = pd.DataFrame({"text": texts})
    start = time.perf_counter()
    mlflow.pyfunc.load_model(model_uri).predict(frame)
    pandas_s = time.perf_counter() - start

    spark = spark_session("local[2]")
    name, version = resolve_version(model_uri)
    source = spark.createDataFrame(frame).repartition(2)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with score(spark, name, version, source, ["text"]) as scored:
            scored.write.parquet(str(Path(tmp) / "out"))
        spark_s = time.perf_counter() - start
    spark.stop()
    return {
        "docs": len(texts),
        "pandas_pyfunc_docs_per_s": len(texts) / pandas_s,
        "spark_local2_docs_per_s": len(texts) / spark_s,
        "pandas_seconds": pandas_s,
        "spark_seconds": spark_s,
        "note": "both include loading the model (Spark: once per task, 2 tasks)",
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=64, help="requests at concurrency 1 (twice as many at 8)")
    p.add_argument("--batch-docs", type=int, default=600)
    p.add_argument("--model-uri", default="", help="benchmark this registered torch model instead")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    train, test, descriptions = load_split()
    texts = list(pd.concat([train, test])["text"])
    with tempfile.TemporaryDirectory() as tmp:
        if not args.model_uri:
            uri = f"sqlite:///{tmp}/mlflow.db"
            os.environ["MLFLOW_TRACKING_URI"] = uri
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench-serving")
        torch_uri = args.model_uri or zero_shot_model(descriptions, Path(tmp))
        models = {"torch": torch_uri}
        if onnx_uri := onnx_model(torch_uri, test, Path(tmp)):
            models["onnx"] = onnx_uri
        results = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before},
            "models": models,
            "endpoint": {},
            "batch": {},
        }
        for flavour, model_uri in models.items():
            print(f"endpoint, {flavour}: {model_uri}", flush=True)
            results["endpoint"][flavour] = bench_endpoint(model_uri, texts, args.requests)
            print(json.dumps(results["endpoint"][flavour], indent=1), flush=True)
            results["batch"][flavour] = bench_batch(model_uri, texts[: args.batch_docs])
            print(json.dumps(results["batch"][flavour], indent=1), flush=True)
        if "onnx" not in models:
            results["onnx"] = "not measured: the export_onnx stage linked no ONNX version to the model"
    results["machine"]["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
