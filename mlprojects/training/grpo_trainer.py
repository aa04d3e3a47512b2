"""The GRPO loop: a trainable policy (LoRA on the policy clone) learns from feedback, anchored to a frozen reference.

Per step, for a batch of feedback documents: G label sets are sampled from the policy's Bernoulli per label,
each is rewarded against that document's feedback (`mlprojects.training.rewards`), advantages are normalised within the
document's group, and the clipped surrogate + beta · KL(policy ‖ reference) is minimised
(`mlprojects.training.grpo_loss`). Documents whose user also typed the right labels add `sft_weight` · BCE towards
them: a correction is a full label, and a supervised term learns it in one step where sampled rewards need
many. The reference is frozen: its logits are computed once, up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mlprojects.config import GRPOParams
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import add_lora, lora_target_modules
from mlprojects.training.grpo_loss import (
    bernoulli_entropy,
    correction_loss,
    group_advantages,
    grpo_loss,
    label_logps,
    sample_label_sets,
)
from mlprojects.training.rewards import FeedbackTarget, reward
from registry.errors import ConfigError, TrainingError


@dataclass
class GRPOResult:
    steps: int
    history: list[dict] = field(default_factory=list)

    def final(self, key: str, last: int = 5) -> float:
        """Mean of the last few steps: single steps are noisy (sampled label sets)."""
        values = [h[key] for h in self.history[-last:]]
        return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def logits_of(classifier: Classifier, texts: Sequence[str]) -> torch.Tensor:
    """Logits [n, L] of a classifier for its own labels (eval mode, batched)."""
    model = classifier.model
    doc_emb, label_emb = model.embed(list(texts)), classifier.label_embeddings()
    return model.head(doc_emb.to(model.device), label_emb.to(model.device))[0].float().cpu()


def prepare_policy(policy: Classifier, params: GRPOParams) -> Classifier:
    """Fresh LoRA adapters on the policy's merged encoder; scale and bias stay trainable, as in SFT. Their A
    matrices are drawn from the seed, so the same feedback trains the same policy."""
    encoder = policy.model.encoder
    targets = lora_target_modules(encoder.config.model_type, feed_forward=False)
    torch.manual_seed(params.seed)
    policy.model.encoder = add_lora(encoder, params.lora_r, params.lora_alpha, 0.0, targets)
    policy.model.to(policy.model.device)
    policy._label_emb = None  # the encoder will change
    return policy


def docs_per_step(params: GRPOParams) -> int:
    """TRL counts completions per batch, so a batch must hold whole groups of `num_generations`."""
    if params.num_generations < 2:
        raise ConfigError("num_generations must be at least 2: advantages compare samples within a group")
    if params.per_device_train_batch_size % params.num_generations:
        raise ConfigError(
            f"per_device_train_batch_size ({params.per_device_train_batch_size}) must be a multiple "
            f"of num_generations ({params.num_generations}), as in TRL"
        )
    return params.per_device_train_batch_size // params.num_generations


class GRPOTrainer:
    """Owns the policy, its optimiser and schedule, the feedback targets and the reference's logits."""

    def __init__(
        self,
        policy: Classifier,
        reference: Classifier,
        texts: Sequence[str],
        targets: Sequence[FeedbackTarget],
        params: GRPOParams,
    ):
        if policy.labels != reference.labels:
            raise ConfigError(f"policy labels {policy.labels} differ from reference labels {reference.labels}")
        if not texts or len(texts) != len(targets):
            raise ConfigError("GRPO needs at least one feedback document, with one target each")
        self.policy, self.params = policy, params
        self.texts, self.targets = list(texts), list(targets)
        self.corrected = torch.as_tensor(
            np.stack(
                [t.corrected if t.corrected is not None else np.full_like(t.predicted, np.nan) for t in self.targets]
            ),
            dtype=torch.float32,
        )
        self.label_texts = list(policy.label_descriptions.values())
        self.ref_logits = logits_of(reference, self.texts)
        self.batch_docs = docs_per_step(params)
        torch.manual_seed(params.seed)
        self.rng = np.random.default_rng(params.seed)
        self.generator = torch.Generator().manual_seed(params.seed)
        steps_per_epoch = math.ceil(len(self.texts) / self.batch_docs)
        self.total_steps = max(1, math.ceil(params.num_train_epochs * steps_per_epoch))
        trainable = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
        from transformers import get_linear_schedule_with_warmup  # TRL's default schedule: linear, no warm-up

        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 0, self.total_steps * params.num_iterations)

    def _batches(self):
        while True:
            order = self.rng.permutation(len(self.texts))
            for s in range(0, len(order), self.batch_docs):
                yield order[s : s + self.batch_docs]

    def _policy_logits(self, idx: np.ndarray) -> torch.Tensor:
        # eval mode: no dropout, so old/new log-probs and the KL compare the same function
        self.policy.model.eval()
        logits, _ = self.policy.model([self.texts[i] for i in idx], self.label_texts)
        return logits.float().cpu()

    def step(self, idx: np.ndarray) -> dict[str, float]:
        p = self.params
        logits = self._policy_logits(idx)
        samples = sample_label_sets(logits, p.num_generations, p.temperature, self.generator)  # [B, G, L]
        rewards = torch.as_tensor(
            np.stack([reward(samples[b].numpy(), self.targets[i]) for b, i in enumerate(idx)]), dtype=torch.float32
        )
        advantages = group_advantages(rewards, p.scale_rewards).reshape(-1)
        n_labels = samples.shape[-1]
        old_logps = label_logps(logits.detach(), samples, p.temperature).reshape(-1, n_labels)
        ref_logps = label_logps(self.ref_logits[idx], samples, p.temperature).reshape(-1, n_labels)
        for it in range(p.num_iterations):
            if it:
                logits = self._policy_logits(idx)
            logps = label_logps(logits, samples, p.temperature).reshape(-1, n_labels)
            out = grpo_loss(
                logps,
                old_logps,
                ref_logps,
                advantages,
                p.epsilon,
                p.epsilon_high,
                p.beta,
                p.loss_type,
                p.importance_sampling_level,
            )
            supervised = correction_loss(logits, self.corrected[idx], p.temperature)
            loss = out.loss + p.sft_weight * supervised
            if not torch.isfinite(loss):
                raise TrainingError(f"GRPO loss became {loss.item()}; lower the learning rate")
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), p.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
        return {
            "loss": float(loss.detach()),
            "supervised_loss": float(supervised.detach()),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(dim=1).mean()) if p.num_generations > 1 else 0.0,
            "frac_reward_zero_std": float((rewards.std(dim=1) < 1e-8).float().mean()),
            "kl": out.kl,
            "clip_fraction": out.clip_fraction,
            "entropy": float(bernoulli_entropy(logits.detach(), p.temperature).mean()),
        }

    def train(self, on_step: Callable[[int, dict], None] | None = None) -> GRPOResult:
        history = []
        batches = self._batches()
        for step in tqdm(range(1, self.total_steps + 1), desc="GRPO steps"):
            record = self.step(next(batches))
            history.append(record)
            if on_step:
                on_step(step, record)
        self.policy._label_emb = None  # cached embeddings predate training
        return GRPOResult(self.total_steps, history)
