"""The feedback store: good rows stored and bad rows rejected with reasons, CLI import/export, two writers at once."""

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest

from serving.feedback import FeedbackRecord, FeedbackRejected, FeedbackStore, FeedbackWriter
from serving.feedback import store as feedback_store
from serving.feedback.__main__ import main
from tests.conftest import REPO, feedback_record

LABELS = ["vat", "payroll", "audit"]


def test_store_keeps_good_rows_and_rejects_bad_ones_with_reasons(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}")
    store.add(FeedbackRecord("p0", "clf", "1", "VAT on invoices", ["vat"], 5, scores={"vat": 0.9}))
    records = [
        feedback_record("p1"),
        feedback_record("p2", score=7),
        feedback_record("p3", text="   "),
        feedback_record("p4", predicted_labels=["vat", "fraud"]),
        feedback_record("p5", corrected_labels=["nonsense"]),
        feedback_record("p1", score=2),  # same prediction twice in one import
        feedback_record("p0"),  # already in the store
        feedback_record("p6", corrected_labels=[], score=1),  # "no label applies" is a valid correction
        feedback_record("", model_name=None),
    ]
    report = store.add_many(records, LABELS)
    assert report.accepted == 2
    reasons = {row: why for row, _, why in report.rejected}
    assert reasons == {
        2: ["score must be an integer from 1 to 5"],
        3: ["text is empty"],
        4: ["predicted_labels has labels the model does not know: ['fraud']"],
        5: ["corrected_labels has labels the model does not know: ['nonsense']"],
        6: ["duplicate prediction_id within this import"],
        7: ["prediction_id already has feedback in the store"],
        9: ["prediction_id is missing", "model_name is missing"],
    }
    stored = store.query()
    assert list(stored["prediction_id"]) == ["p0", "p1", "p6"]
    assert stored.loc[0, "scores"] == {"vat": 0.9}
    assert stored.loc[2, "corrected_labels"] == [] and stored.loc[1, "corrected_labels"] is None
    with pytest.raises(FeedbackRejected, match="already has feedback"):
        store.add(FeedbackRecord("p1", "clf", "1", "again", ["vat"], 3))
    assert len(store.query(model_name="clf", model_version="1")) == 3 and store.query(model_name="x").empty
    # ids are text: a numeric id from a JSON file and the same id as a string are one prediction
    assert store.add_many([feedback_record(12345)]).accepted == 1
    assert store.add_many([feedback_record(" 12345")]).lines() == [
        "row 1: prediction_id already has feedback in the store"
    ]


@pytest.fixture()
def _cli(capsys):
    """`python -m serving.feedback --db DB ...` in-process (the CLI's main, as __main__ runs it)."""

    def run(*args, db: str) -> subprocess.CompletedProcess:
        rc = main(["--db", db, *map(str, args)])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)

    return run


def test_cli_import_export_round_trip(tmp_path, _cli):
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    labels = REPO / "data" / "demo" / "labels.yaml"
    csv = tmp_path / "in.csv"
    pd.DataFrame(
        [
            {**feedback_record("c1"), "predicted_labels": "vat|tax_question", "corrected_labels": ""},
            {**feedback_record("c2"), "predicted_labels": '["payroll_tax"]', "corrected_labels": "[]", "score": "1"},
            {**feedback_record("c3"), "predicted_labels": "vat", "score": "five"},
        ]
    ).to_csv(csv, index=False)
    proc = _cli("import", str(csv), "--labels", str(labels), db=db)
    assert proc.returncode == 0, proc.stderr
    assert "stored 2 of 3" in proc.stdout
    assert "rejected row 4: score must be an integer from 1 to 5" in proc.stderr  # row 1 is the header

    proc = _cli(
        "add",
        "--prediction-id",
        "c9",
        "--model-name",
        "clf",
        "--model-version",
        "1",
        "--text",
        "Payroll",
        "--predicted-labels",
        "payroll_tax",
        "--score",
        "2",
        "--corrected-labels",
        "vat",
        "--labels",
        str(labels),
        db=db,
    )
    assert proc.returncode == 0 and "stored 1 of 1" in proc.stdout, proc.stderr

    out = tmp_path / "out.jsonl"
    assert _cli("export", str(out), db=db).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prediction_id"], r["predicted_labels"], r["corrected_labels"], r["score"]) for r in rows] == [
        ("c1", ["vat", "tax_question"], None, 4),
        ("c2", ["payroll_tax"], [], 1),
        ("c9", ["payroll_tax"], ["vat"], 2),
    ]

    # the export imports again into a fresh store; importing it twice stores nothing and says why
    db2 = f"sqlite:///{tmp_path / 'fb2.db'}"
    assert "stored 3 of 3" in _cli("import", str(out), "--labels", str(labels), db=db2).stdout
    again = _cli("import", str(out), "--labels", str(labels), db=db2)
    assert again.returncode == 2
    assert "error: nothing was stored" in again.stderr and "already has feedback" in again.stderr
    assert "Traceback" not in again.stderr
    missing = _cli("import", str(tmp_path / "nope.csv"), db=db2)
    assert missing.returncode == 2 and "feedback file not found" in missing.stderr


WRITER = """
import sys
from datetime import datetime, timezone
from serving.feedback import FeedbackRecord, FeedbackStore
store = FeedbackStore(sys.argv[1])
name, n = sys.argv[2], int(sys.argv[3])
for i in range(0, n, 5):  # batches and single adds interleaved with the other writer
    batch = [FeedbackRecord(f"{name}-{j}", "clf", "1", f"text {j}", ["vat"], 3) for j in range(i, i + 4)]
    report = store.add_many(batch)
    assert report.accepted == 4, report.lines()
    store.add(FeedbackRecord(f"{name}-{i + 4}", "clf", "1", "text", ["vat"], 5))
    store.add_many([FeedbackRecord("shared-0", "clf", "1", "text", ["vat"], 1)])  # both try the same id
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    FeedbackStore(db)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db, name, "40"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=400) == 0, proc.stderr.read()
    ids = list(FeedbackStore(db).query()["prediction_id"])
    assert len(ids) == len(set(ids)) == 81
    assert set(ids) == {f"{w}-{i}" for w in "ab" for i in range(40)} | {"shared-0"}


def test_one_bad_value_never_costs_the_good_rows(tmp_path, _cli):
    """Values that used to pass validation and crash the writer (the whole file lost): a NaN score exported as
    null, a CSV score of 4.0, a non-numeric score cell, `true` as a score, a dict source, an over-long id."""
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    labels = REPO / "data" / "demo" / "labels.yaml"
    csv = tmp_path / "in.csv"
    pd.DataFrame(
        [
            {**r, "predicted_labels": "vat"}
            for r in [
                {**feedback_record("ok1"), "scores": '{"vat": 0.7}'},
                {**feedback_record("float-score"), "score": "4.0"},
                {**feedback_record("high"), "scores": '{"vat": "high"}'},
                {**feedback_record("nan"), "scores": '{"vat": NaN}'},
                {**feedback_record("x" * 201)},
            ]
        ]
    ).to_csv(csv, index=False)
    proc = _cli("import", str(csv), "--labels", str(labels), db=db)
    assert proc.returncode == 0 and "stored 2 of 5" in proc.stdout, proc.stderr
    assert proc.stderr.count("scores must map label names to numbers from 0 to 1") == 2
    assert "prediction_id is longer than 200 characters" in proc.stderr and "Traceback" not in proc.stderr
    stored = FeedbackStore(db).query().set_index("prediction_id")
    assert stored.loc["float-score", "score"] == 4 and stored.loc["ok1", "scores"] == {"vat": 0.7}

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {**feedback_record("j-ok"), "scores": {"vat": 0.2}},
                {**feedback_record("j-null"), "scores": {"vat": None}},  # what an exported NaN looks like
                {**feedback_record("j-bool"), "score": True},
                {**feedback_record("j-source"), "source": {"app": "web"}},
            ]
        )
    )
    proc = _cli("import", str(jsonl), "--labels", str(labels), db=db)
    assert proc.returncode == 0 and "stored 1 of 4" in proc.stdout, proc.stderr
    assert "row 3: score must be an integer from 1 to 5" in proc.stderr
    assert "row 4: source must be text" in proc.stderr


def test_a_row_the_database_refuses_is_reported_and_the_others_stored(tmp_path, monkeypatch):
    """Defence in depth: a value that slips past validation and cannot be converted rejects its row only."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}")
    real = feedback_store._row_values
    monkeypatch.setattr(
        feedback_store,
        "_row_values",
        lambda row: (_ for _ in ()).throw(ValueError("boom")) if row["prediction_id"] == "b" else real(row),
    )
    report = store.add_many([feedback_record("a"), feedback_record("b"), feedback_record("c")], LABELS)
    assert report.accepted == 2 and report.lines() == ["row 2: cannot be stored: boom"]
    assert list(store.query()["prediction_id"]) == ["a", "c"]


def _raw_rows(db_file) -> list[tuple]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute(f"SELECT {', '.join(feedback_store.COLUMNS)} FROM feedback ORDER BY id").fetchall()


def test_the_writers_sqlite_insert_stores_what_sqlalchemy_stores(tmp_path):
    """One group commit through the writer thread's own sqlite3 connection: the same bytes in the same columns as
    SQLAlchemy's insert, and the same verdicts (a duplicate within the batch or in the store, an unknown label)."""
    at = datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=timezone.utc)
    items = [
        (feedback_record("a", scores={"vat": 0.8}, corrected_labels=["payroll"], timestamp=at), LABELS),
        (feedback_record("b", timestamp=at), LABELS),
        (feedback_record("a", score=1, timestamp=at), LABELS),  # twice in one transaction
        (feedback_record("c", corrected_labels=["fraud"], timestamp=at), LABELS),
        (feedback_record("p0", timestamp=at), LABELS),  # stored before
    ]
    rows, verdicts = {}, {}
    for way in ("sqlalchemy", "sqlite3"):
        store = FeedbackStore(f"sqlite:///{tmp_path / way}.db")
        store.add(feedback_record("p0", timestamp=at), LABELS)
        inserter = store.sqlite_inserter() if way == "sqlite3" else None
        verdicts[way] = store.add_each(items, inserter)
        if inserter:
            inserter.close()
        rows[way] = _raw_rows(tmp_path / f"{way}.db")
    assert verdicts["sqlite3"] == verdicts["sqlalchemy"]
    assert [bool(v) for v in verdicts["sqlite3"]] == [False, False, True, True, True]
    assert "already has feedback" in verdicts["sqlite3"][2][0] and "fraud" in verdicts["sqlite3"][3][0]
    assert rows["sqlite3"] == rows["sqlalchemy"] and [r[0] for r in rows["sqlite3"]] == ["p0", "a", "b"]
    assert FeedbackStore(f"sqlite:///{tmp_path / 'sqlite3'}.db").query().iloc[1]["timestamp"] == at.replace(tzinfo=None)


def test_the_writer_answers_each_request_after_its_commit_and_loses_nothing(tmp_path):
    """200 submissions from one event loop at once: the writer commits them in groups, each answer only once its
    row is in the file (read by another connection), one duplicate refused."""
    db = tmp_path / "fb.db"
    writer = FeedbackWriter(FeedbackStore(f"sqlite:///{db}"))

    async def one(i: int) -> list[str]:
        reasons = await writer.submit(feedback_record(f"p{min(i, 198)}"), LABELS)  # 198 and 199: one id
        if not reasons:
            assert f"p{min(i, 198)}" in {r[0] for r in _raw_rows(db)}
        return reasons

    async def all_at_once() -> list[list[str]]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    verdicts = asyncio.run(all_at_once())
    writer.close()
    assert sum(1 for v in verdicts if v) == 1 and "already has feedback" in next(v for v in verdicts if v)[0]
    assert len(_raw_rows(db)) == 199
