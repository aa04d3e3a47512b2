"""SFT benchmark on the real Made With ML dataset: the fine-tuned dual encoder against two baselines.

    python -m bench.bench_sft                       # all three methods, TrainConfig defaults
    python -m bench.bench_sft --set learning_rate=2e-3 --set max_epochs=15 --methods sft --out /tmp/x.json

Split: `bench.madewithml.load_split()` (stratified 80/20, seed 42). The SFT model's validation set (early
stopping, thresholds) is a stratified 15% of the 80% part; the 20% test part is only used for final scoring.
The data is single-label, so every method's decision is the arg-max label.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.machine import machine_info
from bench.madewithml import SEED, load_split
from mlprojects.config import TrainConfig
from mlprojects.data import multi_hot, stratified_split
from mlprojects.evaluation.metrics import decide, f1_summary
from mlprojects.model.encoder import build_model
from mlprojects.training.trainer import train_classifier
from registry.cli import ArgumentParser, cli_entry
from registry.errors import ConfigError
from registry.tracking import setup

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("sft", "zero_shot", "logreg")
TITLES = {
    "sft": "SFT dual encoder (MiniLM + LoRA)",
    "zero_shot": "Zero-shot cosine, untrained MiniLM",
    "logreg": "Frozen MiniLM + logistic regression",
}


def argmax_scores(scores: np.ndarray, test: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """F1 of the arg-max label against the test labels (single-label data)."""
    predicted = decide(scores, np.zeros(len(names)), single_label=True)
    return f1_summary(multi_hot(test["labels"], names), predicted)


def print_epoch(epoch: int, record: dict) -> None:
    print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()), file=sys.stderr, flush=True)


def run_sft(cfg: TrainConfig, train, test, descriptions: dict[str, str]) -> dict:
    fit_part, val = stratified_split(train, cfg.val_fraction, cfg.seed)
    classifier, result = train_classifier(cfg, fit_part, val, descriptions, ["text"], on_epoch=print_epoch)
    probs = classifier.predict_proba(list(test["text"]))
    return {
        **argmax_scores(probs, test, list(descriptions)),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_f1_macro": result.best_metrics["f1_macro"],
        "history": result.history,
        "n_fit": len(fit_part),
        "n_val": len(val),
    }


def run_zero_shot(cfg: TrainConfig, train, test, descriptions: dict[str, str]) -> dict:
    model = build_model(cfg, lora=False)
    cos = model.embed(list(test["text"])) @ model.embed(list(descriptions.values())).T
    return argmax_scores(cos.numpy(), test, list(descriptions))


def run_logreg(cfg: TrainConfig, train, test, descriptions: dict[str, str]) -> dict:
    """Frozen encoder embeddings -> multinomial logistic regression; C chosen by 5-fold CV (F1-macro) on the 80%."""
    from sklearn.linear_model import LogisticRegressionCV

    model = build_model(cfg, lora=False)
    names = list(descriptions)
    y = np.array([names.index(ls[0]) for ls in train["labels"]])
    clf = LogisticRegressionCV(
        Cs=10,
        cv=5,
        l1_ratios=(0.0,),
        scoring="f1_macro",
        class_weight="balanced",
        max_iter=5000,
        random_state=cfg.seed,
        use_legacy_attributes=False,
    )
    clf.fit(model.embed(list(train["text"])).numpy(), y)
    scores = np.zeros((len(test), len(names)))
    scores[:, clf.classes_] = clf.predict_proba(model.embed(list(test["text"])).numpy())
    return {**argmax_scores(scores, test, names), "C": float(clf.C_)}


RUNNERS: dict[str, Callable[..., dict]] = {"sft": run_sft, "zero_shot": run_zero_shot, "logreg": run_logreg}


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` pairs for TrainConfig fields; values are parsed as JSON where possible (numbers, null)."""
    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"--set expects key=value with a TrainConfig field, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def markdown_table(results: dict[str, dict]) -> str:
    rows = ["| Method | F1-macro | F1-weighted | Wall time (train + predict) |", "|---|---|---|---|"]
    rows += [
        f"| {TITLES[m]} | {r['f1_macro']:.3f} | {r['f1_weighted']:.3f} | {r['wall_s']:.0f} s |"
        for m, r in results.items()
    ]
    return "\n".join(rows)


def log_to_mlflow(report: dict, out: Path) -> None:
    """One run per benchmark in a local store (MLFLOW_TRACKING_URI, default a SQLite file under /tmp)."""
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:////tmp/bench_mlflow/mlflow.db")
    os.environ.setdefault("MLFLOW_ARTIFACT_ROOT", "file:///tmp/bench_mlflow/artifacts")
    Path("/tmp/bench_mlflow").mkdir(exist_ok=True)
    setup("bench-sft-madewithml")
    with mlflow.start_run(run_name="bench_sft"):
        mlflow.log_params({k: v for k, v in report["config"].items() if k != "extra"})
        for method, result in report["results"].items():
            mlflow.log_metrics({f"{method}.{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        mlflow.log_artifact(str(out))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    p.add_argument("--out", default=str(RESULTS / "sft.json"))
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is several times faster than 2 on a shared, loaded machine",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := set(methods) - set(METHODS):
        raise ConfigError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    cfg = TrainConfig.from_dict({**TrainConfig().to_params(), **parse_overrides(args.set)})

    train, test, descriptions = load_split()
    results = {}
    for method in methods:
        start = time.perf_counter()
        results[method] = RUNNERS[method](cfg, train, test, descriptions)
        results[method]["wall_s"] = round(time.perf_counter() - start, 1)
        print(f"{method}: F1-macro {results[method]['f1_macro']:.3f} in {results[method]['wall_s']} s", file=sys.stderr)
    report = {
        "dataset": "madewithml",
        "split": {"test_size": 0.2, "seed": SEED, "n_train": len(train), "n_test": len(test)},
        "config": cfg.to_params(),
        "machine": machine_info(),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(markdown_table(results))
    if not args.no_mlflow:
        log_to_mlflow(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
