"""SFT benchmark on the real Made With ML dataset: the fine-tuned dual encoder against two baselines, over
several seeds (one seed moves test F1-macro as much as a configuration change does, so one run ranks nothing).

    python -m bench.bench_sft                       # all three methods, TrainConfig defaults, seeds 42,7,1,2,3
    python -m bench.bench_sft --set learning_rate=2e-3 --set max_epochs=15 --methods sft --seeds 42,7 --out /tmp/x.json

Split: `bench.madewithml.load_split()` (stratified 80/20, seed 42). The SFT model's validation set (early
stopping, thresholds) is a stratified 15% of the 80% part, drawn with the run's seed; the 20% test part is only
used for final scoring. The data is single-label, so every method's decision is the arg-max label. The JSON
keeps every seed's row and, per method, mean ± sd (sample sd) and min–max of each score.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.machine import new_results, write_results
from bench.madewithml import SEED, load_split
from mlprojects.config import TrainConfig, resolve_encoder
from mlprojects.data import multi_hot, stratified_split
from mlprojects.evaluation.metrics import decide, f1_summary
from mlprojects.model.encoder import build_model
from mlprojects.training.trainer import train_classifier
from registry.cli import ArgumentParser, cli_entry
from registry.errors import ConfigError
from registry.tracking import setup

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (42, 7, 1, 2, 3)
METHODS = ("sft", "zero_shot", "logreg")
# SetFit recipes (setfit `TrainingArguments` fields), run in setfit's own environment (`--setfit-python`).
SETFIT_RECIPES = {
    "setfit": {},  # setfit 1.x's defaults: pairs by oversampling, ~110 000 for 408 documents
    "setfit_paper": {"num_iterations": 20},  # the SetFit paper's recipe (setfit < 1.0's default): ~16 000 pairs
}
TITLES = {
    "sft": "SFT dual encoder (MiniLM + LoRA)",
    "zero_shot": "Zero-shot cosine, untrained MiniLM",
    "logreg": "Frozen MiniLM + logistic regression",
    "setfit": "SetFit, MiniLM body, setfit 1.x default recipe",
    "setfit_paper": "SetFit, MiniLM body, paper recipe (num_iterations 20)",
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


def run_setfit(python: str, recipe: dict, cfg: TrainConfig, train, test, descriptions: dict[str, str]) -> dict:
    """SetFit trained on the documents SFT fits on (the same seed's split; its recipe selects nothing on a
    validation set), by bench/setfit_route.py in setfit's environment, and scored on the same test part."""
    fit_part, _ = stratified_split(train, cfg.val_fraction, cfg.seed)
    names = list(descriptions)
    job = {
        "encoder": resolve_encoder(cfg.encoder),
        "fit_texts": list(fit_part["text"]),
        "fit_labels": [names.index(labels[0]) for labels in fit_part["labels"]],
        "test_texts": list(test["text"]),
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "recipe": recipe,
    }
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        route = Path(__file__).with_name("setfit_route.py")
        subprocess.run([python, str(route), str(job_path), str(out_path)], check=True)
        out = json.loads(out_path.read_text())
    scores = np.asarray(out.pop("scores"))
    return {**argmax_scores(scores, test, names), **out, "recipe": recipe, "n_fit": len(fit_part)}


RUNNERS: dict[str, Callable[..., dict]] = {"sft": run_sft, "zero_shot": run_zero_shot, "logreg": run_logreg}


def runners(setfit_python: str) -> dict[str, Callable[..., dict]]:
    """The in-process methods, and the SetFit recipes when setfit's environment is given."""
    if not setfit_python:
        return RUNNERS
    return {**RUNNERS, **{m: partial(run_setfit, setfit_python, r) for m, r in SETFIT_RECIPES.items()}}


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


def parse_seeds(text: str) -> list[int]:
    """`42,7,1` -> [42, 7, 1]: distinct integers, at least one."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects a comma list of integers, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds expects distinct integers, got '{text}'")
    return seeds


def parse_methods(text: str, known: tuple[str, ...]) -> list[str]:
    """Comma list of method names; `zero-shot` and `zero_shot` are the same method."""
    methods = [m.strip().replace("-", "_") for m in text.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(known))
    if not methods or unknown:
        raise ConfigError(f"unknown methods {unknown or text!r}; choose from {', '.join(known)}")
    return methods


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample sd (0 for one value), min and max."""
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per method: the seeds it ran with and the spread of its test scores and wall time over them."""
    return {
        method: {
            "seeds": [r["seed"] for r in rows],
            **{key: spread([r[key] for r in rows]) for key in ("f1_macro", "f1_weighted", "wall_s")},
        }
        for method, rows in runs.items()
        if rows
    }


def markdown_table(summary: dict[str, dict]) -> str:
    rows = [
        "| Method | test F1-macro, mean ± sd | min–max | seeds | wall time per run (mean, min–max) |",
        "|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        f1, wall = s["f1_macro"], s["wall_s"]
        rows.append(
            f"| {TITLES[method]} | {f1['mean']:.3f} ± {f1['sd']:.3f} | {f1['min']:.3f}–{f1['max']:.3f} "
            f"| {', '.join(map(str, s['seeds']))} | {wall['mean']:.0f} s ({wall['min']:.0f}–{wall['max']:.0f}) |"
        )
    return "\n".join(rows)


def log_to_mlflow(report: dict, out: Path) -> None:
    """One run per benchmark in a local store (MLFLOW_TRACKING_URI, default a SQLite file under /tmp)."""
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:////tmp/bench_mlflow/mlflow.db")
    os.environ.setdefault("MLFLOW_ARTIFACT_ROOT", "file:///tmp/bench_mlflow/artifacts")
    Path("/tmp/bench_mlflow").mkdir(exist_ok=True)
    setup("bench-sft-madewithml")
    with mlflow.start_run(run_name="bench_sft"):
        mlflow.log_params({k: v for k, v in report["config"].items() if k not in ("extra", "seed")})
        mlflow.log_param("seeds", ",".join(map(str, report["seeds"])))
        for method, s in report["summary"].items():
            mlflow.log_metrics({f"{method}.{k}_{stat}": s[k][stat] for k in ("f1_macro", "wall_s") for stat in s[k]})
        mlflow.log_artifact(str(out))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument(
        "--methods",
        default="",
        help=f"comma list of {', '.join([*METHODS, *SETFIT_RECIPES])}; default: {', '.join(METHODS)} (+ setfit "
        "with --setfit-python)",
    )
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma list of seeds; each method runs each")
    p.add_argument("--out", default=str(RESULTS / "sft_seeds.json"))
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--setfit-python", default="", help="python of an environment with setfit (see setfit_route.py)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is several times faster than 2 on a shared, loaded machine",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    available = runners(args.setfit_python)
    default = [*METHODS, "setfit"] if args.setfit_python else METHODS
    methods = parse_methods(args.methods or ",".join(default), tuple(available))
    seeds = parse_seeds(args.seeds)
    overrides = parse_overrides(args.set)
    if "seed" in overrides:
        raise ConfigError("the seed comes from --seeds, not --set seed=...")
    params = {**TrainConfig().to_params(), **overrides}

    train, test, descriptions = load_split()
    out = Path(args.out)
    report = new_results(
        dataset="madewithml",
        split={"test_size": 0.2, "seed": SEED, "n_train": len(train), "n_test": len(test)},
        config={k: v for k, v in params.items() if k != "seed"},
        seeds=seeds,
        runs={m: [] for m in methods},
    )
    for seed in seeds:
        cfg = TrainConfig.from_dict({**params, "seed": seed})
        for method in methods:
            start = time.perf_counter()
            row = {"seed": seed, **available[method](cfg, train, test, descriptions)}
            row["wall_s"] = round(time.perf_counter() - start, 1)
            report["runs"][method].append(row)
            print(f"{method} seed {seed}: F1-macro {row['f1_macro']:.3f} in {row['wall_s']} s", file=sys.stderr)
            report["summary"] = summarise(report["runs"])
            write_results(report, out)  # after every run, so a cut-short benchmark keeps what it measured
    print(markdown_table(report["summary"]))
    if not args.no_mlflow:
        log_to_mlflow(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
