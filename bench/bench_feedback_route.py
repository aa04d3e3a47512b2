"""Where the /feedback route's CPU goes without HTTP: the endpoint app called as ASGI in this process, 8 requests
in flight, CPU seconds per request (all threads) for the app as served, the app with the store's write made a
no-op, the app with its access log on (info level, to /dev/null), the same route as a plain Starlette route
(no FastAPI, SQLAlchemy insert), the store's `add` alone (SQLAlchemy), its `add_each` through the writer's
`sqlite3` inserter (one record per commit), and a bare `sqlite3` insert + commit of the same columns (the floor
any SQLite store pays). Results -> bench/results/feedback_route.json.

    python -m bench.bench_feedback_route [--requests 2000] [--repeats 3]
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.machine import new_results, write_results
from registry.cli import ArgumentParser
from registry.locations import REPO_ROOT
from serving.endpoint import EndpointSettings, LoadedModel, RecentPredictions, create_app, feedback_record
from serving.feedback import FeedbackStore
from serving.scoring import decode_json

RESULTS = REPO_ROOT / "bench" / "results" / "feedback_route.json"
MODEL = LoadedModel(pyfunc=None, name="m", version="1", labels=("vat", "payroll", "audit"))
IN_FLIGHT = 8


def body(i: int) -> bytes:
    return json.dumps(
        {
            "prediction_id": f"p-{i}",
            "score": 1 + i % 5,
            "text": "Is VAT due on consulting invoices?",
            "predicted_labels": ["vat"],
            "corrected_labels": ["payroll"],
            "scores": {"vat": 0.8},
        }
    ).encode()


async def post(app, i: int) -> None:
    """One POST /feedback through the ASGI interface, as uvicorn would call it."""
    payload, sent, out = body(i), False, []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/feedback",
        "raw_path": b"/feedback",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.sleep(3600)  # no disconnect while the route runs

    async def send(message: dict) -> None:
        out.append(message)

    await app(scope, receive, send)
    assert out[0]["status"] == 201, out


async def cpu_ms_per_request(app, requests: int) -> float:
    async def wave(start: int) -> None:
        await asyncio.gather(*(post(app, start + k) for k in range(IN_FLIGHT)))

    await wave(10**9)  # warm-up
    start = time.process_time()
    for w in range(requests // IN_FLIGHT):
        await wave(w * IN_FLIGHT)
    return 1000 * (time.process_time() - start) / (requests // IN_FLIGHT * IN_FLIGHT)


def plain_route(db: str) -> Starlette:
    """The same route on Starlette alone: what FastAPI's layer costs."""
    store, recent, writer = FeedbackStore(db), RecentPredictions(10), ThreadPoolExecutor(1)

    async def feedback(request: Request) -> JSONResponse:
        record, names = feedback_record(decode_json(await request.body()), recent, MODEL)
        await asyncio.get_running_loop().run_in_executor(writer, lambda: store.add(record, label_names=names))
        return JSONResponse({"stored": True, "prediction_id": record["prediction_id"]}, status_code=201)

    return Starlette(routes=[Route("/feedback", feedback, methods=["POST"])])


def store_ms(db: str, records: int) -> float:
    store = FeedbackStore(db)
    start = time.process_time()
    for i in range(records):
        record = {**json.loads(body(i)), "model_name": "m", "model_version": "1", "source": "bench"}
        store.add(record, label_names=MODEL.labels)
    return 1000 * (time.process_time() - start) / records


def inserter_ms(db: str, records: int) -> float:
    store = FeedbackStore(db)
    inserter = store.sqlite_inserter()
    start = time.process_time()
    for i in range(records):
        record = {**json.loads(body(i)), "model_name": "m", "model_version": "1", "source": "bench"}
        assert store.add_each([(record, MODEL.labels)], inserter) == [[]]
    elapsed = time.process_time() - start
    inserter.close()
    return 1000 * elapsed / records


@contextmanager
def access_log_on():
    """The access log at info level, as `serve` runs by default, written to /dev/null."""
    access = logging.getLogger("serving.access")
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False  # one handler, as `serve` has
        try:
            yield
        finally:
            access.setLevel(logging.WARNING)
            access.propagate = True
            access.removeHandler(handler)


def sqlite_ms(path: str, records: int) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE f (id INTEGER PRIMARY KEY, pid TEXT UNIQUE, name TEXT, version TEXT, text TEXT, "
        "predicted TEXT, scores TEXT, score INT, corrected TEXT, source TEXT, at TEXT)"
    )
    start = time.process_time()
    for i in range(records):
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO f (pid, name, version, text, predicted, scores, score, corrected, source, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"p-{i}", "m", "1", "t", '["vat"]', '{"vat": 0.8}', 3, '["payroll"]', "bench", "2026-12-01"),
        )
        con.execute("COMMIT")
    return 1000 * (time.process_time() - start) / records


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.getLogger("serving.access").setLevel(logging.WARNING)  # as the served benchmarks run it
    results = new_results(requests=args.requests, repeats=args.repeats, in_flight=IN_FLIGHT)
    with tempfile.TemporaryDirectory() as tmp:

        def db(name: str) -> str:
            return f"sqlite:///{Path(tmp) / name}.db"

        async def routes(repeat: int) -> dict:
            """The apps, each on a fresh store, in an order that alternates between repeats."""
            apps = {
                "endpoint_app": lambda: create_app(MODEL, EndpointSettings(feedback_db=db(f"a{repeat}"))),
                "endpoint_app_store_noop": lambda: create_app(MODEL, EndpointSettings(feedback_db=db(f"b{repeat}"))),
                "endpoint_app_access_log": lambda: create_app(MODEL, EndpointSettings(feedback_db=db(f"f{repeat}"))),
                "plain_starlette_route": lambda: plain_route(db(f"c{repeat}")),
            }
            out = {}
            for name in list(apps)[:: 1 if repeat % 2 == 0 else -1]:
                noop = mock.patch.object(FeedbackStore, "add_each", lambda _store, items, *a: [[] for _ in items])
                with noop if name.endswith("noop") else access_log_on() if name.endswith("log") else nullcontext():
                    out[name] = await cpu_ms_per_request(apps[name](), args.requests)
            return out

        runs = [asyncio.run(routes(r)) for r in range(args.repeats)]
        results["cpu_ms_per_request"] = {k: [run[k] for run in runs] for k in runs[0]}
        results["cpu_ms_per_record"] = {
            "feedback_store_add": store_ms(db("d"), args.requests),
            "feedback_store_add_each_sqlite3": inserter_ms(db("g"), args.requests),
            "bare_sqlite3_insert_commit": sqlite_ms(str(Path(tmp) / "e.db"), args.requests),
        }
    print(json.dumps({k: results[k] for k in ("cpu_ms_per_request", "cpu_ms_per_record")}, indent=1))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
