"""Models-from-code definition of the torch dual-encoder pyfunc (MLflow logs this file, not a pickle)."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mlprojects.model.classifier import Classifier
from registry.contract import predict


class DualEncoderPyfunc(PythonModel):
    """Loads the saved Classifier once; label embeddings of its own label set are cached inside it."""

    def load_context(self, context) -> None:
        self.classifier = Classifier.load(context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict(self.classifier, model_input, params)


mlflow.models.set_model(DualEncoderPyfunc())
