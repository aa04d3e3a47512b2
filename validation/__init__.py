"""Data-quality gates (Great Expectations 1.x) that stop pipelines on bad data.

The gates are imported on first use: `validation.feedback_rules` (plain code, for a server's hot path) must not
pay for importing great-expectations.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataValidationError": "validation.gx_runner",
    "GateResult": "validation.gx_runner",
    "StreamCounts": "validation.counts",
    "validate_evaluation_data": "validation.evaluation_data",
    "validate_feedback": "validation.feedback_data",
    "validate_streamed_training_data": "validation.training_data",
    "validate_training_data": "validation.training_data",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'validation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
