"""A simulated user, for demos and benchmarks: scores a served prediction against the true labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def simulated_feedback(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]],
                       corrected_fraction: float, seed: int) -> tuple[list[int], list[list[str] | None]]:
    """(scores, corrected_labels): 4–5 when the served label set is exactly right, else 1–2; a
    `corrected_fraction` of users also type the true labels (None for the others)."""
    rng = np.random.default_rng(seed)
    scores = [int(rng.choice([4, 5])) if set(p) == set(t) else int(rng.choice([1, 2]))
              for p, t in zip(predicted, truth)]
    corrected = [list(t) if rng.random() < corrected_fraction else None for t in truth]
    return scores, corrected
