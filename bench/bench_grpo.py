"""Benchmark: does the `grpo` stage improve a champion from user feedback, more than plain supervision would?

    python -m bench.bench_grpo [--seeds 1 2 3] [--corrected-fraction 0.3]

Made With ML (bench.madewithml.load_split: 480 rows to work with, 120 test rows nobody trains or selects on).
Per seed, the 480 rows are halved (stratified): the champion is SFT-trained with the stage defaults on one half
(fit 75 % / validation 25 %: early stopping and thresholds); its served predictions on the other half (the
"production" half) are rated by a simulated user (score 1 + 4 · Jaccard(served, true)); 30 % of users also type
the true labels. From that feedback, each starting from the champion:
- `grpo`: the stage's trainer with sft_weight = 0 (rewards only),
- `grpo+sft`: the stage's default (rewards, plus a supervised term on the corrected rows),
- `supervised`: the baseline a team would try first, the champion fine-tuned further on the corrected rows only
  (fresh LoRA, early stopping on the champion's validation split).
Every candidate's thresholds are re-tuned on the champion's validation split. All are scored on the test rows;
gains over the champion with paired-bootstrap 95 % intervals. Results: bench/results/grpo.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.machine import machine_info
from bench.madewithml import load_split
from mlprojects.config import GRPOParams, TrainConfig
from mlprojects.data import multi_hot, stratified_split
from mlprojects.evaluation.bootstrap import paired_bootstrap
from mlprojects.evaluation.metrics import f1_summary
from mlprojects.model.classifier import Classifier
from mlprojects.training.grpo_trainer import GRPOTrainer, prepare_policy
from mlprojects.training.rewards import targets_from_feedback
from mlprojects.training.trainer import SFTTrainer, fit, make_split, train_classifier
from registry.cli import ArgumentParser
from serving.feedback.simulate import simulated_feedback

RESULTS = Path(__file__).with_name("results") / "grpo.json"
VARIANTS = ("grpo", "grpo+sft", "supervised")


def served_labels(clf: Classifier, frame) -> list[list[str]]:
    return [[clf.labels[j] for j in np.flatnonzero(row)] for row in clf.decisions(list(frame["text"]))]


def grpo_child(champion_dir: Path, texts, targets, validation, params: GRPOParams) -> tuple[Classifier, float]:
    reference, policy = Classifier.load(champion_dir), Classifier.load(champion_dir)
    started = time.time()
    GRPOTrainer(prepare_policy(policy, params), reference, texts, targets, params).train()
    seconds = time.time() - started
    policy.retune_thresholds(validation)
    return policy, seconds


def supervised_child(champion_dir: Path, corrected, validation, cfg: TrainConfig) -> Classifier:
    """The champion, fine-tuned further on the corrected rows alone (fresh LoRA, as GRPO gets), early-stopped on
    the validation split, which also keeps the champion itself when no epoch beats it there."""
    champion = Classifier.load(champion_dir)
    child = Classifier.load(champion_dir)
    prepare_policy(child, GRPOParams(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha))
    trainer = SFTTrainer(
        child.model,
        list(child.label_descriptions.values()),
        make_split(corrected, child.labels),
        make_split(validation, child.labels),
        cfg,
    )
    fit(trainer, cfg.max_epochs, cfg.patience)
    child._label_emb = None
    child.retune_thresholds(validation)
    better = child.f1_scores(validation)["f1_macro"] > champion.f1_scores(validation)["f1_macro"]
    return child if better else champion


def one_seed(seed: int, corrected_fraction: float, params: GRPOParams, champion_cfg: TrainConfig) -> dict:
    work, test, descriptions = load_split()
    pool, production = stratified_split(work, 0.5, seed)
    fit_part, validation = stratified_split(pool, 0.25, seed)
    cfg = replace(champion_cfg, seed=seed)
    started = time.time()
    champion, _ = train_classifier(cfg, fit_part, validation, descriptions, ["text"])
    sft_seconds = time.time() - started

    served = served_labels(champion, production)
    scores, corrected = simulated_feedback(served, list(production["labels"]), corrected_fraction, seed)
    targets = targets_from_feedback(served, scores, corrected, champion.labels)
    texts = list(production["text"])
    y_test = multi_hot(test["labels"], champion.labels)
    test_texts = list(test["text"])
    decisions = {"champion": champion.decisions(test_texts)}
    seconds = {"sft": sft_seconds}
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir = champion.save(Path(tmp) / "champion")
        for name, weight in (("grpo", 0.0), ("grpo+sft", params.sft_weight)):
            child, seconds[name] = grpo_child(
                champion_dir, texts, targets, validation, replace(params, sft_weight=weight, seed=seed)
            )
            decisions[name] = child.decisions(test_texts)
        rows = production[[c is not None for c in corrected]]
        started = time.time()
        child = supervised_child(
            champion_dir,
            rows,
            validation,
            replace(cfg, max_epochs=TrainConfig.max_epochs, learning_rate=TrainConfig.learning_rate),
        )
        seconds["supervised"] = time.time() - started
        decisions["supervised"] = child.decisions(test_texts)

    f1 = {name: f1_summary(y_test, pred)["f1_macro"] for name, pred in decisions.items()}
    gains = {name: paired_bootstrap(y_test, decisions[name], decisions["champion"], seed=seed) for name in VARIANTS}
    gains["grpo+sft_vs_supervised"] = paired_bootstrap(
        y_test, decisions["grpo+sft"], decisions["supervised"], seed=seed
    )
    return {
        "seed": seed,
        "docs": {
            "fit": len(fit_part),
            "validation": len(validation),
            "feedback": len(production),
            "corrected": int(sum(c is not None for c in corrected)),
            "test": len(test),
        },
        "mean_score": float(np.mean(scores)),
        "served_exactly_right": float(np.mean([s == 5 for s in scores])),
        "test_f1_macro": f1,
        "gain": gains,
        "seconds": seconds,
        "grpo_seconds_per_100_feedback": 100 * seconds["grpo+sft"] / len(production),
    }


def summarise(runs: list[dict]) -> dict:
    """Mean ± sd over seeds of each model's test F1-macro and of each gain (with its per-seed intervals)."""
    out = {}
    for name in ("champion", *VARIANTS):
        values = [r["test_f1_macro"][name] for r in runs]
        out[f"f1_{name}"] = {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        }
    for name in (*VARIANTS, "grpo+sft_vs_supervised"):
        values = [r["gain"][name]["gain"] for r in runs]
        out[f"gain_{name}"] = {
            "mean": float(np.mean(values)),
            "per_seed": [
                [round(r["gain"][name]["gain"], 4), round(r["gain"][name]["low"], 4), round(r["gain"][name]["high"], 4)]
                for r in runs
            ],
        }
    out["grpo_seconds_per_100_feedback"] = float(np.mean([r["grpo_seconds_per_100_feedback"] for r in runs]))
    return out


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--corrected-fraction", type=float, default=0.3)
    ap.add_argument("--epochs", type=float, default=GRPOParams.num_train_epochs, help="GRPO num_train_epochs")
    ap.add_argument("--learning-rate", type=float, default=GRPOParams.learning_rate)
    ap.add_argument("--sft-weight", type=float, default=GRPOParams.sft_weight)
    ap.add_argument(
        "--champion-epochs",
        type=int,
        default=TrainConfig.max_epochs,
        help="SFT epochs of the champion (1 with --champion-lr 2e-4: an under-trained champion)",
    )
    ap.add_argument("--champion-lr", type=float, default=TrainConfig.learning_rate)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    params = replace(
        GRPOParams(), num_train_epochs=args.epochs, learning_rate=args.learning_rate, sft_weight=args.sft_weight
    )
    champion_cfg = TrainConfig(max_epochs=args.champion_epochs, learning_rate=args.champion_lr)
    machine = machine_info()
    runs = []
    for seed in args.seeds:
        runs.append(one_seed(seed, args.corrected_fraction, params, champion_cfg))
        print(json.dumps(runs[-1]["test_f1_macro"]), flush=True)
    report = {
        "dataset": "madewithml: per seed, champion on one half of the 480 work rows, feedback on the other; "
        "120 test rows",
        "grpo": params.to_params(),
        "champion_sft": {"max_epochs": args.champion_epochs, "learning_rate": args.champion_lr},
        "machine": machine,
        "load_after": machine_info()["load_avg"],
        "summary": summarise(runs),
        "runs": runs,
    }
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
