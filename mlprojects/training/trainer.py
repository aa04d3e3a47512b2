"""The SFT loop: one configuration, epoch by epoch, so Ray Tune can drive and checkpoint it too."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from mlprojects.config import TrainConfig
from mlprojects.data import multi_hot, soft_matrix
from mlprojects.evaluation.metrics import decide, f1_summary, tune_thresholds
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import DualEncoder, build_model
from mlprojects.training.augmentation import cloze_pair, drop_phrases
from mlprojects.training.losses import anchor_loss, in_batch_matching_loss, sft_loss
from registry.errors import ConfigError, TrainingError


@dataclass
class Split:
    texts: list[str]
    targets: np.ndarray  # multi-hot [n, n_labels]
    soft_targets: np.ndarray | None = None


@dataclass
class FitStream:
    """The fit split as batches streamed to this worker (its shard of a ray.data dataset), never held whole; it
    trains whole epochs, in the order the stream gives (shuffled locally), so there is no mid-epoch position."""

    rows: int  # in the whole stream, every worker's shard together
    single_label: bool
    batches: Callable[[int, int], Iterable[Split]]  # (epoch, documents per batch) -> this worker's batches


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict
    thresholds: np.ndarray
    history: list[dict] = field(default_factory=list)


class SFTTrainer:
    """Owns model, optimiser and schedule; `state()`/`load_state()` make a full checkpoint for PBT exploit."""

    def __init__(
        self,
        model: DualEncoder,
        label_texts: list[str],
        train: Split | FitStream,
        val: Split,
        cfg: TrainConfig,
        total_epochs: int | None = None,
    ):
        self.model, self.label_texts, self.train_split, self.val_split, self.cfg = model, label_texts, train, val, cfg
        streamed = isinstance(train, FitStream)
        self.single_label = train.single_label if streamed else bool((train.targets.sum(1) == 1).all())
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg.learning_rate, cfg.lora_b_lr_ratio), weight_decay=cfg.weight_decay
        )
        rows = train.rows if streamed else len(train.texts)
        steps = math.ceil(rows / cfg.batch_size / cfg.grad_accum_steps) * (total_epochs or cfg.max_epochs)
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(cfg.warmup_ratio * steps), steps)
        self.epoch = 0
        self.order: np.ndarray | None = None  # this epoch's document order; None between epochs
        self.cursor = 0  # batches of `order` already trained
        if not 0.0 <= cfg.description_dropout <= 1.0:
            raise ConfigError(f"description_dropout must be in [0, 1], got {cfg.description_dropout}")
        if streamed and cfg.anchor_weight > 0:
            raise ConfigError("anchor_weight needs the fit split in memory: a streamed one is never held to anchor")
        if streamed and cfg.cloze_weight > 0:
            raise ConfigError("cloze_weight needs the fit split in memory: the streamed path has no cloze pairs")
        self.anchors = pretrained_embeddings(model, train.texts) if cfg.anchor_weight > 0 else None
        self.step_model: torch.nn.Module = model  # what the training step calls: the model, or its DDP wrapper
        self.rank, self.world = 0, 1

    def distribute(self, rank: int, world: int) -> None:
        """Train as worker `rank` of `world` in an initialised process group: DDP averages the gradients, and each
        worker takes its share of every global batch (the order is the same on every worker: same seed)."""
        from torch.nn.parallel import DistributedDataParallel

        device = self.model.device
        self.step_model = DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
        self.rank, self.world = rank, world

    def _shard(self, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """This worker's part of a global batch and its loss weight: a shard's mean loss × n_shard·world/n_batch,
        averaged over workers by DDP, is the global batch's mean loss. A worker left without documents (a last
        batch smaller than the world) runs one document at weight 0, so its DDP all-reduce still happens."""
        if self.world == 1:
            return idx, 1.0
        mine = np.array_split(idx, self.world)[self.rank]
        if not len(mine):
            return idx[:1], 0.0
        return mine, len(mine) * self.world / len(idx)

    def _mean_loss(self, loss_sum: float, seen: int) -> float:
        """The mean training loss over every worker's documents."""
        if self.world > 1:
            import torch.distributed as dist

            totals = torch.tensor([loss_sum, float(seen)], dtype=torch.float64, device=self.model.device)
            dist.all_reduce(totals)
            loss_sum, seen = totals.tolist()
        return loss_sum / max(seen, 1)

    def _autocast(self):
        if self.model.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, logits, cos, idx_or_split, split: Split):
        targets = torch.as_tensor(split.targets[idx_or_split], device=logits.device)
        soft = (
            None
            if split.soft_targets is None
            else torch.as_tensor(split.soft_targets[idx_or_split], device=logits.device)
        )
        return sft_loss(
            logits.float(),
            cos.float(),
            targets,
            soft,
            self.cfg.contrastive_weight,
            self.cfg.margin,
            self.cfg.pos_weight,
            self.cfg.focal_gamma,
            self.cfg.softmax_weight,
        )

    def train_epoch(self) -> dict[str, float]:
        """Train to the end of the current epoch (the rest of it, when a checkpoint stopped mid-epoch)."""
        if isinstance(self.train_split, FitStream):
            _, loss_sum, seen = self._train_stream()
        else:
            _, loss_sum, seen = self._train_batches(budget=None)
        return {"train_loss": self._mean_loss(loss_sum, seen)}

    def train_steps(self, steps: int) -> dict[str, float]:
        """Train `steps` optimiser steps, across epoch ends, stopping early at `max_epochs` (PBT in steps)."""
        if isinstance(self.train_split, FitStream):
            raise TrainingError("a streamed fit split trains whole epochs, not a number of steps")
        done, loss_sum, seen = 0, 0.0, 0
        while done < steps and self.epoch < self.cfg.max_epochs:
            part_steps, part_loss, part_seen = self._train_batches(budget=steps - done)
            done, loss_sum, seen = done + part_steps, loss_sum + part_loss, seen + part_seen
        return {"train_loss": self._mean_loss(loss_sum, seen)}

    def _train_batches(self, budget: int | None) -> tuple[int, float, int]:
        """From the cursor to the end of this epoch, or until `budget` optimiser steps are done.

        Returns (optimiser steps, summed loss, documents seen)."""
        self.model.train()
        cfg, split = self.cfg, self.train_split
        if self.order is None:  # a new epoch: its batch order is part of the checkpoint
            self.order, self.cursor = self.rng.permutation(len(split.texts)), 0
        batches = [self.order[s : s + cfg.batch_size] for s in range(0, len(self.order), cfg.batch_size)]
        done, loss_sum, seen = 0, 0.0, 0
        self.optimizer.zero_grad()
        progress = tqdm(total=len(batches), initial=self.cursor, desc=f"epoch {self.epoch + 1}", leave=False)
        while self.cursor < len(batches) and (budget is None or done < budget):
            self.cursor += 1
            idx, weight = self._shard(batches[self.cursor - 1])
            stepped, loss = self._step(split, idx, weight, self.cursor, last=self.cursor == len(batches))
            done += stepped
            if weight:
                loss_sum, seen = loss_sum + loss * len(idx), seen + len(idx)
            progress.update()
        progress.close()
        if self.cursor == len(batches):
            self.epoch, self.order = self.epoch + 1, None
        return done, loss_sum, seen

    def _train_stream(self) -> tuple[int, float, int]:
        """One epoch of the stream: every worker's shard holds as many documents (Ray's equal split), so with a
        batch of batch_size / world documents each the workers run the same steps and DDP's average is the
        global batch's mean gradient."""
        self.model.train()
        done, loss_sum, seen, step = 0, 0.0, 0, 0
        self.optimizer.zero_grad()
        for step, batch in enumerate(
            self.train_split.batches(self.epoch, max(1, self.cfg.batch_size // self.world)), 1
        ):
            stepped, loss = self._step(batch, np.arange(len(batch.texts)), 1.0, step, last=False)
            done, loss_sum, seen = done + stepped, loss_sum + loss * len(batch.texts), seen + len(batch.texts)
        if step % self.cfg.grad_accum_steps:  # the epoch's last, partial accumulation
            self._apply_gradients()
            done += 1
        self.epoch += 1
        return done, loss_sum, seen

    def _step(self, split: Split, idx: np.ndarray, weight: float, step: int, last: bool) -> tuple[bool, float]:
        """Forward and backward on `split`'s documents `idx`; an optimiser step every grad_accum_steps batches
        and at the last. Returns (whether the optimiser stepped, the batch's mean loss)."""
        anchored = self.anchors is not None and split is self.train_split
        docs, label_texts = [split.texts[i] for i in idx], self._step_label_texts()
        pairs = self._cloze_pairs(docs) if split is self.train_split else []
        # one forward for both tasks (so DDP sees one): the pairs' contexts join the documents and their sentences
        # the labels; each loss reads its own block of the similarity matrix
        with self._autocast():
            out = self.step_model(
                docs + [context for _, context in pairs],
                label_texts + [query for query, _ in pairs],
                with_doc_emb=anchored,
            )
        n, k = len(docs), len(label_texts)
        loss, _ = self._loss(out[0][:n, :k], out[1][:n, :k], idx, split)
        if pairs:
            loss = loss + self.cfg.cloze_weight * in_batch_matching_loss(out[1][n:, k:].T.float())
        if anchored:
            anchors = self.anchors[torch.as_tensor(idx)].to(out[2].device)
            loss = loss + self.cfg.anchor_weight * anchor_loss(out[2][:n].float(), anchors)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {self.epoch + 1}, step {step}; "
                "lower the learning rate or check the data"
            )
        (loss * weight / self.cfg.grad_accum_steps).backward()
        stepped = step % self.cfg.grad_accum_steps == 0 or last
        if stepped:
            self._apply_gradients()
        return stepped, loss.item()

    def _step_label_texts(self) -> list[str]:
        """The label texts of one training step: the descriptions, or with phrases left out (augmentation)."""
        if self.cfg.description_dropout <= 0:
            return self.label_texts
        return [drop_phrases(text, self.cfg.description_dropout, self.rng) for text in self.label_texts]

    def _cloze_pairs(self, docs: list[str]) -> list[tuple[str, str]]:
        """The step's inverse-cloze pairs (sentence, rest of its document); none when off or fewer than two."""
        if self.cfg.cloze_weight <= 0:
            return []
        pairs = [pair for pair in (cloze_pair(doc, self.rng) for doc in docs) if pair is not None]
        return pairs if len(pairs) > 1 else []

    def _apply_gradients(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss, thresholds tuned on this split, and F1 at those thresholds."""
        split = self.val_split
        doc_emb, label_emb = self.model.embed(split.texts), self.model.embed_labels(self.label_texts)
        logits, cos = self.model.head(doc_emb.to(self.model.device), label_emb.to(self.model.device))
        loss, _ = self._loss(logits, cos, slice(None), split)
        probs = torch.sigmoid(logits).cpu().numpy()
        thresholds = tune_thresholds(split.targets, probs)
        metrics = f1_summary(split.targets, decide(probs, thresholds, self.single_label))
        return {"val_loss": float(loss), **metrics, "thresholds": thresholds}

    def state(self) -> dict:
        """Everything to continue exactly here, mid-epoch included: weights, optimiser, schedule, data order and
        the CPU random state (dropout masks)."""
        return {
            "model": self.model.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "order": self.order,
            "cursor": self.cursor,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, state: dict, optimizer: bool = True) -> None:
        """Restore a checkpoint; `optimizer=False` keeps fresh moments (e.g. after the LoRA rank changed)."""
        self.model.load_trainable_state(state["model"])
        if optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.order, self.cursor = state["epoch"], state["order"], state["cursor"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.apply_config()

    def apply_config(self) -> None:
        """Put this trainer's cfg (lr, weight decay) on the optimizer and schedule: a checkpoint carries the old ones.

        The schedule's warmup comes from cfg already (its lambda is not part of the checkpoint)."""
        groups = self.optimizer.param_groups
        self.scheduler.base_lrs = [self.cfg.learning_rate * g["lr_ratio"] for g in groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, base in zip(groups, self.scheduler.base_lrs):
            group.update(initial_lr=base, lr=base * factor, weight_decay=self.cfg.weight_decay)


def param_groups(model: torch.nn.Module, learning_rate: float, lora_b_lr_ratio: float) -> list[dict]:
    """The trainable parameters, LoRA's B matrices in a group of their own at `lora_b_lr_ratio` times the learning
    rate (LoRA+, Hayou et al. 2024: B starts at zero and learns too slowly at A's rate); 1.0 is plain LoRA."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    b = [p for n, p in trainable if "lora_B" in n]
    rest = [p for n, p in trainable if "lora_B" not in n]
    if lora_b_lr_ratio == 1.0 or not b:
        return [{"params": [p for _, p in trainable], "lr": learning_rate, "lr_ratio": 1.0}]
    return [
        {"params": rest, "lr": learning_rate, "lr_ratio": 1.0},
        {"params": b, "lr": learning_rate * lora_b_lr_ratio, "lr_ratio": lora_b_lr_ratio},
    ]


@torch.no_grad()
def pretrained_embeddings(model: DualEncoder, texts: list[str]) -> torch.Tensor:
    """The documents' embeddings by the pre-trained encoder (adapters off): where the anchor holds them."""
    with model.encoder.disable_adapter():
        return model.embed(texts)


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several trainable states (SWA over epochs): one model with less epoch noise."""
    if not states:
        raise TrainingError("no states to average")
    return {name: torch.stack([state[name] for state in states]).mean(0) for name in states[0]}


def fit(
    trainer: SFTTrainer, max_epochs: int, patience: int, on_epoch: Callable[[int, dict], None] | None = None
) -> FitResult:
    """Early stopping on validation F1-macro; the best epoch's weights are restored at the end."""
    best: tuple[float, int, dict, np.ndarray, dict] | None = None
    history = []
    for epoch in tqdm(range(1, max_epochs + 1), desc="SFT epochs"):
        record = trainer.train_epoch()
        val = trainer.validate()
        thresholds = val.pop("thresholds")
        record.update(val)
        history.append(record)
        if on_epoch:
            on_epoch(epoch, record)
        if best is None or record["f1_macro"] > best[0]:
            best = (record["f1_macro"], epoch, record, thresholds, trainer.model.trainable_state())
        elif epoch - best[1] >= patience:
            break
    _, best_epoch, best_record, thresholds, state = best
    trainer.model.load_trainable_state(state)
    return FitResult(best_epoch, best_record, thresholds, history)


def make_split(frame, label_names: list[str]) -> Split:
    """A normalised frame (text, labels[, soft_labels]) -> tensors-ready Split."""
    hard = multi_hot(frame["labels"], label_names)
    soft = soft_matrix(frame["soft_labels"], label_names, hard) if "soft_labels" in frame else None
    return Split(list(frame["text"]), hard, soft)


def train_classifier(
    cfg: TrainConfig,
    train,
    val,
    label_descriptions: dict[str, str],
    text_columns: list[str],
    on_epoch: Callable[[int, dict], None] | None = None,
    build: Callable[[TrainConfig], DualEncoder] = build_model,
):
    """Fine-tune one configuration and return (Classifier with tuned thresholds, FitResult). `build` makes the
    model from cfg after the seed is set (a benchmark passes a variant under study)."""
    torch.manual_seed(cfg.seed)
    names = list(label_descriptions)
    model = build(cfg)
    trainer = SFTTrainer(
        model, list(label_descriptions.values()), make_split(train, names), make_split(val, names), cfg
    )
    result = fit(trainer, cfg.max_epochs, cfg.patience, on_epoch)
    classifier = Classifier(
        model,
        dict(label_descriptions),
        result.thresholds,
        trainer.single_label,
        text_columns,
        cfg.new_label_adapter_scale,
    )
    return classifier, result
