"""Re-measure decision rules for request label sets from the leave-labels-out benchmark's saved probabilities,
without training again:

    python -m bench.new_label_rules bench/results/new_labels_request_threshold.json   # scores from --scores-dir

Every rule decides a request set's labels with one cut for all of them, chosen on validation over the trained
labels only (as `sft` could), and is judged on test over the held-out labels, at each adapter scale and for the
untrained encoder. Rules: `p@0.5` (the old default), `p tuned` (the shipped request threshold), and two that
need document statistics the model does not store yet: `center` (each label's logit minus its mean over the
validation documents) and `z` (also divided by its standard deviation there). Δ is paired with the untrained
encoder at 0.5 and with the untrained encoder under the same rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.bench_new_labels import SCALES, SCORES, fmt, interval, load_dataset
from mlprojects.config import TrainConfig
from mlprojects.data import multi_hot
from mlprojects.evaluation.metrics import SHARED_THRESHOLD_GRID, f1_per_label


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-30, 1 - 1e-16)
    return np.log(p) - np.log1p(-p)


def f1_macro(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_per_label(truth, pred)[2].mean())


def tune(truth: np.ndarray, score: np.ndarray, grid: np.ndarray) -> float:
    """The grid cut with the best F1-macro; ties to the one nearest the grid's middle."""
    ordered = grid[np.argsort(np.abs(grid - np.median(grid)), kind="stable")]
    return float(ordered[int(np.argmax([f1_macro(truth, score >= t) for t in ordered]))])


def transforms(val: np.ndarray, test: np.ndarray) -> dict:
    """rule -> (validation scores, test scores, grid of cuts; None: fixed at logit 0, i.e. p = 0.5)."""
    lv, lt = logit(val), logit(test)
    mean, std = lv.mean(0), lv.std(0) + 1e-9
    return {
        "p@0.5": (lv, lt, None),
        "p tuned": (val, test, SHARED_THRESHOLD_GRID),
        "center": (lv - mean, lt - mean, np.arange(-20, 20, 0.05)),
        "z": ((lv - mean) / std, (lt - mean) / std, np.arange(-3, 6, 0.02)),
    }


def measure(results: dict, scores: Path) -> dict:
    """(dataset, encoder, rule) -> list of (test F1, validation F1) over the runs whose scores are saved."""
    out: dict = {}
    truths = {}
    for run in results["runs"]:
        ds, path = run["dataset"], scores / f"{run['dataset']}_h{run['holdout']}_s{run['seed']}.npz"
        if not path.exists():
            continue
        if ds not in truths:
            _, val, test, descriptions = load_dataset(ds, TrainConfig().val_fraction)
            names = list(descriptions)
            truths[ds] = (names, multi_hot(val["labels"], names), multi_hot(test["labels"], names))
        names, yv, yt = truths[ds]
        saved = np.load(path)
        held = [names.index(label) for label in run["held_out"]]
        own = [i for i in range(len(names)) if i not in held]
        rows = yv[:, own].any(1)
        for key in ["untrained", *map(str, SCALES)]:
            val, test = (
                saved[f"untrained_{s}"] if key == "untrained" else saved[f"{s}_{key}"] for s in ("validation", "test")
            )
            for rule, (sv, st, grid) in transforms(val, test).items():
                cut = 0.0 if grid is None else tune(yv[rows][:, own], sv[rows][:, own], grid)
                out.setdefault((ds, key, rule), []).append(
                    (f1_macro(yt[:, held], st[:, held] >= cut), f1_macro(yv[:, held], sv[:, held] >= cut))
                )
    return out


def table(measured: dict) -> str:
    rows = [
        "| dataset | encoder | rule | runs | new, validation | new, test | Δ vs untrained at 0.5 "
        "| Δ vs untrained, same rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (ds, key, rule), values in sorted(measured.items()):
        test = np.array([v[0] for v in values])
        base = np.array([v[0] for v in measured[(ds, "untrained", "p@0.5")]])
        same = np.array([v[0] for v in measured[(ds, "untrained", rule)]])
        rows.append(
            f"| {ds} | {'untrained' if key == 'untrained' else 's=' + key} | {rule} | {len(values)} "
            f"| {np.mean([v[1] for v in values]):.3f} | {fmt(interval(test.tolist()))} "
            f"| {fmt(interval((test - base).tolist()))} | {fmt(interval((test - same).tolist()))} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="new_label_rules", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", help="a results file of bench.bench_new_labels")
    p.add_argument("--scores-dir", default=str(SCORES))
    args = p.parse_args(argv)
    print(table(measure(json.loads(Path(args.results).read_text()), Path(args.scores_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
