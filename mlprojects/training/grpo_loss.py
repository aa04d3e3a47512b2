"""The GRPO objective for a multi-label policy, as pure tensor functions (mirrors TRL's `GRPOTrainer._compute_loss`).

The policy is an independent Bernoulli per label, p = sigmoid(logit / temperature). A sampled label set is a
0/1 vector: TRL's "completion" with one "token" per label, so every per-token formula of TRL applies per label
and a "sequence" is one label vector (all of equal length, so the completion mask is all ones).

Shapes: logits [B, L] (one row per document), samples/log-probs [B, G, L] (G generations per document),
rewards/advantages [B, G].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
ADV_EPS = 1e-4  # TRL's constant in (r - mean) / (std + eps)


def sample_label_sets(
    logits: torch.Tensor, num_generations: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """G label sets per document from Bernoulli(sigmoid(logits / T)): float 0/1 tensor [B, G, L]."""
    probs = torch.sigmoid(logits.detach() / temperature).unsqueeze(1).expand(-1, num_generations, -1)
    return torch.bernoulli(probs, generator=generator)


def label_logps(logits: torch.Tensor, samples: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-label log-probability of each sampled set, log p^y (1-p)^(1-y): [B, G, L] (numerically stable)."""
    z = (logits / temperature).unsqueeze(1)
    return samples * F.logsigmoid(z) + (1.0 - samples) * F.logsigmoid(-z)


def bernoulli_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-label entropy (nats) of the policy [B, L]; its mean is TRL's `entropy` metric."""
    z = logits / temperature
    p = torch.sigmoid(z)
    return -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))


def group_advantages(rewards: torch.Tensor, scale_rewards: str = "group") -> torch.Tensor:
    """A = r − mean_group(r), divided by (std + 1e-4) of the group ("group"), the batch ("batch"), or not ("none").

    Equal rewards in a group carry no preference, so they give A = 0 (never NaN: the std is unbiased as in
    TRL, and a group of one has std 0).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "none":
        return centred
    g = rewards.shape[1]
    if scale_rewards == "group":
        std = rewards.std(dim=1, keepdim=True) if g > 1 else torch.zeros_like(rewards[:, :1])
    else:
        std = rewards.std() if rewards.numel() > 1 else torch.zeros(())
    return torch.nan_to_num(centred / (std + ADV_EPS), nan=0.0)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy ‖ reference) per label: exp(ref − pol) − (ref − pol) − 1 ≥ 0."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


@dataclass
class GRPOLoss:
    loss: torch.Tensor
    kl: float
    clip_fraction: float  # share of labels whose ratio was clipped in the direction of its advantage
    ratio_mean: float


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",
) -> GRPOLoss:
    """Clipped-ratio surrogate + beta · k3 KL, aggregated as TRL's `loss_type`.

    logps/old_logps/ref_logps: [N, L] per-label log-probs of N sampled label sets (documents × generations
    flattened) under the policy now, when sampled, and under the reference; advantages: [N].
    Aggregation (the mask is all ones, so TRL's formulas reduce to): "grpo" mean over labels then over
    sequences; "bnpo" and "dapo" mean over every label of the batch (one process, no accumulation: their
    token counts coincide); "dr_grpo" sum / (N · max_completion_length) with L as the length.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    eps_low, eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    log_ratio = logps - old_logps
    if importance_sampling_level == "sequence":
        log_ratio = log_ratio.mean(-1, keepdim=True)
    elif importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got {importance_sampling_level!r}"
        )
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    adv = advantages.unsqueeze(1)
    per_label = -torch.min(coef_1 * adv, coef_2 * adv)
    kl = torch.zeros(())
    if ref_logps is not None:
        per_label_kl = k3_kl(logps, ref_logps)
        kl = per_label_kl.mean()
        if beta != 0.0:
            per_label = per_label + beta * per_label_kl
    per_label = per_label.expand_as(logps)
    if loss_type == "grpo":
        loss = per_label.mean(-1).mean()
    elif loss_type == "dr_grpo":
        loss = per_label.sum() / (per_label.shape[0] * per_label.shape[1])
    else:  # bnpo, dapo
        loss = per_label.sum() / per_label.numel()
    clipped = ((coef_1 < 1 - eps_low) & (adv < 0)) | ((coef_1 > 1 + eps_high) & (adv > 0))
    return GRPOLoss(loss, float(kl.detach()), float(clipped.float().mean()), float(coef_1.detach().mean()))


def correction_loss(logits: torch.Tensor, corrected: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean BCE towards the labels users typed, over the rows that have them (rows of NaN have none); 0 when
    no row does. Not part of TRL's GRPO: the supervised term the grpo stage adds on corrected feedback."""
    rows = ~torch.isnan(corrected).any(dim=-1)
    if not rows.any():
        return logits.sum() * 0.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[rows] / temperature, corrected[rows])
