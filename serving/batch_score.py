"""Stage `batch_score`: score a CSV/Parquet/JSON table with Spark and write Parquet with the predictions.

    mlflow run . -e batch_score -P model_uri=models:/tax-doc-classifier@champion -P input=docs.csv -P output=out/

Scoring is an iterator pandas UDF. With `env_manager=local` (the default) each Python worker loads the pyfunc
once and keeps it for every later task and batch (Spark reuses its Python workers), and the pyfunc embeds its
label descriptions once per loaded model; the cores are shared out over the tasks that run at once
(tasks x inference threads = cores), so the workers do not fight over them. Any other `env_manager` (virtualenv,
uv, conda) goes through `mlflow.pyfunc.spark_udf`, which rebuilds the model's environment and serves it per task.
Output columns: the input's, `predicted_labels`, `top_label`, `scores` (map label -> probability),
`model_name`, `model_version`, `scored_at` (UTC, one timestamp per run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from datetime import datetime, timezone
from typing import Iterator

import mlflow
import pandas as pd

from registry.cli import ArgumentParser, cli_entry, int_arg, registered_uri_arg
from registry.contract import (
    CORE_COLUMNS,
    LABEL_SET,
    LABELS,
    MODEL_SET,
    REQUEST_SET,
    SCORES,
    TOP_LABEL,
    parse_params,
    to_params,
)
from registry.conventions import CHAMPION, DEFAULT_MODEL_NAME
from registry.documents import load_label_descriptions, parse_columns
from registry.errors import ConfigError, DataError
from registry.loading import load_pyfunc
from registry.lookup import artifact_files, model_name_of, resolve_version
from registry.tracking import log_params_once, setup
from serving.config import BATCH_ARROW_RECORDS, BATCH_ENV_MANAGER, BATCH_SPARK_MASTER

RESULT_TYPE = f"struct<{LABELS}: array<string>, {TOP_LABEL}: string, {SCORES}: map<string, double>>"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json"}


def spark_session(master: str, arrow_records: int = BATCH_ARROW_RECORDS):
    """A session whose Python workers run this interpreter (so they see the same packages) and are reused
    between tasks (so a loaded model is too)."""
    from pyspark.sql import SparkSession  # pyspark is heavy: imported only by the stage that needs it

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("batch_score")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(arrow_records)))
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


_MODELS: dict[tuple, object] = {}  # per Python worker: (model path, threads) -> loaded pyfunc


def cached_model(path: str, threads: int | None):
    """The pyfunc at `path`, loaded once per Python worker. `threads` reaches a model that takes it in its
    model_config (the ONNX pyfunc); a torch model is limited through torch itself."""
    key = (path, threads)
    for stale in [k for k in _MODELS if not os.path.exists(k[0])]:  # a job's downloaded copy, removed since
        del _MODELS[stale]
    if key not in _MODELS:
        config = mlflow.models.Model.load(path).flavors["python_function"].get("model_config") or {}
        _MODELS[key] = load_pyfunc(path, model_config={"threads": threads} if threads and "threads" in config else None)
        torch = sys.modules.get("torch")  # imported by a torch pyfunc only
        if threads and torch is not None:
            torch.set_num_threads(threads)
    return _MODELS[key]


def cached_udf(path: str, params: dict | None, threads: int | None):
    """An iterator pandas UDF over the cached pyfunc: struct of text columns -> RESULT_TYPE rows."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_TYPE)
    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = cached_model(path, threads)
        for frame in batches:
            yield model.predict(frame, params=params or None)[list(CORE_COLUMNS)]

    # Non-deterministic, so the optimiser cannot copy the call into each of the columns read from its result
    # (which would score every document once per output column).
    return predict.asNondeterministic()


def task_slots(spark) -> int:
    return max(1, int(spark.sparkContext.defaultParallelism))


def local_threads(spark, partitions: int) -> int | None:
    """Inference threads per task on a local master: the cores shared out over the tasks that run at once, so
    tasks x threads = cores (on a cluster the executors' own settings apply)."""
    if not spark.sparkContext.master.startswith("local"):
        return None
    return max(1, (os.cpu_count() or 1) // max(1, min(partitions, task_slots(spark))))


def read_input(spark, path: str, fmt: str | None = None):
    fmt = fmt or next((f for ext, f in FORMATS.items() if path.rstrip("/").lower().endswith(ext)), None)
    if fmt is None:
        raise ConfigError(f"cannot tell the format of {path}: give input_format (csv, parquet or json)")
    if fmt not in set(FORMATS.values()):
        raise ConfigError(f"input_format must be csv, parquet or json, got {fmt!r}")
    from pyspark.errors import AnalysisException

    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", True).option("multiLine", True).option("escape", '"')
    try:
        return getattr(reader, fmt)(path)
    except AnalysisException as exc:
        raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None


def text_columns_for(frame_columns: list[str], requested: list[str], model_columns: list[str]) -> list[str]:
    """The columns handed to the model: the requested ones, else `text`, else the model's own text columns."""
    for candidate in [requested] if requested else [["text"], model_columns]:
        if candidate and all(c in frame_columns for c in candidate):
            return candidate
    if requested:
        raise DataError(
            f"text column(s) {[c for c in requested if c not in frame_columns]} not in the input; "
            f"it has {frame_columns}"
        )
    alternative = f" or the columns {model_columns}" if model_columns else ""
    raise DataError(f"input needs a 'text' column{alternative}; it has {frame_columns}")


@contextlib.contextmanager
def score(
    spark,
    model_name: str,
    version: str,
    source,
    text_columns: list[str],
    label_descriptions: dict | None = None,
    threshold: float | None = None,
    env_manager: str = BATCH_ENV_MANAGER,
):
    """`source` with the prediction columns added. The frame is lazy: write or collect it inside the `with`,
    while the model's files are there (read in place from a local store, else a download removed on exit)."""
    from pyspark.sql import functions as F

    uri, params = f"models:/{model_name}/{version}", to_params(label_descriptions, threshold)
    with contextlib.ExitStack() as stack:
        if env_manager == "local":
            # No repartitioning: a small input in one partition is one task with every core (measured faster
            # than a shuffle plus a second worker loading the model); many partitions share the cores out.
            threads = local_threads(spark, source.rdd.getNumPartitions())
            udf = cached_udf(str(stack.enter_context(artifact_files(uri))), params, threads)
        else:
            udf = mlflow.pyfunc.spark_udf(
                spark, uri, result_type=RESULT_TYPE, env_manager=env_manager, params=params or None
            )
        inputs = F.struct(
            *[F.col(c).cast("string").alias("text" if len(text_columns) == 1 else c) for c in text_columns]
        )
        scored_at = datetime.now(timezone.utc).replace(tzinfo=None)
        yield (
            source.withColumn("_prediction", udf(inputs))
            .withColumn("predicted_labels", F.col(f"_prediction.{LABELS}"))
            .withColumn(TOP_LABEL, F.col(f"_prediction.{TOP_LABEL}"))
            .withColumn(SCORES, F.col(f"_prediction.{SCORES}"))
            .withColumn(LABEL_SET, F.lit(REQUEST_SET if label_descriptions else MODEL_SET))  # one set per job
            .drop("_prediction")
            .withColumn("model_name", F.lit(model_name))
            .withColumn("model_version", F.lit(str(version)))
            .withColumn("scored_at", F.lit(scored_at).cast("timestamp"))
        )


def model_text_columns(model_name: str, version: str) -> list[str]:
    """The text columns in the model's signature (besides `text`)."""
    info = mlflow.models.get_model_info(f"models:/{model_name}/{version}")
    schema = info.signature.inputs if info.signature else None
    return [n for n in (schema.input_names() if schema else []) if n != "text"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="batch_score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model-uri",
        type=registered_uri_arg,
        default=f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}",
        help="models:/<name>@<alias> or models:/<name>/<version>",
    )
    p.add_argument("--input", required=True, help="CSV (with header), Parquet or JSON lines; file or directory")
    p.add_argument("--output", required=True, help="Parquet directory (overwritten)")
    p.add_argument("--spark-master", default=BATCH_SPARK_MASTER)
    p.add_argument("--text-columns", default="", help="comma list; default: text, else the model's text columns")
    p.add_argument("--input-format", default="", help="csv | parquet | json (default: from the extension)")
    p.add_argument("--label-descriptions", default="", help="YAML/JSON label file: score against a new label set")
    p.add_argument("--threshold", default="", help="one threshold for every label")
    p.add_argument(
        "--env-manager",
        default=BATCH_ENV_MANAGER,
        choices=["local", "virtualenv", "uv", "conda"],
        help="local: this interpreter, the model cached per Python worker; else MLflow rebuilds the "
        "model's environment",
    )
    p.add_argument(
        "--arrow-records",
        type=int_arg,
        default=BATCH_ARROW_RECORDS,
        help="documents per pyfunc call (spark.sql.execution.arrow.maxRecordsPerBatch)",
    )
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(model_name_of(args.model_uri))
    name, version = resolve_version(args.model_uri)
    descriptions = load_label_descriptions(args.label_descriptions) if args.label_descriptions else None
    _, threshold = parse_params({"threshold": args.threshold})  # checked here, not in the first Spark task
    spark = spark_session(args.spark_master, args.arrow_records)
    with mlflow.start_run(run_name="batch_score"):
        log_params_once(
            {
                "model_uri": args.model_uri,
                "model_version": version,
                "input": args.input,
                "output": args.output,
                "spark_master": args.spark_master,
                "env_manager": args.env_manager,
                "arrow_records": args.arrow_records,
            }
        )
        source = read_input(spark, args.input, args.input_format or None)
        columns = text_columns_for(
            source.columns,
            parse_columns(args.text_columns) if args.text_columns else [],
            model_text_columns(name, version),
        )
        start = time.perf_counter()
        with score(spark, name, version, source, columns, descriptions, threshold, args.env_manager) as scored:
            scored.write.mode("overwrite").parquet(args.output)
        seconds = time.perf_counter() - start
        rows = spark.read.parquet(args.output).count()
        mlflow.log_metrics({"rows": rows, "seconds": seconds, "docs_per_s": rows / max(seconds, 1e-9)})
    print(f"scored {rows} documents with {name} version {version} in {seconds:.1f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
