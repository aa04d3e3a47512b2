"""Benchmark: does GRPO on simulated user feedback improve a deliberately under-trained SFT model?

    python -m bench.bench_grpo [--sft-epochs 1] [--sft-lr 2e-4] [--epochs 3] [--beta 0.04] ...

On the Made With ML split (train 480 / test 120): SFT on half of the training part (1 epoch, low learning
rate: under-trained on purpose); its predictions on the other half are scored by a simulated user from the
true labels (5 or 4 when right, 1 or 2 when wrong; a fraction also gives the corrected labels); GRPO trains
a policy clone of that SFT model on this feedback. F1-macro before/after on the held-out 20 %, with the KL to
the reference, goes to bench/results/grpo.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.madewithml import load_split
from mlprojects.classifier import Classifier
from mlprojects.config import GRPOParams, TrainConfig
from mlprojects.grpo_train import GRPOTrainer, logits_of, prepare_policy
from mlprojects.metrics import decide
from mlprojects.rewards import targets_from_feedback
from mlprojects.train import train_classifier
from serving.feedback.simulate import simulated_feedback

RESULTS = Path(__file__).with_name("results") / "grpo.json"


def simulate_feedback(clf: Classifier, frame, corrected_fraction: float, seed: int):
    """Served labels of `clf` and a simulated user's verdict on each (serving.feedback.simulate)."""
    probs = clf.predict_proba(list(frame["text"]))
    served = decide(probs, clf.thresholds, clf.single_label)
    predicted = [[clf.labels[j] for j in np.flatnonzero(row)] for row in served]
    scores, corrected = simulated_feedback(predicted, list(frame["labels"]), corrected_fraction, seed)
    accuracy = float(np.mean([set(p) == set(t) for p, t in zip(predicted, frame["labels"])]))
    return predicted, scores, corrected, accuracy


def bernoulli_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor) -> float:
    """Exact mean per-label KL(policy ‖ reference) of the Bernoulli heads, on held-out documents."""
    p, q = torch.sigmoid(policy_logits), torch.sigmoid(ref_logits)
    eps = 1e-7
    kl = p * (torch.log(p + eps) - torch.log(q + eps)) + (1 - p) * (torch.log(1 - p + eps) - torch.log(1 - q + eps))
    return float(kl.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-epochs", type=int, default=1)
    ap.add_argument("--sft-lr", type=float, default=2e-4)
    ap.add_argument("--corrected-fraction", type=float, default=0.3)
    ap.add_argument("--epochs", type=float, default=3.0, help="GRPO num_train_epochs")
    ap.add_argument("--learning-rate", type=float, default=GRPOParams.learning_rate)
    ap.add_argument("--beta", type=float, default=GRPOParams.beta)
    ap.add_argument("--num-generations", type=int, default=GRPOParams.num_generations)
    ap.add_argument("--batch-size", type=int, default=64, help="completions per step (documents × generations)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    started = time.time()
    train, test, descriptions = load_split()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    half = len(train) // 2
    sft_part, feedback_part = train.iloc[order[:half]], train.iloc[order[half:]]
    sft_train, sft_val = sft_part.iloc[: int(0.8 * half)], sft_part.iloc[int(0.8 * half):]

    cfg = TrainConfig(max_epochs=args.sft_epochs, learning_rate=args.sft_lr, seed=args.seed)
    sft, _ = train_classifier(cfg, sft_train, sft_val, descriptions, ["text"])
    sft_time = time.time() - started
    predicted, scores, corrected, served_accuracy = simulate_feedback(sft, feedback_part, args.corrected_fraction,
                                                                      args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        sft.save(Path(tmp) / "sft")
        reference = Classifier.load(Path(tmp) / "sft")
        policy = Classifier.load(Path(tmp) / "sft")
    before = reference.f1_scores(test)
    params = replace(GRPOParams(), num_train_epochs=args.epochs, learning_rate=args.learning_rate, beta=args.beta,
                     num_generations=args.num_generations, per_device_train_batch_size=args.batch_size, seed=args.seed)
    prepare_policy(policy, params)
    trainer = GRPOTrainer(policy, reference, list(feedback_part["text"]),
                          targets_from_feedback(predicted, scores, corrected, reference.labels), params)
    grpo_started = time.time()
    result = trainer.train()
    grpo_time = time.time() - grpo_started
    after = policy.f1_scores(test)
    test_kl = bernoulli_kl(logits_of(policy, list(test["text"])), logits_of(reference, list(test["text"])))

    report = {
        "dataset": "madewithml (train 480 / test 120, bench.madewithml.load_split)",
        "encoder": cfg.encoder, "sft": {"docs": len(sft_train), "epochs": args.sft_epochs, "learning_rate": args.sft_lr},
        "feedback": {"docs": len(feedback_part), "served_accuracy": served_accuracy,
                     "mean_score": float(np.mean(scores)),
                     "corrected": int(sum(c is not None for c in corrected))},
        "grpo": params.to_params() | {"steps": result.steps},
        "f1_macro_before": before["f1_macro"], "f1_macro_after": after["f1_macro"],
        "f1_micro_before": before["f1_micro"], "f1_micro_after": after["f1_micro"],
        "kl_train_k3_last_steps": result.final("kl"), "kl_test_exact": test_kl,
        "reward_mean_first_steps": float(np.mean([h["reward_mean"] for h in result.history[:5]])),
        "reward_mean_last_steps": result.final("reward_mean"),
        "seconds": {"sft": sft_time, "grpo": grpo_time, "total": time.time() - started},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
