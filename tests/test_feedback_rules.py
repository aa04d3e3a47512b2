"""The /feedback route's plain-code rules and the great-expectations feedback gate give the same verdicts."""

import math

import pandas as pd
import pytest

from serving.feedback import FeedbackRejected, FeedbackStore
from serving.feedback.store import COLUMNS
from tests.conftest import feedback_record
from validation.feedback_data import validate_feedback
from validation.feedback_rules import record_reasons

LABELS = ["vat", "payroll", "audit"]


def _row(pid, **changes) -> dict:
    return feedback_record(pid, **{"scores": {"vat": 0.9, "payroll": 0.1}, **changes})


ROWS = [
    _row("good"),
    _row("good-float-score", score=4.0),
    _row("good-text-score", score="5"),
    _row("good-empty-correction", corrected_labels=[], score=1),
    _row("good-no-scores", scores=None),
    _row("score-high", score=9),
    _row("score-fraction", score=2.5),
    _row("score-bool", score=True),
    _row("score-text", score="high"),
    _row("score-missing", score=None),
    _row("text-blank", text="   "),
    _row("unknown-predicted", predicted_labels=["zzz"]),
    _row("unknown-corrected", corrected_labels=["yyy"]),
    _row("unknown-score-label", scores={"zzz": 0.5}),
    _row("scores-nan", scores={"vat": math.nan}),
    _row("scores-text", scores={"vat": "high"}),
    _row("scores-null", scores={"vat": None}),
    _row("scores-out-of-range", scores={"vat": 4.0}),
    _row("scores-not-a-dict", scores=[0.3]),
    _row("predicted-not-list", predicted_labels="vat"),
    _row("corrected-not-list", corrected_labels={"vat": 1}),
    _row("source-dict", source={"app": "web"}),
    _row("source-long", source="s" * 101),
    _row("p" * 201),
    _row("version-long", model_version="9" * 51),
    _row("name-missing", model_name=None),
    _row(None),
]


@pytest.mark.parametrize("label_names", [LABELS, None], ids=["with labels", "without labels"])
def test_plain_rules_and_the_gx_suite_agree_row_by_row(label_names):
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    gx = validate_feedback(frame, label_names)
    plain = {pos: record_reasons(row, label_names) for pos, row in enumerate(ROWS)}
    assert {pos for pos, why in plain.items() if why} == set(gx)
    for pos, why in plain.items():
        assert sorted(why) == sorted(gx.get(pos, [])), ROWS[pos]["prediction_id"]
    good = [ROWS[pos]["prediction_id"] for pos, why in plain.items() if not why]
    expected = ["good", "good-float-score", "good-text-score", "good-empty-correction", "good-no-scores"]
    assert good == expected + (
        ["unknown-predicted", "unknown-corrected", "unknown-score-label"] if label_names is None else []
    )


def test_a_stored_id_is_refused_by_both(tmp_path):
    row = _row("again")
    assert record_reasons(row, LABELS, {"again"}) == ["prediction_id already has feedback in the store"]
    assert validate_feedback(pd.DataFrame([row], columns=COLUMNS), LABELS, {"again"}) == {
        0: ["prediction_id already has feedback in the store"]
    }


def test_one_record_is_stored_without_great_expectations(tmp_path):
    """The single-record path (the /feedback route) checks in plain code; it also refuses what the gate refuses."""
    import sys

    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.db'}")
    store.add(_row("one", score="4.0"), LABELS)
    with pytest.raises(FeedbackRejected, match="scores must map"):
        store.add(_row("two", scores={"vat": math.nan}), LABELS)
    with pytest.raises(FeedbackRejected, match="already has feedback"):
        store.add(_row("one"), LABELS)
    assert list(store.query()["score"]) == [4]
    if "great_expectations" not in sys.modules:  # only meaningful when no other test imported it first
        assert "validation.feedback_data" not in sys.modules
