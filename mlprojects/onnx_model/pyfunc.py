"""Models-from-code definition of the ONNX pyfunc: onnxruntime, tokenizers, numpy and pandas at inference,
never torch or transformers. Same contract, and the same predict path, as the torch pyfunc (`registry.contract`).

Threads: `mlflow.pyfunc.load_model(uri, model_config={"threads": 4})`; default from the package (0 = all cores).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mlprojects.onnx_model.runtime import OnnxClassifier
from registry.contract import predict


class OnnxDualEncoderPyfunc(PythonModel):
    """Own label embeddings were precomputed at export; new label descriptions go through the ONNX encoder."""

    def load_context(self, context) -> None:
        threads = (context.model_config or {}).get("threads")
        self.classifier = OnnxClassifier.load(
            context.artifacts["onnx_classifier"], None if threads is None else int(threads)
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict(self.classifier, model_input, params)


mlflow.models.set_model(OnnxDualEncoderPyfunc())
