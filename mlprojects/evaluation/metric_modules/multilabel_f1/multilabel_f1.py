"""Multi-label F1 as a local HF `evaluate` module (the hub's "f1" cannot be downloaded here).

    # the path, or MULTILABEL_F1 from mlprojects.evaluation.judging
    metric = evaluate.load("mlprojects/evaluation/metric_modules/multilabel_f1")
    metric.compute(predictions=[[0, 1, 1]], references=[[0, 1, 0]], label_names=["a", "b", "c"])

Inputs are multi-hot rows (one 0/1 per label). The maths is `mlprojects.evaluation.metrics.multilabel_report`
(pure numpy, shared with the bootstrap), so the module and the intervals can never disagree.
"""

import datasets
import evaluate
import numpy as np

from mlprojects.evaluation.metrics import multilabel_report

_DESCRIPTION = """F1-macro (primary), F1-micro, F1-weighted, per-label precision/recall/F1/support and subset
accuracy for multi-label classification; undefined ratios count as 0 (scikit-learn's zero_division=0)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): multi-hot predicted labels, one row per document.
    references (list of list of int): multi-hot true labels, same shape.
    label_names (list of str, optional): names for the per-label entries; default "0", "1", ...
Returns:
    f1_macro, f1_micro, f1_weighted, subset_accuracy (float) and per_label
    ({label: {precision, recall, f1, support}}).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#multilabel-ranking-metrics"],
        )

    def _compute(self, predictions, references, label_names=None):
        y_pred, y_true = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        return multilabel_report(y_true, y_pred, label_names)
