"""A feedback source for training: the store's SQLAlchemy URL, or an export file that passes the same gate as an
import; only rows whose labels all belong to the model being trained are kept."""

from __future__ import annotations

import logging
import tempfile

import pandas as pd

from registry.errors import DataError
from serving.feedback.io import FeedbackFileError, read_feedback_file
from serving.feedback.store import FeedbackStore

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson")  # an export file; anything else is a SQLAlchemy URL of the store


def load_feedback(feedback_uri: str, model_name: str, label_names: list[str]) -> tuple[pd.DataFrame, dict]:
    """Feedback rows on `model_name` usable with `label_names`, and counts of what was left out and why."""
    if feedback_uri.lower().endswith(FILE_SUFFIXES):
        try:
            records, first_row = read_feedback_file(feedback_uri)
        except FeedbackFileError as exc:
            raise DataError(str(exc)) from exc
        with tempfile.TemporaryDirectory(prefix="feedback-") as tmp:
            store = FeedbackStore(f"sqlite:///{tmp}/feedback.db")  # the file passes the same gate as an import
            report = store.add_many(records, label_names, first_row)
            frame = store.query(model_name=model_name)
            store.engine.dispose()
        for line in report.lines():
            log.warning("feedback left out: %s", line)
        rejected = len(report.rejected)
    else:
        frame, rejected = FeedbackStore(feedback_uri).query(model_name=model_name), 0
    known = set(label_names)
    usable = frame["predicted_labels"].map(lambda ls: set(ls) <= known) & frame["corrected_labels"].map(
        lambda ls: ls is None or set(ls) <= known
    )
    counts = {
        "feedback_rejected": rejected,
        "feedback_other_label_set": int((~usable).sum()),
        "feedback_used": int(usable.sum()),
    }
    return frame[usable].reset_index(drop=True), counts
