"""Label-description augmentation: a training step sees each description with some of its phrases left out.

A description like "Value-added tax: VAT rates, input and output VAT, reverse charge" is a list of phrases; training
against random subsets of them teaches the encoder to match a document to what a description says rather than to
one fixed embedding per trained label, the skill a new label set described in other words depends on.

The inverse cloze task (Lee et al. 2019) asks the same skill of the documents themselves: one sentence of a document,
taken out, must find the rest of its document among the batch's. It needs no labels, so it trains matching short
texts to documents in the data's own domain, not only to the trained labels."""

from __future__ import annotations

import re

import numpy as np

_PHRASE_BREAKS = re.compile(r"\s*[,;:]\s*|\s+and\s+")
_SENTENCE_BREAKS = re.compile(r"(?<=[.!?])\s+")


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


def cloze_pair(text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(one sentence of `text`, the text without it), the sentence drawn at random; None for a single sentence."""
    sentences = [piece for piece in _SENTENCE_BREAKS.split(text.strip()) if piece]
    if len(sentences) < 2:
        return None
    taken = int(rng.integers(len(sentences)))
    return sentences[taken], " ".join(sentences[:taken] + sentences[taken + 1 :])
