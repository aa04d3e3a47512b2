"""The ONNX classifier as a registered MLflow model: onnxruntime, tokenizers, numpy and pandas at inference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlprojects.model.registered import MODEL_CODE
from registry.log_model import log_pyfunc, onnx_requirements

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")


def log_onnx_classifier(
    package_dir: str | Path,
    text_columns: list[str],
    example: pd.DataFrame,
    example_output: pd.DataFrame,
    threads: int = 0,
    name: str = "model",
):
    """Log the ONNX pyfunc (a package from `mlprojects.onnx_model.export`) into the active run; returns ModelInfo.
    `threads` (0 = all cores) can be overridden at load: `load_model(uri, model_config={"threads": n})`."""
    return log_pyfunc(
        PYFUNC_FILE,
        {"onnx_classifier": str(package_dir)},
        onnx_requirements(),
        text_columns,
        example,
        example_output,
        MODEL_CODE,
        name,
        {"threads": int(threads)},
    )
