"""Label-description augmentation: a training step sees each description with some of its phrases left out.

A description like "Value-added tax: VAT rates, input and output VAT, reverse charge" is a list of phrases; training
against random subsets of them teaches the encoder to match a document to what a description says rather than to
one fixed embedding per trained label, the skill a new label set described in other words depends on."""

from __future__ import annotations

import re

import numpy as np

_PHRASE_BREAKS = re.compile(r"\s*[,;:]\s*|\s+and\s+")


def phrases(description: str) -> list[str]:
    """The description's phrases, split at commas, semicolons, colons and "and"; empty pieces dropped."""
    return [piece for piece in _PHRASE_BREAKS.split(description.strip().rstrip(".")) if piece]


def drop_phrases(description: str, drop: float, rng: np.random.Generator) -> str:
    """The description with each phrase left out with probability `drop`, at least one kept, order kept."""
    parts = phrases(description)
    if drop <= 0 or len(parts) < 2:
        return description
    keep = rng.random(len(parts)) >= drop
    if not keep.any():
        keep[rng.integers(len(parts))] = True
    return ", ".join(part for part, kept in zip(parts, keep) if kept)
