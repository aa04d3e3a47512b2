"""User feedback on served predictions: a durable SQL store, file import/export, and its CLI.

from serving.feedback import FeedbackRecord, FeedbackStore
FeedbackStore(url).add(FeedbackRecord(prediction_id, model_name, model_version, text, predicted_labels, score))
"""

from serving.feedback.store import FeedbackRecord, FeedbackRejected, FeedbackStore, ImportReport
from serving.feedback.writer import FeedbackWriter

__all__ = ["FeedbackRecord", "FeedbackRejected", "FeedbackStore", "FeedbackWriter", "ImportReport"]
