"""A simulated user, for demos and benchmarks: scores a served prediction against the true labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import requests

SCORING_BATCH = 64  # documents per /invocations request, well under the endpoint's row cap


def agreement_score(predicted: Sequence[str], truth: Sequence[str]) -> int:
    """1 + 4 · Jaccard(served, true), rounded: 5 exactly right, 3 half right, 1 nothing right. A user rates a
    prediction with three of four labels right above one with none right (an exact-match user would give both
    a 1, and GRPO would push the right labels down with the wrong ones)."""
    served, true = set(predicted), set(truth)
    union = served | true
    jaccard = len(served & true) / len(union) if union else 1.0
    return int(np.floor(1 + 4 * jaccard + 0.5))


def simulated_feedback(
    predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]], corrected_fraction: float, seed: int
) -> tuple[list[int], list[list[str] | None]]:
    """(scores, corrected_labels): each score from the served labels' agreement with the true ones; a
    `corrected_fraction` of users also type the true labels (None for the others)."""
    rng = np.random.default_rng(seed)
    scores = [agreement_score(p, t) for p, t in zip(predicted, truth)]
    corrected = [list(t) if rng.random() < corrected_fraction else None for t in truth]
    return scores, corrected


def rate_through_endpoint(url: str, frame, corrected_fraction: float, seed: int, source: str) -> dict:
    """Score `frame` (text, labels) through the endpoint's /invocations and send the simulated users' verdicts
    to /feedback: the same HTTP path real users take. Counts of what was scored and stored."""
    predictions = []
    for start in range(0, len(frame), SCORING_BATCH):  # the endpoint refuses requests of too many documents
        records = frame[["text"]].iloc[start : start + SCORING_BATCH].to_dict("records")
        answer = requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=300)
        answer.raise_for_status()
        predictions += answer.json()["predictions"]
    scores, corrected = simulated_feedback(
        [p["labels"] for p in predictions], list(frame["labels"]), corrected_fraction, seed
    )
    stored = 0
    for prediction, score, fix in zip(predictions, scores, corrected):
        body = {"prediction_id": prediction["prediction_id"], "score": score, "source": source}
        if fix is not None:
            body["corrected_labels"] = fix
        stored += requests.post(f"{url}/feedback", json=body, timeout=30).ok
    return {
        "scored": len(predictions),
        "feedback_stored": stored,
        "mean_score": float(np.mean(scores)),
        "served_exactly_right": float(np.mean([s == 5 for s in scores])),
    }
