"""The fit split as a stream: a ray.data dataset over Parquet or CSV files (a file, a directory or a glob) that Ray
reads block by block, so data larger than memory trains. One pass in the driver counts what the data gate needs and
keeps a uniform sample; each Ray Train worker then streams its shard, batch by batch."""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mlprojects.data import Splits, content_hashes, prepare
from mlprojects.training.trainer import FitStream, make_split
from registry.documents import load_label_descriptions, read_table
from registry.errors import DataError
from validation.counts import StreamCounts

log = logging.getLogger(__name__)
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
SCAN_BATCH = 4096  # rows per batch of the driver's counting pass


@dataclass
class StreamSpec:
    """What a worker needs to turn its shard's raw rows into training batches (shipped to every worker)."""

    rows: int
    single_label: bool
    text_columns: list[str]
    label_column: str
    label_names: list[str]
    delimiter: str = "|"
    soft_label_column: str | None = None
    seed: int = 42

    def fit_stream(self) -> FitStream:
        """This Ray Train worker's shard of the dataset passed to the trainer as "train", as a FitStream."""
        from ray import train

        shard = train.get_dataset_shard("train")

        def batches(epoch: int, size: int):
            for frame in shard.iter_batches(
                batch_size=size,
                batch_format="pandas",
                local_shuffle_buffer_size=max(8 * size, 256),
                local_shuffle_seed=self.seed + epoch,
            ):
                rows = prepare(frame, self.text_columns, self.label_column, self.delimiter, self.soft_label_column)
                yield make_split(rows, self.label_names)

        return FitStream(self.rows, self.single_label, batches)


@dataclass
class Stream:
    """The streamed fit split in the driver: the dataset, what a worker needs, and what the gate judges."""

    dataset: Any  # ray.data.Dataset
    spec: StreamSpec
    counts: StreamCounts
    sample: pd.DataFrame  # normalised (text, labels) rows, a uniform sample of at most `gate_sample`


@dataclass(frozen=True)
class StreamSource:
    """What --data names as a stream: its files and their one format ('parquet' or 'csv')."""

    uri: str
    files: tuple[str, ...]
    kind: str


def stream_source(uri: str, val_data: str, test_data: str) -> StreamSource:
    """Check what can be checked without Ray: held-out files given, and the files a path, a directory or a glob
    names (all there, non-empty, one format)."""
    if not (val_data and test_data):
        raise DataError(
            "--stream needs --val-data and --test-data files: a random split of a stream would read all of it"
        )
    path = uri.removeprefix("file://")
    if not path.strip():
        raise DataError("no data path given (the path is empty)")
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"data path matches no files: {uri}")
    elif Path(path).is_dir():  # Spark/Hive-style folders: skip markers such as _SUCCESS and hidden files
        files = sorted(str(f) for f in Path(path).rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
        if not files:
            raise DataError(f"no data files in the folder {uri}")
    elif Path(path).is_file():
        files = [path]
    else:
        raise DataError(f"data path not found: {uri}")
    kinds = {FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds:
        other = sorted({Path(f).suffix or Path(f).name for f in files if Path(f).suffix.lower() not in FORMATS})
        raise DataError(f"--stream reads Parquet or CSV files; {uri} has {', '.join(other)}")
    if len(kinds) > 1:
        raise DataError(f"{uri} mixes Parquet and CSV files; stream one format")
    empty = [f for f in files if os.path.getsize(f) == 0]
    if empty:
        raise DataError(f"data file is empty: {empty[0]}")
    return StreamSource(uri, tuple(files), kinds.pop())


def open_stream(source: StreamSource, needed: Sequence[str], reader_cpus: float):
    """A lazy ray.data dataset over `uri`'s files; the columns checked against its schema before anything trains.
    Ray must be running (else ray.data would start its own, on every core)."""
    import ray.data

    uri = source.uri
    read = ray.data.read_parquet if source.kind == "parquet" else ray.data.read_csv
    try:
        dataset = read(list(source.files), num_cpus=reader_cpus)
        names = list(dataset.schema().names)
    except Exception as exc:  # Ray wraps the reader's error (Arrow, OS) in its own types, with a traceback
        raise DataError(f"cannot read {uri}: {_last_line(exc)}") from exc
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"column(s) {missing} not in {uri}; its columns are {names}")
    return dataset


def scan(
    dataset,
    uri: str,
    spec: StreamSpec,
    held_out: pd.Series,
    sample_size: int,
) -> tuple[StreamCounts, pd.DataFrame, bool]:
    """One pass over the stream: the gate's counts over every row, a uniform sample (the rows with the smallest
    of a random key per row, so memory holds at most `sample_size` rows), and whether every row has one label."""
    rng = np.random.default_rng(spec.seed)
    held = set(content_hashes(held_out))
    counts, labels, multi = StreamCounts(), Counter(), 0
    sample, keys = pd.DataFrame(), np.empty(0)
    try:
        for frame in dataset.iter_batches(batch_size=SCAN_BATCH, batch_format="pandas"):
            rows = prepare(frame, spec.text_columns, spec.label_column, spec.delimiter, spec.soft_label_column)
            counts.rows += len(rows)
            counts.empty_text += int(rows["text"].map(lambda t: not isinstance(t, str) or not t.strip()).sum())
            counts.no_labels += int(rows["labels"].isna().sum())
            counts.held_out += int(content_hashes(rows["text"]).isin(held).sum())
            for names in rows["labels"].dropna():
                labels.update(set(names))
                multi += len(set(names)) != 1
            sample = pd.concat([sample, rows], ignore_index=True)
            keys = np.concatenate([keys, rng.random(len(rows))])
            keep = np.sort(np.argsort(keys, kind="stable")[:sample_size])
            sample, keys = sample.iloc[keep].reset_index(drop=True), keys[keep]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {uri}: {_last_line(exc)}") from exc
    if not counts.rows:
        raise DataError(f"data has no rows: {uri}")
    counts.label_rows = dict(labels)
    return counts, sample, multi == 0 and counts.no_labels == 0


def load_stream(
    source: StreamSource,
    labels: str,
    text_columns: Sequence[str],
    label_column: str,
    val_data: str,
    test_data: str,
    reader_cpus: float,
    gate_sample: int,
    seed: int = 42,
    delimiter: str = "|",
    soft_label_column: str | None = None,
) -> tuple[Splits, Stream]:
    """The streamed fit split and the validation and test files, loaded whole (they are small, and a random split
    of a stream would need all of it). The Splits hold the gate's sample as their fit frame. Ray must be running."""
    descriptions = load_label_descriptions(labels)
    val, test = (
        prepare(read_table(uri), text_columns, label_column, delimiter, soft_label_column)
        for uri in (val_data, test_data)
    )
    needed = [*text_columns, label_column, *([soft_label_column] if soft_label_column else [])]
    dataset = open_stream(source, needed, reader_cpus)
    spec = StreamSpec(
        0, False, list(text_columns), label_column, list(descriptions), delimiter, soft_label_column, seed
    )
    counts, sample, single = scan(dataset, source.uri, spec, pd.concat([val["text"], test["text"]]), gate_sample)
    spec.rows, spec.single_label = counts.rows, single
    log.info("streamed %d fit rows from %s (gate sample %d)", counts.rows, source.uri, len(sample))
    return Splits(sample, val, test, descriptions), Stream(dataset, spec, counts, sample)


def _last_line(exc: BaseException) -> str:
    """The reader's own message: Ray's wrapped errors carry a traceback whose last line names the cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
