"""The dual encoder: one shared transformer embeds documents and label descriptions; scaled cosine is the logit.

No classification head: the label set is whatever descriptions are passed in, so new labels work zero-shot.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlprojects.config import resolve_encoder
from registry.errors import ConfigError

# LoRA targets per architecture (peft name suffixes): (attention layers, feed-forward layers). SFT adapts both, every
# linear layer of each transformer block: chosen over the attention layers alone on Made With ML's validation split,
# at no more time on the demo data with 6 epochs instead of 8 (bench/README.md, "A default recipe"). GRPO adapts the
# attention layers only, the recipe it was measured with. bge-m3 is XLM-RoBERTa; MiniLM is BERT. BERT's
# `output.dense` suffix matches the attention output and the feed-forward output, not `pooler.dense` (unused here).
_BERT_TARGETS = (["query", "key", "value", "attention.output.dense"], ["intermediate.dense", "output.dense"])
_LORA_TARGETS = {
    "bert": _BERT_TARGETS,
    "roberta": _BERT_TARGETS,
    "xlm-roberta": _BERT_TARGETS,
    "distilbert": (["q_lin", "k_lin", "v_lin", "out_lin"], ["lin1", "lin2"]),
    "mpnet": (["q", "k", "v", "o"], ["intermediate.dense", "output.dense"]),
}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that are not padding."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first token's vector (bge-m3's dense embedding uses CLS)."""
    return hidden[:, 0]


POOLERS = {"mean": mean_pool, "cls": cls_pool}


def lora_target_modules(model_type: str, feed_forward: bool = True) -> list[str]:
    """Our choice per architecture (attention, and the feed-forward layers unless `feed_forward=False`), else
    peft's own table, else a clear error."""
    if model_type in _LORA_TARGETS:
        attention, ffn = _LORA_TARGETS[model_type]
        return attention + ffn if feed_forward else list(attention)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_table

    if model_type in peft_table:
        return list(peft_table[model_type])
    raise ConfigError(f"no LoRA target modules known for architecture '{model_type}'; set lora_target_modules")


class DualEncoder(nn.Module):
    """Shared encoder + pooling + L2 norm; logits = scale · cos + bias, scale learnt in log space (as in CLIP)."""

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer,
        pooling: str = "mean",
        max_length: int = 128,
        init_scale: float = 20.0,
        init_bias: float = -6.0,
    ):
        super().__init__()
        if pooling not in POOLERS:
            raise ConfigError(f"pooling must be one of {sorted(POOLERS)}, got '{pooling}'")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def device(self) -> torch.device:
        return self.bias.device

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings [n, d], with gradients (training path)."""
        batch = self.tokenize(texts)
        hidden = self.encoder(**batch).last_hidden_state
        return F.normalize(POOLERS[self.pooling](hidden, batch["attention_mask"]).float(), dim=-1)

    def head(self, doc_emb: torch.Tensor, label_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, cos) for every document × label pair."""
        cos = doc_emb @ label_emb.T
        return self.scale * cos + self.bias, cos

    def encode_labels(self, label_texts: Sequence[str]) -> torch.Tensor:
        """Label embeddings for a training step: the shared (LoRA) encoder, so they move with the documents'. A
        variant that embeds labels differently overrides this and `embed_labels` together."""
        return self.encode(label_texts)

    def forward(self, docs: Sequence[str], label_texts: Sequence[str], with_doc_emb: bool = False) -> tuple:
        """Training step: (logits, cos) of the documents against the label descriptions, and the documents'
        embeddings third when asked (a loss on them, e.g. an anchor to the pre-trained encoder)."""
        doc_emb = self.encode(docs)
        logits, cos = self.head(doc_emb, self.encode_labels(label_texts))
        return (logits, cos, doc_emb) if with_doc_emb else (logits, cos)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Inference embeddings, batched by length so padding is small; returned in the input order."""
        was_training = self.training
        self.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = torch.empty((len(texts), 0))
        chunks = [
            self.encode([texts[i] for i in order[s : s + batch_size]]).cpu() for s in range(0, len(texts), batch_size)
        ]
        if chunks:
            out = torch.cat(chunks)[torch.as_tensor(np.argsort(order))]
        self.train(was_training)
        return out

    def embed_labels(self, label_texts: Sequence[str]) -> torch.Tensor:
        """Inference embeddings of label descriptions (see `encode_labels`)."""
        return self.embed(label_texts)

    @torch.no_grad()
    def probabilities(self, doc_emb: torch.Tensor, label_emb: torch.Tensor) -> np.ndarray:
        logits, _ = self.head(doc_emb.to(self.device), label_emb.to(self.device))
        return torch.sigmoid(logits).cpu().numpy()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Copies of the parameters that training changes (LoRA, scale, bias): a cheap best-checkpoint."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)


def load_encoder(name_or_path: str):
    """AutoModel + AutoTokenizer from an HF id or a local directory (offline when it is local)."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_encoder(name_or_path)
    try:
        return AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(f"cannot load encoder '{name_or_path}': {exc}") from exc


def check_encoder_fit(cfg, lora_ranks: Sequence[int] = ()) -> None:
    """Refuse, before any data is read, a recipe the encoder cannot hold: a LoRA rank above the layer width is a
    factorisation with more parameters than the weight it adapts (peft would build it and train noise), and a
    `max_length` beyond the position embeddings fails only on the first long document, mid-training."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_encoder(cfg.encoder))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load encoder '{cfg.encoder}': {exc}") from exc
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    rank = max([cfg.lora_r, *lora_ranks])
    if width and rank > width:
        raise ConfigError(f"lora_r {rank} exceeds the encoder's hidden size {width}; use a rank <= {width}")
    positions = getattr(config, "max_position_embeddings", None)
    if positions and cfg.max_length > positions:
        raise ConfigError(f"max_length {cfg.max_length} exceeds the encoder's {positions} position embeddings")
    if cfg.lora_target_modules:
        check_lora_targets(config, cfg.lora_target_modules)


def check_lora_targets(config, targets: Sequence[str]) -> None:
    """Each target must name a layer (peft's rule: the module's name, or its last dotted parts): peft only fails
    when none does, so one mistyped name would silently train fewer layers. The encoder is built on the meta
    device, from its config alone: no weights are loaded."""
    from transformers import AutoModel

    with torch.device("meta"):
        modules = dict(AutoModel.from_config(config).named_modules())
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in modules)]
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, nn.Linear)})
        raise ConfigError(f"lora_target_modules {unmatched} name no layer of the encoder; its linear layers: {linear}")


def add_lora(encoder: nn.Module, r: int, alpha: int, dropout: float, targets: list[str] | None = None):
    """Freeze the encoder and wrap it with LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    targets = targets or lora_target_modules(encoder.config.model_type)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(encoder, config)


def build_model(cfg, lora: bool = True) -> DualEncoder:
    """A DualEncoder from a TrainConfig; `lora=False` gives the frozen zero-shot baseline."""
    encoder, tokenizer = load_encoder(cfg.encoder)
    if lora:
        encoder = add_lora(encoder, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    else:
        encoder.requires_grad_(False)
    model = DualEncoder(encoder, tokenizer, cfg.pooling, cfg.max_length, cfg.init_scale, cfg.init_bias)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def has_lora(model: DualEncoder) -> bool:
    """Whether the encoder still holds LoRA adapters (a peft model over the encoder they were trained on)."""
    return hasattr(model.encoder, "merge_and_unload")


def merged_encoder(model: DualEncoder, adapter_scale: float = 1.0) -> nn.Module:
    """A plain transformers encoder with LoRA folded in: what is saved and served (no peft at inference).

    `adapter_scale` < 1 folds in only that fraction of the adapter (W + s·BA): a weight-space blend of the
    fine-tuned and the pre-trained encoder (WiSE-FT), which keeps more of the pre-trained zero-shot ability."""
    encoder = copy.deepcopy(model.encoder).cpu()
    if not has_lora(model):
        return encoder
    if adapter_scale != 1.0:
        from peft.tuners.lora import LoraLayer

        for module in encoder.modules():
            if isinstance(module, LoraLayer):
                for adapter in module.scaling:
                    module.scaling[adapter] *= adapter_scale
    return encoder.merge_and_unload()


def blended(model: DualEncoder, adapter_scale: float) -> DualEncoder:
    """`model` with only `adapter_scale` of its LoRA update folded in; tokenizer, pooling, logit scale and bias
    kept: the new-label encoder before it is saved."""
    return DualEncoder(
        merged_encoder(model, adapter_scale),
        model.tokenizer,
        model.pooling,
        model.max_length,
        float(model.scale),
        float(model.bias),
    ).eval()


def save_encoder(model: DualEncoder, directory: Path, adapter_scale: float = 1.0) -> None:
    merged_encoder(model, adapter_scale).save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
