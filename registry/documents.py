"""How documents and label sets are read, wherever they are kept: tables and label-description files from paths
or MLflow artifact URIs, and the text columns of a document joined into the one text the encoder reads."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
import yaml

from registry.contract import ContractError, join_columns, label_descriptions, unique_keys
from registry.errors import DataError
from registry.lookup import artifact_files

_REMOTE_SCHEMES = ("runs:/", "models:/", "dbfs:/", "mlflow-artifacts:/")


@contextmanager
def _local_path(uri: str) -> Iterator[Path]:
    """MLflow artifact URIs through `lookup.artifact_files` (read inside the `with`); plain paths and file:// URIs
    in place."""
    if not uri.strip():  # Path("") is the working directory, which would be read as a Parquet dataset
        raise DataError("no data file given (the path is empty)")
    if uri.startswith(_REMOTE_SCHEMES):
        with artifact_files(uri) as path:
            yield path
        return
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    if not path.exists():
        raise DataError(f"data file not found: {uri}")
    yield path


def read_table(uri: str) -> pd.DataFrame:
    """CSV, JSONL/JSON or Parquet by file suffix; an empty file is an error, not an empty frame."""
    with _local_path(uri) as path:
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"data file is empty: {uri}")
        suffix = path.suffix.lower()
        try:
            if suffix in (".parquet", ".pq") or path.is_dir():
                frame = pd.read_parquet(path)
            elif suffix in (".jsonl", ".ndjson"):
                frame = pd.read_json(path, lines=True)
            elif suffix == ".json":
                frame = pd.read_json(path)
            else:
                frame = pd.read_csv(path)
        except (ValueError, pd.errors.ParserError, OSError) as exc:
            raise DataError(f"cannot read {uri}: {exc}") from exc
    if frame.empty:
        raise DataError(f"data file has no rows: {uri}")
    return frame


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping naming one key twice is refused (`unique_keys`)."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        unique_keys([(self.construct_object(key, deep=deep), None) for key, _ in node.value])
        return super().construct_mapping(node, deep)


def load_label_descriptions(uri: str) -> dict[str, str]:
    """A YAML or JSON mapping label -> description, checked and normalised as every label set is
    (`contract.label_descriptions`)."""
    try:
        with _local_path(uri) as path:
            text = path.read_text(encoding="utf-8")
        return label_descriptions(yaml.load(text, Loader=_UniqueKeyLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # YAML is a superset of JSON: one parser reads both
        raise DataError(f"label file {uri} is not valid YAML/JSON: {exc}") from exc
    except ContractError as exc:
        raise DataError(f"label file {uri}: {exc}") from None


def parse_columns(spec: str | Sequence[str]) -> list[str]:
    """'title,body' -> ['title', 'body']."""
    cols = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else list(spec)
    cols = [c for c in cols if c]
    if not cols:
        raise DataError("text_columns is empty")
    return cols


def join_text(frame: pd.DataFrame, text_columns: Sequence[str]) -> pd.Series:
    """The document texts of a data file, its text columns joined as at inference (`contract.join_columns`)."""
    missing = [c for c in text_columns if c not in frame.columns]
    if missing:
        raise DataError(f"text column(s) {missing} not in data; columns are {list(frame.columns)}")
    return pd.Series(join_columns(frame, text_columns), index=frame.index, dtype=object)
