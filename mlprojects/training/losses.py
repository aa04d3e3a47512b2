"""SFT losses of the dual encoder, as pure functions of logits, cosines and targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: float | None = None, focal_gamma: float = 0.0
) -> torch.Tensor:
    """Mean BCE-with-logits; `pos_weight` up-weights positives, `focal_gamma` > 0 gives the focal loss."""
    weight = None if pos_weight is None else torch.full_like(logits[0], float(pos_weight))
    ce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
    if focal_gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        ce = ce * (1 - p_t).pow(focal_gamma)
    return ce.mean()


def contrastive_margin_loss(cos: torch.Tensor, targets: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """mean(pos·(1−cos) + neg·relu(cos − margin)): pull true labels close, push others below the margin."""
    pos = targets
    neg = 1.0 - targets
    return (pos * (1.0 - cos) + neg * F.relu(cos - margin)).mean()


def label_softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a softmax over each document's labels against its positives shared equally (one-hot for
    single-label data): it ranks the labels against each other, which arg-max decisions depend on and per-label
    BCE does not. Documents without a positive label are left out; the bias cancels in the softmax."""
    has_positive = targets.sum(1) > 0
    if not has_positive.any():
        return logits.sum() * 0.0
    target = targets[has_positive] / targets[has_positive].sum(1, keepdim=True)
    return -(target * F.log_softmax(logits[has_positive], dim=1)).sum(1).mean()


def anchor_loss(doc_emb: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """mean(1 − cos) between unit-norm embeddings and where the pre-trained encoder put the same documents."""
    return (1.0 - (doc_emb * anchors).sum(1)).mean()


def in_batch_matching_loss(cos: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """Cross-entropy of each query (row) over the batch's contexts (columns) at `scale` · cos, its own context on
    the diagonal (the multiple-negatives ranking loss sentence-transformers trains with, scale 20 as there)."""
    return F.cross_entropy(scale * cos, torch.arange(len(cos), device=cos.device))


def sft_loss(
    logits: torch.Tensor,
    cos: torch.Tensor,
    targets: torch.Tensor,
    soft_targets: torch.Tensor | None = None,
    contrastive_weight: float = 0.1,
    margin: float = 0.2,
    pos_weight: float | None = None,
    focal_gamma: float = 0.0,
    softmax_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE on hard labels (averaged 50/50 with BCE on soft labels when given) plus the weighted margin term and,
    when `softmax_weight` > 0, the weighted label-softmax term."""
    bce = bce_loss(logits, targets, pos_weight, focal_gamma)
    if soft_targets is not None:
        bce = 0.5 * bce + 0.5 * bce_loss(logits, soft_targets, pos_weight, focal_gamma)
    contrastive = contrastive_margin_loss(cos, targets, margin)
    total = bce + contrastive_weight * contrastive
    parts = {"bce": float(bce.detach()), "contrastive": float(contrastive.detach())}
    if softmax_weight > 0:
        softmax = label_softmax_loss(logits, targets)
        total = total + softmax_weight * softmax
        parts["softmax"] = float(softmax.detach())
    return total, parts
