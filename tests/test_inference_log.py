"""The inference log: the background writer (batches, text or hash, retention, a full queue drops instead of
blocking) on SQLite, and the endpoint logging every prediction it serves, flushed when it is stopped."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import requests

from serving.inference_log import COLUMNS, InferenceLog, read_window
from tests.serving_model import build_served_model, running_endpoint

NOW = datetime.now(timezone.utc)


def record(i: int, at: datetime = NOW, text: str = "abc") -> dict:
    return {
        "prediction_id": f"p{i}",
        "model_name": "m",
        "model_version": "2",
        "text": text,
        "labels": ["vat"],
        "scores": {"vat": 0.9, "payroll": 0.1},
        "latency_ms": 12.5,
        "at": at,
    }


def test_rows_are_written_in_batches_with_the_text_or_only_its_hash(tmp_path):
    for keep_text in (True, False):
        url = f"sqlite:///{tmp_path / f'log-{keep_text}.db'}"
        log = InferenceLog(url, keep_text=keep_text, flush_interval_s=0.05)
        log.append([record(i) for i in range(3)])
        log.append([record(3, text="another")])
        log.close()
        assert (log.written, log.dropped, log.failed) == (4, 0, 0)
        rows = read_window(url, "m", NOW - timedelta(seconds=1), NOW + timedelta(seconds=1))
        assert list(rows["prediction_id"]) == ["p0", "p1", "p2", "p3"]
        first = rows.iloc[0]
        assert (
            first["text_sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )  # sha256("abc")
        assert first["text"] == ("abc" if keep_text else None)
        assert (first["model_version"], first["labels"], first["scores"], first["latency_ms"]) == (
            "2",
            ["vat"],
            {"vat": 0.9, "payroll": 0.1},
            12.5,
        )
        assert read_window(url, "other-model", NOW - timedelta(days=1), NOW + timedelta(days=1)).empty


def test_retention_deletes_only_rows_older_than_the_setting(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = InferenceLog(url, retention_days=7, flush_interval_s=0.05)  # its start-up pruning ran on an empty table
    log.append([record(0, NOW - timedelta(days=8)), record(1, NOW - timedelta(days=6)), record(2, NOW)])
    log.close()
    window = (NOW - timedelta(days=30), NOW + timedelta(days=1))
    assert list(read_window(url, "m", *window)["prediction_id"]) == ["p0", "p1", "p2"]
    restarted = InferenceLog(url, retention_days=7)  # a writer prunes when it starts
    restarted.close()
    assert list(read_window(url, "m", *window)["prediction_id"]) == ["p1", "p2"]
    assert restarted.prune(now=NOW + timedelta(days=2)) == 1  # p1 is 8 days old by then
    assert list(read_window(url, "m", *window)["prediction_id"]) == ["p2"]


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_request(tmp_path, monkeypatch):
    writing, release = threading.Event(), threading.Event()
    original = InferenceLog._write

    def slow_write(self, batch):  # a database that hangs
        writing.set()
        release.wait(10)
        original(self, batch)

    monkeypatch.setattr(InferenceLog, "_write", slow_write)
    log = InferenceLog(f"sqlite:///{tmp_path / 'log.db'}", max_queued=2, flush_interval_s=0.05)
    log.append([record(0)])
    assert writing.wait(10)  # the writer holds record 0 and hangs
    start = time.perf_counter()
    log.append([record(i) for i in range(1, 11)])
    appended_in = time.perf_counter() - start
    assert log.dropped == 8  # two fit in the queue
    release.set()
    log.close()
    assert (log.written, log.dropped) == (3, 8)
    print(f"10 appends against a full queue: {1000 * appended_in:.2f} ms")  # not asserted: tests never time


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    return build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)


def test_the_endpoint_logs_every_prediction_it_serves(served, tmp_path):
    url = f"sqlite:///{tmp_path / 'inference_log.db'}"
    answers = []
    with running_endpoint(served, tmp_path, "--inference-log", url) as endpoint:
        for texts in (["Is VAT due on consulting invoices?", "Payroll tax memo"], ["Transfer pricing file 2023"]):
            answer = requests.post(f"{endpoint['url']}/invocations", json={"inputs": {"text": texts}}, timeout=60)
            assert answer.status_code == 200
            answers.append(answer.json())
        assert requests.post(f"{endpoint['url']}/invocations", json={"inputs": {}}, timeout=60).status_code == 400
    # stopped right after the last request: what was still queued is written on the way out
    rows = read_window(
        url,
        served.name,
        datetime.now(timezone.utc) - timedelta(hours=1),
        datetime.now(timezone.utc) + timedelta(minutes=1),
    )
    served_predictions = [p for a in answers for p in a["predictions"]]
    assert list(rows["prediction_id"]) == [p["prediction_id"] for p in served_predictions]
    assert list(rows["text"]) == [
        "Is VAT due on consulting invoices?",
        "Payroll tax memo",
        "Transfer pricing file 2023",
    ]
    for (_, row), prediction in zip(rows.iterrows(), served_predictions):
        assert (row["model_name"], row["model_version"]) == (served.name, served.version)
        assert row["labels"] == prediction["labels"] and row["scores"] == pytest.approx(prediction["scores"])
        assert row["label_set"] == prediction["label_set"] == "model"
        assert row["latency_ms"] > 0
    assert rows["latency_ms"].iloc[0] == rows["latency_ms"].iloc[1]  # one request, one latency


def test_a_log_from_before_the_label_set_column_is_read_as_is_and_its_writer_adds_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    log = InferenceLog(url, flush_interval_s=0.05)
    log.append([record(0)])
    log.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:  # the table as it was before label_set was kept
        conn.execute("ALTER TABLE inference_log DROP COLUMN label_set")
    old = read_window(url, "m", NOW - timedelta(seconds=1), NOW + timedelta(seconds=1))  # a reader changes nothing
    assert list(old["prediction_id"]) == ["p0"] and pd.isna(old["label_set"].iloc[0])
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert "label_set" not in {r[1] for r in conn.execute("PRAGMA table_info(inference_log)")}
    log = InferenceLog(url, flush_interval_s=0.05)  # the writer adds the column
    log.append([{**record(1), "label_set": "request"}])
    log.close()
    rows = read_window(url, "m", NOW - timedelta(seconds=1), NOW + timedelta(seconds=1))
    assert list(rows["prediction_id"]) == ["p0", "p1"]
    assert pd.isna(rows["label_set"].iloc[0]) and rows["label_set"].iloc[1] == "request"


def test_reading_a_log_no_endpoint_has_written_yet_gives_no_rows_and_creates_no_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'never_written.db'}"
    rows = read_window(url, "m", NOW - timedelta(hours=1), NOW)
    assert rows.empty and list(rows.columns) == COLUMNS
    with sqlite3.connect(tmp_path / "never_written.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
