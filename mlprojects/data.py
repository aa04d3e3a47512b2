"""Read documents and label files, normalise them to (text, labels) rows, and split them reproducibly."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from registry.contract import normalise
from registry.documents import join_text, load_label_descriptions, parse_columns, read_table
from registry.errors import DataError


def parse_label_value(value, delimiter: str = "|") -> list[str] | None:
    """A list/array, a JSON array string, a delimiter-separated string or a single label -> list of labels."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [str(v) for v in value]
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                items = [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                items = text.strip("[]").split(",")
        else:
            items = text.split(delimiter) if delimiter else [text]
    labels = [i.strip() for i in items if i and i.strip()]
    return labels or None


def prepare(
    frame: pd.DataFrame,
    text_columns: Sequence[str],
    label_column: str | None,
    delimiter: str = "|",
    soft_label_column: str | None = None,
) -> pd.DataFrame:
    """Normalise any supported input to columns `text`, `labels` (list) and optionally `soft_labels` (dict)."""
    out = pd.DataFrame({"text": join_text(frame, text_columns)})
    if label_column:
        if label_column not in frame.columns:
            raise DataError(f"label column '{label_column}' not in data; columns are {list(frame.columns)}")
        out["labels"] = [parse_label_value(v, delimiter) for v in frame[label_column]]
    if soft_label_column:
        if soft_label_column not in frame.columns:
            raise DataError(f"soft-label column '{soft_label_column}' not in data")
        out["soft_labels"] = [v if isinstance(v, dict) else json.loads(v) for v in frame[soft_label_column]]
    return out


def multi_hot(labels: Sequence[Sequence[str]], label_names: Sequence[str]) -> np.ndarray:
    """Rows of label lists -> float32 matrix [n, n_labels]; unknown labels are ignored (the gate reports them)."""
    index = {name: i for i, name in enumerate(label_names)}
    y = np.zeros((len(labels), len(label_names)), dtype=np.float32)
    for row, names in enumerate(labels):
        for name in names or ():
            if name in index:
                y[row, index[name]] = 1.0
    return y


def soft_matrix(soft: Sequence[dict], label_names: Sequence[str], hard: np.ndarray) -> np.ndarray:
    """Soft targets per label; labels a row does not mention keep their hard value."""
    y = hard.copy()
    for row, probs in enumerate(soft):
        for j, name in enumerate(label_names):
            if name in probs:
                y[row, j] = float(probs[name])
    return y


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `fraction` of the rows, with every label in proportion on both sides (iterative stratification).

    Rows with the same text stay on the same side: a duplicate on both sides would leak one split into another."""
    keys = content_hashes(frame["text"])
    unique = frame.loc[~keys.duplicated()]
    held = unique.index[iterative_stratification(list(unique["labels"]), fraction, seed)]
    held_out = keys.isin(set(keys[held]))
    return frame[~held_out].reset_index(drop=True), frame[held_out].reset_index(drop=True)


def iterative_stratification(label_sets: Sequence[Sequence[str] | None], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows to hold out (Sechidis et al., 2011): the rarest label is placed first, each of its
    rows going to the side that still lacks most of that label, so multi-label rows do not starve a label that is
    rarely any row's rarest (stratifying on one key per row can leave such a label out of a small split)."""
    rng = np.random.default_rng(seed)
    n = len(label_sets)
    sets = [set(ls or ()) for ls in label_sets]
    first_seen = {label: i for i, label in enumerate(dict.fromkeys(l for ls in label_sets for l in ls or ()))}
    shares = np.array([fraction, 1.0 - fraction])
    size_wanted = shares * n
    label_wanted: dict[str, np.ndarray] = {}
    for labels in sets:
        for label in labels:
            label_wanted.setdefault(label, np.zeros(2))
            label_wanted[label] += shares
    side = np.full(n, -1)
    remaining = set(int(i) for i in rng.permutation(n))
    while remaining:
        counts: dict[str, int] = {}
        for i in remaining:
            for label in sets[i]:
                counts[label] = counts.get(label, 0) + 1
        if counts:
            # in first-seen order: the tie-breaking draws must not follow string hashes, which differ per process
            rarest = min(sorted(counts, key=first_seen.get), key=lambda l: (counts[l], rng.random()))
            rows = [i for i in remaining if rarest in sets[i]]
        else:  # unlabelled rows: by size alone
            rarest, rows = None, list(remaining)
        for i in rng.permutation(rows):
            want = label_wanted[rarest] if rarest is not None else size_wanted
            best = np.flatnonzero(want == want.max())
            if len(best) > 1:
                best = best[size_wanted[best] == size_wanted[best].max()]
            chosen = int(rng.choice(best))
            side[i] = chosen
            size_wanted[chosen] -= 1
            for label in sets[i]:
                label_wanted[label][chosen] -= 1
            remaining.discard(int(i))
    return side == 0


def content_hashes(texts: pd.Series) -> pd.Series:
    """A document's identity across splits: sha256 of its whitespace-normalised text."""
    return texts.map(lambda t: hashlib.sha256(normalise(t).encode("utf-8")).hexdigest())


@dataclass
class Splits:
    """Three disjoint splits: fit trains, validation selects (early stopping, PBT, thresholds), test judges."""

    fit: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    descriptions: dict[str, str]

    def __iter__(self):
        return iter((self.fit, self.validation, self.test, self.descriptions))

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.fit, "validation": self.validation, "test": self.test}


def load_splits(
    data: str,
    labels: str,
    text_columns: str | Sequence[str],
    label_column: str,
    val_data: str | None = None,
    test_data: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 42,
    delimiter: str = "|",
    soft_label_column: str | None = None,
) -> Splits:
    """Read, normalise and split into fit / validation / test.

    Files given for validation or test are used as they are; otherwise those splits are stratified, seeded
    samples of `data` (fractions of the whole of `data`), so the same data and seed give the same splits."""
    for name, share, given in (("val_fraction", val_fraction, val_data), ("test_fraction", test_fraction, test_data)):
        if not given and not 0.0 < share < 1.0:
            raise DataError(f"{name} must be between 0 and 1 (exclusive), got {share}")
    if not (val_data or test_data) and val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction + test_fraction must leave data to train on, got {val_fraction} + {test_fraction}"
        )
    descriptions = load_label_descriptions(labels)
    columns = parse_columns(text_columns)

    def read(uri: str) -> pd.DataFrame:
        return prepare(read_table(uri), columns, label_column, delimiter, soft_label_column)

    pool = read(data)
    splittable = not pool["labels"].isna().any()  # else the gate reports the unlabelled rows first
    test = read(test_data) if test_data else None
    val = read(val_data) if val_data else None
    if test is not None:  # splits made here are disjoint by construction; the gate checks the rest
        seen = pool["text"] if val is None else pd.concat([pool["text"], val["text"]])
        shared = int(content_hashes(test["text"]).isin(set(content_hashes(seen))).sum())
        if shared:
            raise DataError(
                f"{shared} of {len(test)} test_data document(s) also in the training or validation "
                "data (same text): the test split must hold documents nothing trains or selects on"
            )
    if test is None:
        test_share = test_fraction if splittable else 0.0
        pool, test = stratified_split(pool, test_share, seed) if test_share else (pool, pool.iloc[0:0])
    if val is None:
        if not splittable:
            val = pool.iloc[0:0]
        else:
            share = val_fraction if test_data else val_fraction / (1.0 - test_fraction)
            pool, val = stratified_split(pool, share, seed)
    return Splits(pool, val, test, descriptions)


def split_pools(
    raw: pd.DataFrame,
    text_columns: str | Sequence[str],
    label_column: str,
    shares: dict[str, float],
    seed: int,
    delimiter: str = "|",
) -> dict[str, pd.DataFrame]:
    """Raw rows cut into named, label-stratified, disjoint pools; `shares` are fractions of all rows, in order,
    and the last pool takes the rest (e.g. {"test": 0.2, "production": 0.35, "initial": 0.45})."""
    prepared = prepare(raw, parse_columns(text_columns), label_column, delimiter).assign(row=np.arange(len(raw)))
    names = list(shares)
    pools, remaining = {}, prepared
    for name in names[:-1]:
        remaining, held = stratified_split(remaining, shares[name] * len(prepared) / len(remaining), seed)
        pools[name] = raw.iloc[held["row"]].reset_index(drop=True)
    pools[names[-1]] = raw.iloc[remaining["row"]].reset_index(drop=True)
    return pools
