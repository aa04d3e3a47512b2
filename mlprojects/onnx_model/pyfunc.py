"""Models-from-code definition of the ONNX pyfunc: onnxruntime, tokenizers, numpy and pandas at inference,
never torch or transformers. Same contract as the torch pyfunc (`registry.contract`).

Threads: `mlflow.pyfunc.load_model(uri, model_config={"threads": 4})`; default from the package (0 = all cores).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mlprojects.onnx_model.runtime import OnnxClassifier
from registry.contract import format_predictions, input_texts, parse_params, resolve_labels


class OnnxDualEncoderPyfunc(PythonModel):
    """Own label embeddings were precomputed at export; new label descriptions go through the ONNX encoder."""

    def load_context(self, context) -> None:
        threads = (context.model_config or {}).get("threads")
        self.classifier = OnnxClassifier.load(
            context.artifacts["onnx_classifier"], None if threads is None else int(threads)
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        clf = self.classifier
        descriptions, threshold = parse_params(params)
        labels, thresholds = resolve_labels(clf.labels, clf.thresholds, descriptions, threshold)
        probs = clf.predict_proba(input_texts(model_input, clf.text_columns), descriptions)
        single = clf.single_label and descriptions is None and threshold is None
        return format_predictions(probs, labels, thresholds, single)


mlflow.models.set_model(OnnxDualEncoderPyfunc())
