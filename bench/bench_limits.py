"""Endpoint limits benchmark: /invocations p50/p99 at concurrency 1 vs 32 (one document per request), and
/feedback p50/p99 at concurrency 8 on a freshly started server (its first feedback request included), with the
stored rows counted afterwards, per HTTP stack (`serve --http`) and per client library, alternating; the CPU
seconds the server and the client spend per request are recorded beside the latencies. 127.0.0.1 only, bounded
request counts, repeats alternate the settings side by side; the bundled MiniLM with a zero-shot head on Made
With ML texts. Results -> bench/results/limits.json.

    python -m bench.bench_limits [--repeats 3] [--requests 40] [--feedback 400] [--skip-invocations]
    python -m bench.bench_limits --skip-invocations --baseline /path/to/other/checkout  # its server vs this one
    python -m bench.bench_limits --validation   # per-record feedback validation: plain rules vs the GX suite
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
import requests

from bench.bench_serving import percentile, zero_shot_model
from bench.madewithml import load_split
from registry.cli import ArgumentParser
from registry.locations import REPO_ROOT
from serving.config import HTTP_STACKS
from serving.feedback import FeedbackStore
from serving.feedback.store import COLUMNS
from serving.local_server import local_endpoint
from validation.feedback_data import validate_feedback
from validation.feedback_rules import record_reasons

RESULTS = REPO_ROOT / "bench" / "results" / "limits.json"
VALIDATION_RESULTS = REPO_ROOT / "bench" / "results" / "feedback_validation.json"


def validation_baseline(records: int) -> dict:
    """Milliseconds per single-record validation, in this process, first call (imports included) and the rest:
    the plain rules the /feedback route uses vs the great-expectations suite it ran before."""

    def timed(check) -> list[float]:
        times = []
        for i in range(records):
            record = {
                "prediction_id": f"p{i}",
                "model_name": "m",
                "model_version": "1",
                "text": "t",
                "predicted_labels": ["vat"],
                "scores": {"vat": 0.8},
                "score": 4,
                "corrected_labels": None,
                "source": "bench",
            }
            start = time.perf_counter()
            check(record)
            times.append(1000 * (time.perf_counter() - start))
        return times

    def gx(record: dict) -> None:
        validate_feedback(pd.DataFrame([record], columns=COLUMNS), ["vat", "payroll"])

    def plain(record: dict) -> None:
        record_reasons(record, ["vat", "payroll"])

    out = {}
    for name, check in (("plain", plain), ("great_expectations", gx)):
        times = timed(check)
        out[name] = {
            "first_ms": times[0],
            "p50_ms": percentile(times[1:], 50),
            "p99_ms": percentile(times[1:], 99),
            "records": records,
            "loadavg_1m": os.getloadavg()[0],
        }
    return out


@contextmanager
def endpoint(model_uri: str, feedback_db: str, *args: str, with_process: bool = False, code: Path = REPO_ROOT):
    """The endpoint's URL (and its process with `with_process`) while it runs; `code`: the checkout it runs from."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    options = ["--feedback-db", feedback_db, *args]
    with local_endpoint(model_uri, *options, log_level="WARNING", env=env, timeout=300, cwd=code) as (url, proc):
        yield (url, proc) if with_process else url


CLIENTS = ("requests", "http.client")


def load(
    url: str,
    route: str,
    bodies: list[dict],
    concurrency: int,
    keep_alive: bool = False,
    client: str = "requests",
    server_pid: int | None = None,
) -> dict:
    """Every body once, from `concurrency` threads; latency per request (ms) and the answers' status codes.
    `keep_alive`: each client thread keeps one connection (a `requests.Session`), as a real client would; else
    every request opens a new connection (the client's own cost is then part of each latency). `client`
    "http.client": the standard library's keep-alive connection per thread, a client that costs a fraction of
    `requests`' CPU per request (the client shares the server's cores, so its cost is part of every latency).
    With `server_pid`, the server's CPU seconds per request are recorded (Linux /proc)."""
    local = threading.local()
    host, port = url.removeprefix("http://").split(":")

    def one(body: dict) -> tuple[float, int]:
        if client == "http.client":
            conn = getattr(local, "conn", None) or http.client.HTTPConnection(host, int(port), timeout=300)
            local.conn = conn
            payload = json.dumps(body)
            start = time.perf_counter()
            conn.request("POST", route, payload, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            return 1000 * (time.perf_counter() - start), answer.status
        session = requests
        if keep_alive:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
        start = time.perf_counter()
        status = session.post(f"{url}{route}", json=body, timeout=300).status_code
        return 1000 * (time.perf_counter() - start), status

    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    server_cpu = cpu_seconds(server_pid) - server_cpu if server_pid else None
    latencies = [ms for ms, _ in results]
    served = [ms for ms, status in results if status < 300]
    statuses = {str(s): sum(1 for _, x in results if x == s) for s in sorted({s for _, s in results})}
    return {
        "route": route,
        "concurrency": concurrency,
        "keep_alive": keep_alive or client == "http.client",
        "client": client,
        "requests": len(bodies),
        "statuses": statuses,
        "throughput_rps": len(bodies) / wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "first_ms": latencies[0],
        "served_p50_ms": percentile(served, 50),
        "served_p99_ms": percentile(served, 99),
        "client_cpu_ms_per_request": 1000 * client_cpu / len(bodies),
        "server_cpu_ms_per_request": None if server_cpu is None else 1000 * server_cpu / len(bodies),
        "loadavg_1m": os.getloadavg()[0],
    }


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (0 without one)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=40, help="requests at concurrency 1 (8x as many at 32)")
    p.add_argument("--feedback", type=int, default=400, help="feedback requests per fresh server")
    p.add_argument("--max-pending", type=int, default=0, help="serve with --max-pending N (0: its default)")
    p.add_argument("--skip-feedback", action="store_true", help="measure /invocations only")
    p.add_argument("--skip-invocations", action="store_true", help="measure /feedback only")
    p.add_argument("--stacks", nargs="+", choices=list(HTTP_STACKS), default=list(HTTP_STACKS), help="serve --http")
    p.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout whose server is measured on /feedback beside this one's, alternating",
    )
    p.add_argument("--validation", action="store_true", help="only compare per-record validation (in-process)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if args.validation:
        results = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
            "validation": validation_baseline(50),
        }
        Path(args.out or VALIDATION_RESULTS).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=1))
        return 0

    load_before = os.getloadavg()
    train, test, descriptions = load_split()
    texts = list(pd.concat([train, test])["text"])
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before},
        "max_pending": args.max_pending or "default",
        "feedback_settings": {
            "stacks": args.stacks,
            "clients": args.clients,
            "requests": args.feedback,
            "baseline": str(args.baseline) if args.baseline else None,
        },
        "invocations": {"1": [], "32": []},
        "feedback": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment("bench-limits")
        model_uri = zero_shot_model(descriptions, Path(tmp))
        labels = list(descriptions)
        codes = {"this": REPO_ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
        for repeat in range(args.repeats):
            serve_args = ["--max-pending", str(args.max_pending)] if args.max_pending else []
            if not args.skip_invocations:
                with endpoint(model_uri, f"sqlite:///{tmp}/warm-{repeat}.db", *serve_args) as url:
                    docs = [
                        {"inputs": {"text": [texts[(repeat * 997 + i) % len(texts)]]}} for i in range(8 * args.requests)
                    ]
                    load(url, "/invocations", docs[:3], 1)  # warm-up
                    for concurrency in (1, 32) if repeat % 2 == 0 else (32, 1):
                        n = args.requests * (8 if concurrency == 32 else 1)
                        run = load(url, "/invocations", docs[:n], concurrency)
                        results["invocations"][str(concurrency)].append(run)
                        print(json.dumps(run), flush=True)
            if args.skip_feedback:
                continue
            settings = [(stack, client, code) for code in codes for client in args.clients for stack in args.stacks]
            for stack, client, code in settings if repeat % 2 == 0 else settings[::-1]:
                db = f"sqlite:///{tmp}/feedback-{repeat}-{stack}-{client}-{code}.db"
                # a fresh server per setting: its first /feedback is measured too
                with endpoint(model_uri, db, "--http", stack, with_process=True, code=codes[code]) as (url, proc):
                    bodies = [
                        {
                            "prediction_id": f"r{repeat}-{i}",
                            "score": 1 + i % 5,
                            "text": texts[i % len(texts)],
                            "predicted_labels": [labels[i % len(labels)]],
                            "corrected_labels": [labels[0]],
                            "scores": {labels[i % len(labels)]: 0.8},
                        }
                        for i in range(args.feedback)
                    ]
                    run = load(url, "/feedback", bodies, 8, keep_alive=True, client=client, server_pid=proc.pid)
                stored = FeedbackStore(db).query()
                run.update(
                    {
                        "code": code,
                        "http": stack,
                        "rows_stored": len(stored),
                        "rows_lost": run["statuses"].get("201", 0) - len(stored),
                    }
                )
                results["feedback"].append(run)
                print(json.dumps(run), flush=True)
    inv = results["invocations"]
    results["summary"] = {}
    if inv["1"]:
        results["summary"] = {
            "invocations_p99_ms": {c: summary(inv[c], "p99_ms") for c in inv},
            "invocations_p50_ms": {c: summary(inv[c], "p50_ms") for c in inv},
            "p99_ratio_32_over_1": [b["p99_ms"] / a["p99_ms"] for a, b in zip(inv["1"], inv["32"])],
            "invocations_served_p99_ms": {c: summary(inv[c], "served_p99_ms") for c in inv},
        }
    keys = ("p50_ms", "p99_ms", "first_ms", "throughput_rps", "server_cpu_ms_per_request", "client_cpu_ms_per_request")
    for code in ("this", "baseline"):
        for stack in args.stacks:
            for client in args.clients:
                runs = [r for r in results["feedback"] if (r["code"], r["http"], r["client"]) == (code, stack, client)]
                if runs:
                    name = f"feedback_{stack}_{client}" + ("_baseline" if code == "baseline" else "")
                    results["summary"][name] = {
                        **{k: summary(runs, k) for k in keys},
                        "rows_lost": sum(r["rows_lost"] for r in runs),
                        "requests": sum(r["requests"] for r in runs),
                    }
    results["machine"]["loadavg_after"] = os.getloadavg()
    out = Path(args.out or RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
