"""Carry a learned LoRA update to another rank, so a PBT exploit that changes `lora_r` keeps what was learned.

LoRA adds `(alpha / r) · B · A` to a frozen weight. For a new rank r' we factor that update by SVD and keep its
r' largest singular directions: exact when r' ≥ rank(B·A), the best rank-r' approximation (Eckart–Young)
when it is smaller. Extra rows of A are small random values and the matching columns of B are zero, so the
update is unchanged and the new directions still receive gradients (as in LoRA's own initialisation).
"""

from __future__ import annotations

import math

import torch

_A, _B = "lora_A", "lora_B"


def resize_lora_pair(
    a: torch.Tensor, b: torch.Tensor, alpha: float, new_r: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, in], B [out, r]) at scaling alpha/r -> (A' [new_r, in], B' [out, new_r]) at scaling alpha/new_r."""
    if new_r < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {new_r}")
    old_r = a.shape[0]
    delta = (alpha / old_r) * (b.double() @ a.double())  # [out, in]
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(new_r, old_r, s.numel())  # rank(B·A) <= old_r; further singular values are rounding noise
    root = torch.sqrt(s[:k] * new_r / alpha)  # split each singular value evenly between B and A
    new_b = torch.zeros(b.shape[0], new_r, dtype=torch.float64)
    new_a = torch.empty(new_r, a.shape[1], dtype=torch.float64)
    new_b[:, :k] = u[:, :k] * root
    new_a[:k] = root[:, None] * vh[:k]
    if new_r > k:  # same bound as kaiming_uniform_(a=sqrt(5)), peft's initialisation of A
        bound = 1.0 / math.sqrt(a.shape[1])
        new_a[k:] = (torch.rand(new_r - k, a.shape[1], generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return new_a.to(a.dtype), new_b.to(b.dtype)


def lora_rank(state: dict[str, torch.Tensor]) -> int | None:
    """The rank of the adapters in a state dict (None when it holds no LoRA weights)."""
    ranks = {v.shape[0] for k, v in state.items() if f".{_A}." in k}
    if len(ranks) > 1:
        raise ValueError(f"adapters of mixed ranks {sorted(ranks)}")
    return ranks.pop() if ranks else None


def resize_lora_state(
    state: dict[str, torch.Tensor], alpha: float, new_r: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A copy of a trainable state (DualEncoder.trainable_state) with every lora_A/lora_B pair at rank new_r."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for key_a in [k for k in state if f".{_A}." in k]:
        key_b = key_a.replace(f".{_A}.", f".{_B}.")
        out[key_a], out[key_b] = resize_lora_pair(state[key_a], state[key_b], alpha, new_r, generator)
    return out
