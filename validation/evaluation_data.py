"""Evaluation-data gate: a model is only judged on data whose texts are present and whose labels are known."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from validation.gx_runner import GateResult
from validation.training_data import _split_checks


def validate_evaluation_data(frame: pd.DataFrame, label_names: Sequence[str]) -> GateResult:
    """Text non-empty, every row labelled, labels in the label set, no duplicate documents (they double-count)."""
    return _split_checks("eval", frame, label_names, ("text", "labels"))
