"""Spark batch scoring on local[2] (one SparkSession for the module), checked against the plain pyfunc, and the
`batch_score` entry point through `mlflow run`."""

from __future__ import annotations

import json
import os

import mlflow
import pandas as pd
import pytest

from registry.errors import ConfigError, DataError
from registry.lookup import artifact_files
from serving.batch_score import (
    _MODELS,
    cached_model,
    local_threads,
    main,
    read_input,
    score,
    spark_session,
    text_columns_for,
)
from tests.conftest import cli_args
from tests.serving_model import build_served_model
from tests.test_sft_stage import mlflow_run


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    model = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    mlflow.set_tracking_uri(model.tracking_uri)
    return model


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def docs(tmp_path_factory, demo_frame) -> str:
    path = tmp_path_factory.mktemp("docs") / "docs.csv"
    demo_frame.head(24).to_csv(path, index=False)  # bodies with commas, quotes and newlines
    return str(path)


def test_spark_scores_match_the_pyfunc_and_carry_model_and_time(served, spark, docs, tmp_path):
    source = read_input(spark, docs).repartition(2)  # two tasks, one per local[2] core
    out = tmp_path / "scored"
    with score(spark, served.name, served.version, source, ["title", "body"]) as scored:
        scored.write.parquet(str(out))
    scored = pd.read_parquet(out).sort_values("id").reset_index(drop=True)

    expected_input = pd.read_csv(docs).sort_values("id").reset_index(drop=True)
    assert len(scored) == len(expected_input)
    assert {
        "id",
        "title",
        "body",
        "labels",
        "predicted_labels",
        "top_label",
        "scores",
        "label_set",
        "model_name",
        "model_version",
        "scored_at",
    } <= set(scored.columns)
    assert set(scored["model_version"]) == {served.version} and set(scored["model_name"]) == {served.name}
    assert set(scored["label_set"]) == {"model"}
    assert scored["scored_at"].nunique() == 1 and str(scored["scored_at"].dtype).startswith("datetime64")

    pyfunc = mlflow.pyfunc.load_model(f"models:/{served.name}/{served.version}")
    expected = pyfunc.predict(expected_input[["title", "body"]])
    for got, want in zip(scored.itertuples(), expected.itertuples()):
        scores = dict(got.scores)
        assert set(scores) == set(want.scores)
        assert max(abs(scores[k] - v) for k, v in want.scores.items()) < 1e-4
        # the tiny random encoder scores labels nearly alike: compare the top score, not the arg-max's name
        assert abs(scores[got.top_label] - want.scores[want.top_label]) < 1e-4
        assert set(got.predicted_labels) <= set(scores)


def test_zero_shot_labels_and_json_input(served, spark, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["VAT on invoices", "Loan interest from the bank"]))
    fruit = {"apple": "Apples and orchards.", "bank": "Banks, loans and interest."}
    with score(spark, served.name, served.version, read_input(spark, str(path)), ["text"], fruit, 0.5) as scored:
        rows = scored.collect()
    assert len(rows) == 2
    for row in rows:
        assert set(row.scores) == set(fruit) and row.top_label in fruit
        assert list(row.predicted_labels) == [l for l, s in row.scores.items() if s >= 0.5]


def test_bad_inputs_are_clear_errors(spark, tmp_path):
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_input(spark, str(tmp_path / "docs.xlsx"))
    with pytest.raises(DataError, match="cannot read"):
        read_input(spark, str(tmp_path / "missing.parquet"))
    with pytest.raises(DataError, match=r"needs a 'text' column or the columns \['title', 'body'\]"):
        text_columns_for(["id", "summary"], [], ["title", "body"])
    with pytest.raises(DataError, match=r"text column\(s\) \['body'\] not in the input"):
        text_columns_for(["id", "title"], ["title", "body"], [])
    assert text_columns_for(["id", "title", "body"], [], ["title", "body"]) == ["title", "body"]
    assert text_columns_for(["text", "title", "body"], [], ["title", "body"]) == ["text"]


def test_label_embeddings_are_computed_once_per_loaded_model(served):
    """What makes spark_udf cheap: the pyfunc embeds its label descriptions on the first batch only."""
    pyfunc = mlflow.pyfunc.load_model(f"models:/{served.name}/{served.version}")
    model = pyfunc.unwrap_python_model().classifier.model
    n_labels = len(pyfunc.unwrap_python_model().classifier.labels)
    calls = []
    embed = model.embed
    model.embed = lambda texts, *a, **k: (calls.append(len(texts)), embed(texts, *a, **k))[1]
    for batch in (["a", "b", "c"], ["d", "e"], ["f"]):
        pyfunc.predict(pd.DataFrame({"text": batch}))
    assert calls.count(n_labels) == 1 and calls.count(3) == 1 and len(calls) == 4


def test_batch_score_entry_point(served, docs, tmp_path):
    out = tmp_path / "entry-out"
    proc = mlflow_run(
        "batch_score",
        {"model_uri": f"models:/{served.name}@champion", "input": docs, "output": str(out), "spark_master": "local[2]"},
        served.tracking_uri,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"scored 24 documents with {served.name} version {served.version}" in proc.stdout
    assert len(pd.read_parquet(out)) == 24
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.run_name = 'batch_score'", output_format="list"
    )[0]
    assert run.data.metrics["rows"] == 24 and run.data.params["model_version"] == served.version


def test_bad_column_is_one_readable_line(served, spark, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.tracking_uri)
    path = tmp_path / "bad.csv"
    pd.DataFrame({"summary": ["x"]}).to_csv(path, index=False)
    args = cli_args(
        model_uri=f"models:/{served.name}@champion", input=path, output=tmp_path / "o", spark_master="local[2]"
    )
    rc = main(args)
    assert rc == 2 and "error: input needs a 'text' column or the columns ['title', 'body']" in capsys.readouterr().err
    rc = main([*args, "--threshold", "abc"])
    assert rc == 2 and "error: threshold must be a number in (0, 1), got 'abc'" in capsys.readouterr().err


def test_a_python_worker_loads_the_model_once(served, spark):
    """What keeps Spark at pandas speed: the pyfunc is loaded once per Python worker, not per task, and the
    tasks running at once share the cores out."""
    with artifact_files(f"models:/{served.name}/{served.version}") as path:
        assert cached_model(str(path), 1) is cached_model(str(path), 1)
    cores = os.cpu_count() or 1
    assert local_threads(spark, 1) == cores and local_threads(spark, 8) == max(1, cores // 2)


def test_scoring_leaves_no_model_copy_behind(served, spark, tmp_path, monkeypatch):
    """A model not on this file system (a remote store: here a local one made to look remote) is downloaded
    for the job and removed with the `with`; the worker forgets a model whose files are gone."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    monkeypatch.setattr("registry.lookup._in_place", lambda uri: None)
    source = spark.createDataFrame(pd.DataFrame({"text": ["VAT on invoices"]}))
    with score(spark, served.name, served.version, source, ["text"]) as scored:
        assert len(list(scratch.rglob("MLmodel"))) == 1
        assert scored.collect()[0].top_label
    assert not list(scratch.rglob("MLmodel"))

    gone = tmp_path / "gone"
    _MODELS[(str(gone), 1)] = object()
    with artifact_files(f"models:/{served.name}/{served.version}") as path:
        cached_model(str(path), 1)
    assert (str(gone), 1) not in _MODELS
