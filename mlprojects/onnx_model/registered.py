"""The ONNX classifier as a registered MLflow model: onnxruntime, tokenizers, numpy and pandas at inference."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mlprojects.model.registered import MODEL_CODE
from mlprojects.onnx_model.runtime import OnnxClassifier
from registry.log_model import log_pyfunc, onnx_requirements

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")


def log_onnx_classifier(package_dir: str | Path, example_texts: Sequence[str], threads: int = 0, name: str = "model"):
    """Log the ONNX pyfunc (a package from `mlprojects.onnx_model.export`) into the active run, the package's
    answer to `example_texts` as the example; returns ModelInfo. `threads` (0 = all cores) can be overridden at
    load: `load_model(uri, model_config={"threads": n})`."""
    requirements = onnx_requirements()
    classifier = OnnxClassifier.load(package_dir, threads)
    return log_pyfunc(
        PYFUNC_FILE,
        {"onnx_classifier": str(package_dir)},
        requirements,
        classifier,
        example_texts,
        MODEL_CODE,
        name,
        {"threads": int(threads)},
        classifier.new_label_adapter_scale,
    )
