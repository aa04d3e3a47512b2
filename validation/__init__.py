"""Data-quality gates (Great Expectations 1.x) that stop pipelines on bad data."""

from validation.gx_runner import DataValidationError, GateResult
from validation.evaluation_data import validate_evaluation_data
from validation.training_data import validate_training_data

__all__ = ["DataValidationError", "GateResult", "validate_evaluation_data", "validate_training_data"]
