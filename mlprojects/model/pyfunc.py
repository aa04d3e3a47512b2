"""Models-from-code definition of the torch dual-encoder pyfunc (MLflow logs this file, not a pickle)."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mlprojects.model.classifier import Classifier
from registry.contract import format_predictions, input_texts, parse_params, resolve_labels


class DualEncoderPyfunc(PythonModel):
    """Loads the saved Classifier once; label embeddings of its own label set are cached inside it."""

    def load_context(self, context) -> None:
        self.classifier = Classifier.load(context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        clf = self.classifier
        descriptions, threshold = parse_params(params)
        labels, thresholds = resolve_labels(clf.labels, clf.thresholds, descriptions, threshold)
        texts = input_texts(model_input, clf.text_columns)
        if not texts:
            return format_predictions(clf.predict_proba([], descriptions).reshape(0, len(labels)), labels, thresholds)
        probs = clf.predict_proba(texts, descriptions)
        single = clf.single_label and descriptions is None and threshold is None
        return format_predictions(probs, labels, thresholds, single)


mlflow.models.set_model(DualEncoderPyfunc())
