"""The torch classifier as a registered MLflow model: logged with the code it runs, loaded back to train further
(GRPO) or to export (ONNX)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import mlprojects
import registry
from mlprojects.model.classifier import Classifier
from registry.contract import format_predictions
from registry.log_model import log_pyfunc, torch_requirements
from registry.lookup import classifier_dir

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
# What a logged model imports at inference: our two packages, copied into each version (`code_paths`).
MODEL_CODE = [str(Path(mlprojects.__file__).parent), str(Path(registry.__file__).parent)]


def log_classifier(
    directory: str | Path,
    text_columns: list[str],
    example: pd.DataFrame,
    example_output: pd.DataFrame,
    name: str = "model",
):
    """Log a saved Classifier as the torch pyfunc into the active run; returns MLflow's ModelInfo."""
    return log_pyfunc(
        PYFUNC_FILE,
        {"classifier": str(directory)},
        torch_requirements(),
        text_columns,
        example,
        example_output,
        MODEL_CODE,
        name,
    )


def load_classifier(model_uri: str, device: str | None = None) -> Classifier:
    """The Classifier behind a registered torch model."""
    return Classifier.load(classifier_dir(model_uri), device)


def example_output(classifier: Classifier, example: pd.DataFrame) -> pd.DataFrame:
    """What the model answers for the input example: MLflow stores both with the model."""
    probs = classifier.predict_proba(list(example["text"]))
    return format_predictions(probs, classifier.labels, classifier.thresholds, classifier.single_label)
