"""Training-data gate: clean data passes, each kind of bad data fails with a readable line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from validation import DataValidationError, GateResult, validate_training_data
from validation.gx_runner import _batch_definition

LABELS = ["positive", "negative", "neutral"]
REPO = Path(__file__).resolve().parents[1]


def make_frame(n_per_label: int = 6, prefix: str = "train") -> pd.DataFrame:
    rows = [(f"{prefix} text {label} {i}", [label]) for label in LABELS for i in range(n_per_label)]
    rows.append((f"{prefix} text multi", ["positive", "neutral"]))
    return pd.DataFrame(rows, columns=["text", "labels"])


def with_rows(df: pd.DataFrame, *rows: tuple) -> pd.DataFrame:
    return pd.concat([df, pd.DataFrame(list(rows), columns=["text", "labels"])], ignore_index=True)


def only_failure(result: GateResult) -> str:
    assert not result.success
    assert len(result.failures) == 1, result.failures
    return result.failures[0]


def test_clean_data_passes() -> None:
    result = validate_training_data(
        make_frame(), LABELS, val=make_frame(5, prefix="val"), test=make_frame(5, prefix="test")
    )
    assert result.success, result.failures
    assert result.failures == []
    result.raise_for_failures()  # no-op
    assert set(result.details) == {
        "train",
        "train_labels",
        "label_counts",
        "val",
        "val_labels",
        "label_counts_val",
        "test",
        "test_labels",
        "label_counts_test",
    }


def test_details_are_strict_json() -> None:
    train = with_rows(make_frame(), (None, ["positive"]))  # a NaN/None in GX's unexpected list
    result = validate_training_data(train, LABELS)
    text = json.dumps(result.details, allow_nan=False)
    assert "expect_column_values_to_not_be_null" in text


def test_unknown_label_is_named() -> None:
    train = with_rows(make_frame(), ("a", ["vatt"]), ("b", ["foo", "positive"]), ("c", ["vatt"]))
    line = only_failure(validate_training_data(train, LABELS))
    assert line.startswith("labels: 3 label values not in the label file")
    assert "'vatt'" in line and "'foo'" in line


@pytest.mark.parametrize("bad_text", ["", "   ", None])
def test_empty_text_fails(bad_text: str | None) -> None:
    train = with_rows(make_frame(), (bad_text, ["positive"]))
    line = only_failure(validate_training_data(train, LABELS))
    assert line.startswith("text: 1 row with ")
    assert "rows [19]" in line  # the index of the bad row


@pytest.mark.parametrize("bad_labels", [None, []])
def test_missing_labels_fail(bad_labels: list | None) -> None:
    train = with_rows(make_frame(), ("no labels here", bad_labels))
    line = only_failure(validate_training_data(train, LABELS))
    assert line == "labels: 1 row with no labels (null or empty list): rows [19]"


def test_missing_column_is_reported_and_rest_skipped() -> None:
    train = make_frame().rename(columns={"labels": "label"})
    result = validate_training_data(train, LABELS)
    line = only_failure(result)
    assert line.startswith("labels: required column is missing")
    assert "'label'" in line  # shows what was found instead
    assert "label_counts" not in result.details


def test_duplicate_text_fails() -> None:
    train = with_rows(make_frame(), ("train text positive 0", ["negative"]))
    line = only_failure(validate_training_data(train, LABELS))
    assert line == "text: 2 rows with duplicate text: ['train text positive 0']"


def test_too_few_examples_names_label_and_count() -> None:
    train = make_frame()
    train = train[~((train["labels"].map(lambda ls: ls == ["negative"])) & (train.index % 6 > 1))]
    result = validate_training_data(train, LABELS + ["sarcasm"], min_examples=5)
    line = only_failure(result)
    assert line == "labels: 2 labels with fewer than 5 training examples: {'negative': 2, 'sarcasm': 0}"
    assert validate_training_data(train, LABELS, min_examples=2).success


def test_train_val_overlap_fails() -> None:
    val = with_rows(make_frame(5, prefix="val"), ("train text neutral 3", ["neutral"]))
    line = only_failure(validate_training_data(make_frame(), LABELS, val=val))
    assert line == "val.text: 1 row also in train (train/validation overlap): ['train text neutral 3']"
    # the train texts are not copied into validation_result.json (only failing examples are)
    details = json.dumps(validate_training_data(make_frame(30), LABELS, val=val).details)
    assert "train text neutral 3" in details and "train text positive 29" not in details


def test_val_gets_row_checks_and_min_examples() -> None:
    val = with_rows(make_frame(5, prefix="val"), ("  ", ["positive"]), ("val x", ["foo"]))
    result = validate_training_data(make_frame(), LABELS, val=val, min_examples=5)
    assert result.failures == [
        "val.text: 1 row with empty text (blank after stripping): rows [16]",
        "val.labels: 1 label value not in the label file: ['foo']",
    ]


def test_every_split_needs_min_examples_per_label() -> None:
    test = make_frame(5, prefix="test")
    test = test[~test["text"].str.startswith("test text negative")]
    result = validate_training_data(make_frame(), LABELS, val=make_frame(5, prefix="val"), test=test, min_examples=5)
    assert result.failures == ["test.labels: 1 label with fewer than 5 test examples: {'negative': 0}"]
    small_val = validate_training_data(make_frame(), LABELS, val=make_frame(2, prefix="val"), min_examples=5)
    assert small_val.failures == [
        "val.labels: 3 labels with fewer than 5 validation examples: {'positive': 3, 'negative': 2, 'neutral': 3}"
    ]


def test_test_split_overlap_with_train_fails() -> None:
    test = with_rows(make_frame(5, prefix="test"), ("train text neutral 3", ["neutral"]))
    line = only_failure(validate_training_data(make_frame(), LABELS, test=test))
    assert (
        line == "test.text: 1 row also in train or validation (overlap with the test split): ['train text neutral 3']"
    )
    test = with_rows(make_frame(5, prefix="test"), ("val text neutral 1", ["neutral"]))
    line = only_failure(validate_training_data(make_frame(), LABELS, val=make_frame(5, prefix="val"), test=test))
    assert line == "test.text: 1 row also in train or validation (overlap with the test split): ['val text neutral 1']"


def test_raise_for_failures_lists_all_failures() -> None:
    train = with_rows(make_frame(), ("", ["positive"]), ("x", ["vatt"]), ("x", ["positive"]))
    result = validate_training_data(train, LABELS)
    assert len(result.failures) == 3
    with pytest.raises(DataValidationError) as err:
        result.raise_for_failures()
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    for failure in result.failures:
        assert failure in message.splitlines()[1 + result.failures.index(failure)]
    assert "3 problems" in message


def test_context_is_reused() -> None:
    validate_training_data(make_frame(), LABELS)
    validate_training_data(make_frame(), LABELS)
    info = _batch_definition.cache_info()
    assert info.currsize == 1 and info.hits >= 1


def test_import_under_python_dash_c_does_not_exit() -> None:
    # pyspark.sql.connect calls sys.exit(0) on import when __main__ has no __file__ (python -c)
    code = "import validation; print('gate-imported')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "gate-imported" in out.stdout, out.stderr
