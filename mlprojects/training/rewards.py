"""The reward of a sampled label set, given one user's feedback on the prediction that was served.

Why this reward:
- Corrected labels, when the user gave them, are the strongest signal there is: the user said which labels
  are right. The reward is then the F1 agreement (Dice) of the sampled set with the corrected set, in [0, 1].
  F1 rather than per-label accuracy because with many labels most are absent, and per-label accuracy would
  reward "predict nothing"; F1 is also the platform's primary metric, so GRPO optimises what the lifecycle
  controller later compares.
- Otherwise the score says how good the served prediction was, not what the right labels are. The reward is
  the F1 agreement with the served labels signed and scaled by (score − 3) / 2, in [−1, 1]: a 5 pulls the
  policy towards what it served, a 1 pushes it away, a 3 is neutral (every sample gets 0, so the group's
  advantages are 0 and the document teaches nothing).
Both F1s are 1 for two empty sets (predicting "none of these" when none apply is right). The scales differ
(corrections in [0, 1], scores in [−1, 1]) but advantages are normalised per document, so only the ranking of
a document's G samples matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class FeedbackTarget:
    """What the reward needs from one feedback record, as 0/1 vectors over the model's labels."""

    predicted: np.ndarray  # [L] labels that were served
    score: int  # 1..5
    corrected: np.ndarray | None = None  # [L] labels the user says are right, if given


def set_f1(samples: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F1 (Dice) of each sampled set [..., L] with one target set [L]; 1.0 when both are empty."""
    samples = samples.astype(bool)
    target = target.astype(bool)
    tp = (samples & target).sum(-1)
    denom = samples.sum(-1) + target.sum()
    return np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))


def score_sign(score: int) -> float:
    """(score − 3) / 2: 1 → −1, 3 → 0, 5 → +1."""
    return (score - 3) / 2.0


def reward(samples: np.ndarray, target: FeedbackTarget) -> np.ndarray:
    """Rewards [G] of G sampled label sets [G, L] for one document."""
    if target.corrected is not None:
        return set_f1(samples, target.corrected)
    return score_sign(target.score) * set_f1(samples, target.predicted)


def targets_from_feedback(
    predicted: Sequence[Sequence[str]],
    scores: Sequence[int],
    corrected: Sequence[Sequence[str] | None],
    label_names: Sequence[str],
) -> list[FeedbackTarget]:
    """Feedback columns (label names) -> FeedbackTargets over `label_names`; unknown labels are an error upstream."""
    index = {name: i for i, name in enumerate(label_names)}

    def hot(labels: Sequence[str]) -> np.ndarray:
        vec = np.zeros(len(label_names), dtype=np.float32)
        vec[[index[l] for l in labels]] = 1.0
        return vec

    return [
        FeedbackTarget(hot(p), int(s), None if c is None else hot(c)) for p, s, c in zip(predicted, scores, corrected)
    ]
