"""Leave-labels-out benchmark: does fine-tuning keep the zero-shot ability that is the dual encoder's reason to exist?

    python -m bench.bench_new_labels --dataset madewithml --seeds 0 --holdouts all
    python -m bench.bench_new_labels --dataset demo --seeds 0,1,2 --holdouts 0,2
    python -m bench.bench_new_labels --table          # the markdown summary of what the results file holds

Per label split: the held-out labels are removed from the fit and validation documents' label lists (documents
left with none dropped) and from the trained label set; the model trains with today's SFT defaults
(`train_classifier`, TrainConfig). Then, at each adapter scale s (`merged_encoder(model, adapter_scale=s)`, scale
and bias as trained):
- trained labels: the model's own label set, its thresholds (tuned at s=1 by training; re-tuned on validation for
  s<1), on the documents of the trained labels;
- new labels: a request label set with every description (trained + held-out), scored as the served model scores
  one (`registry.contract.resolve_labels`: one threshold for every label, multi-label), F1-macro over the held-out
  labels; decided at 0.5 (versions saved before `sft` tuned the request threshold), and at the request threshold
  `sft` tunes: the one threshold with the best validation F1-macro over the trained labels scored the same way
  (`own_label_threshold`; the held-out labels play no part).
The untrained encoder (`build_model(cfg, lora=False)`) is scored the same way, at 0.5 and at a threshold tuned the
same way (the fair baseline for the tuned one). Each run's per-document probabilities go to `--scores-dir`, so
another decision rule can be measured without training again. Document splits are fixed (seed 42)
so every seed sees the same documents; the seed drives training only. Validation chooses the adapter scale for
new labels; test only reports. Each finished model is appended to the results file at once (a file lock keeps
two concurrent runs from losing each other's records); runs already in it are skipped, so a run resumes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from bench.bench_sft import parse_overrides
from bench.machine import machine_info
from bench.madewithml import SEED, load_split
from mlprojects import config as C
from mlprojects.config import TrainConfig
from mlprojects.data import load_splits, multi_hot, stratified_split
from mlprojects.evaluation.metrics import decide, f1_per_label, tune_shared_threshold, tune_thresholds
from mlprojects.model.encoder import DualEncoder, blended, build_model
from mlprojects.training.trainer import train_classifier
from registry.cli import ArgumentParser, cli_entry
from registry.contract import resolve_labels
from registry.errors import ConfigError

RESULTS = Path(__file__).resolve().parent / "results" / "new_labels.json"
SCORES = Path("/tmp/new_labels_scores")  # per-document probabilities per run, to re-measure a rule without training
SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)
# Demo: three disjoint groups of four, each mixing document kinds and tax topics.
DEMO_HOLDOUTS = (
    ("tax_question", "vat", "withholding_tax", "tax_year_mention"),
    ("tax_problem", "internal_memo", "corporate_income_tax", "payroll_tax"),
    ("tax_solution", "tax_ruling", "personal_income_tax", "transfer_pricing"),
)
MADEWITHML_HOLDOUTS = (("computer-vision",), ("natural-language-processing",), ("mlops",), ("other",))
HOLDOUTS = {"madewithml": MADEWITHML_HOLDOUTS, "demo": DEMO_HOLDOUTS}


def load_dataset(name: str, val_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(fit, validation, test, descriptions) with every label, split once with seed 42 as the other benchmarks do."""
    if name == "madewithml":
        train, test, descriptions = load_split()
        fit, val = stratified_split(train, val_fraction, SEED)
        return fit, val, test, descriptions
    cfg = TrainConfig()
    splits = load_splits(
        str(C.DEMO_DATA),
        str(C.DEMO_LABELS),
        C.DEMO_TEXT_COLUMNS,
        C.DEMO_LABEL_COLUMN,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=SEED,
    )
    return splits.fit, splits.validation, splits.test, splits.descriptions


def restrict(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Only `labels` kept in each label list; documents left with none dropped."""
    keep = set(labels)
    out = frame.assign(labels=[[label for label in ls if label in keep] for ls in frame["labels"]])
    return out[out["labels"].map(len) > 0].reset_index(drop=True)


def request_probs(
    model: DualEncoder, frame: pd.DataFrame, descriptions: dict[str, str], labels_by: DualEncoder | None = None
) -> np.ndarray:
    """Probabilities [docs, labels] for a request carrying the whole label set (each label scored on its own);
    `labels_by` embeds the descriptions when the label side is another encoder (`--label-side locked`)."""
    label_emb = (labels_by or model).embed_labels(list(descriptions.values()))
    return model.probabilities(model.embed(list(frame["text"])), label_emb)


class LockedLabels(DualEncoder):
    """The label side locked (LiT, Zhai et al. 2022: tune one tower against the other kept pre-trained): label
    descriptions are embedded by the pre-trained encoder (adapters off, eval mode, no gradient) and only the
    document side is tuned, so a new description lands where the pre-trained encoder puts it, which is where the
    documents were trained to meet the trained ones. Measured here only: `sft` and the pyfuncs embed both sides
    with one encoder."""

    def __init__(self, model: DualEncoder):
        super().__init__(
            model.encoder, model.tokenizer, model.pooling, model.max_length, float(model.scale), float(model.bias)
        )
        self._label_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def embed_labels(self, label_texts):
        missing = [t for t in dict.fromkeys(label_texts) if t not in self._label_cache]
        if missing:
            with self.encoder.disable_adapter():
                self._label_cache.update(zip(missing, self.embed(missing)))
        return torch.stack([self._label_cache[t] for t in label_texts])

    def encode_labels(self, label_texts):
        return self.embed_labels(label_texts).to(self.device)


LABEL_SIDES = {"shared": build_model, "locked": lambda cfg: LockedLabels(build_model(cfg))}


def new_label_f1(
    probs: np.ndarray,
    frame: pd.DataFrame,
    descriptions: dict[str, str],
    held_out: list[str],
    threshold: float | None = None,
) -> dict[str, float]:
    """Per held-out label F1 when a request carries the whole label set, decided as the served request path
    decides (`threshold` for every label, 0.5 when None; multi-label)."""
    names, thresholds = resolve_labels([], np.zeros(0), descriptions, threshold)
    _, _, f1, _ = f1_per_label(multi_hot(frame["labels"], names), decide(probs, thresholds))
    return {label: float(f1[names.index(label)]) for label in held_out}


def own_label_threshold(probs: np.ndarray, frame: pd.DataFrame, names: list[str], trained: list[str]) -> float:
    """The request-set threshold an `sft` run can tune: one for every label, on the validation documents of its
    own (trained) labels, scored as a request set is; the held-out labels play no part."""
    cols = [names.index(label) for label in trained]
    truth = multi_hot(frame["labels"], names)[:, cols]
    rows = truth.any(1)
    return tune_shared_threshold(truth[rows], probs[rows][:, cols])


def trained_label_f1(
    model: DualEncoder,
    frames: dict[str, pd.DataFrame],
    descriptions: dict[str, str],
    thresholds: np.ndarray,
    single_label: bool,
    labels_by: DualEncoder | None = None,
) -> dict[str, float]:
    """F1-macro on the model's own labels per frame; `thresholds=None` re-tunes them on the validation frame."""
    label_emb = (labels_by or model).embed_labels(list(descriptions.values()))
    probs = {name: model.probabilities(model.embed(list(f["text"])), label_emb) for name, f in frames.items()}
    truth = {name: multi_hot(f["labels"], list(descriptions)) for name, f in frames.items()}
    if thresholds is None:
        thresholds = tune_thresholds(truth["validation"], probs["validation"])
    return {
        name: float(f1_per_label(truth[name], decide(probs[name], thresholds, single_label))[2].mean())
        for name in frames
    }


def macro(per_label: dict[str, float]) -> float:
    return float(np.mean(list(per_label.values())))


def choose_scale(val_f1: dict[str, float]) -> float:
    """The best validation new-label F1; a tie goes to the larger scale (closer to the model as trained)."""
    return max(SCALES, key=lambda s: (round(val_f1[str(s)], 10), s))


def run_one(
    dataset: str,
    holdout: int,
    seed: int,
    data,
    untrained: dict,
    scores_dir: Path,
    overrides: dict | None = None,
    label_side: str = "shared",
) -> dict:
    fit, val, test, descriptions = data
    held_out = list(HOLDOUTS[dataset][holdout])
    names = list(descriptions)
    trained = [label for label in names if label not in held_out]
    frames = {"validation": val, "test": test}
    trained_desc = {label: descriptions[label] for label in trained}
    cfg = TrainConfig(**{**(overrides or {}), "seed": seed})
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    classifier, result = train_classifier(
        cfg, restrict(fit, trained), restrict(val, trained), trained_desc, ["text"], build=LABEL_SIDES[label_side]
    )
    # a locked label side is the pre-trained encoder at every adapter scale: the trained model embeds its labels so
    labels_by = classifier.model if label_side == "locked" else None
    train_s = time.perf_counter() - start
    own_frames = {"validation": restrict(val, trained), "test": restrict(test, trained)}
    record = {
        "dataset": dataset,
        "holdout": holdout,
        "seed": seed,
        "overrides": overrides or {},
        "label_side": label_side,
        "held_out": held_out,
        "n_fit": len(restrict(fit, trained)),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "scale": classifier.model.scale.item(),
        "bias": classifier.model.bias.item(),
        "new": {"validation": {}, "test": {}},
        "new_per_label": {"validation": {}, "test": {}},
        "trained": {"validation": {}, "test": {}},
        "request_threshold": {},
        "new_tuned": {"validation": {}, "test": {}},
    }
    untrained_t = own_label_threshold(untrained["validation"], val, names, trained)
    record.update(
        untrained_threshold=untrained_t,
        **{
            key: {
                split: macro(new_label_f1(untrained[split], frames[split], descriptions, held_out, t))
                for split in frames
            }
            for key, t in (("untrained_new", None), ("untrained_new_tuned", untrained_t))
        },
    )
    start = time.perf_counter()
    saved = {f"untrained_{split}": untrained[split] for split in frames}
    for s in SCALES:
        model = blended(classifier.model, s)
        probs = {split: request_probs(model, frame, descriptions, labels_by) for split, frame in frames.items()}
        saved.update({f"{split}_{s}": p for split, p in probs.items()})
        threshold = own_label_threshold(probs["validation"], val, names, trained)
        record["request_threshold"][str(s)] = threshold
        for split, frame in frames.items():
            per_label = new_label_f1(probs[split], frame, descriptions, held_out)
            record["new_per_label"][split][str(s)] = per_label
            record["new"][split][str(s)] = macro(per_label)
            record["new_tuned"][split][str(s)] = macro(
                new_label_f1(probs[split], frame, descriptions, held_out, threshold)
            )
        own = trained_label_f1(
            model,
            own_frames,
            trained_desc,
            classifier.thresholds if s == 1.0 else None,
            classifier.single_label,
            labels_by,
        )
        for split, value in own.items():
            record["trained"][split][str(s)] = value
    scores_dir.mkdir(parents=True, exist_ok=True)
    np.savez(scores_dir / f"{dataset}_h{holdout}_s{seed}.npz", names=np.array(names), **saved)
    chosen = choose_scale(record["new"]["validation"])
    record.update(
        chosen_scale=chosen,
        train_s=round(train_s, 1),
        eval_s=round(time.perf_counter() - start, 1),
        load_avg_1m=[load_before, os.getloadavg()[0]],
    )
    return record


def untrained_probs(data) -> dict[str, np.ndarray]:
    """The untrained encoder's probabilities for a request with every label (its own init scale and bias)."""
    _, val, test, descriptions = data
    model = build_model(TrainConfig(), lora=False)
    return {split: request_probs(model, frame, descriptions) for split, frame in (("validation", val), ("test", test))}


def update(out: Path, mutate) -> dict:
    """Read, change and write the results file under a lock on it, so concurrent runs never lose each other's
    records."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        results = json.loads(text) if text else {"runs": [], "untrained": {}, "machine": []}
        mutate(results)
        results["summary"] = summarise(results)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(results, indent=2))
    return results


def interval(values: list[float]) -> dict:
    """Mean with a 95% Student-t interval across the (seed, label split) runs; no interval from one run."""
    v = np.asarray(values, dtype=float)
    out = {"mean": float(v.mean()), "n": len(v)}
    if len(v) > 1:
        half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    return out


def summarise(results: dict) -> dict:
    """Per dataset, over its runs: new labels (untrained, each scale, the per-model choice, the one scale with the best
    mean validation F1) and trained labels per scale, on test; the differences to the untrained encoder paired."""
    summary = {}
    for dataset in sorted({r["dataset"] for r in results["runs"]}):
        runs = [r for r in results["runs"] if r["dataset"] == dataset]
        best_fixed = max(SCALES, key=lambda s: (np.mean([r["new"]["validation"][str(s)] for r in runs]), s))
        base = [r["untrained_new"]["test"] for r in runs]
        chosen = [r["new"]["test"][str(r["chosen_scale"])] for r in runs]
        fixed = [r["new"]["test"][str(best_fixed)] for r in runs]
        summary[dataset] = {
            "runs": len(runs),
            "seeds": sorted({r["seed"] for r in runs}),
            "holdouts": sorted({r["holdout"] for r in runs}),
            "untrained_new_test": interval(base),
            "new_test": {str(s): interval([r["new"]["test"][str(s)] for r in runs]) for s in SCALES},
            "new_validation": {str(s): interval([r["new"]["validation"][str(s)] for r in runs]) for s in SCALES},
            "trained_test": {str(s): interval([r["trained"]["test"][str(s)] for r in runs]) for s in SCALES},
            "chosen_scales": [r["chosen_scale"] for r in runs],
            "chosen_new_test": interval(chosen),
            "chosen_minus_untrained": interval(np.subtract(chosen, base).tolist()),
            "best_fixed_scale_on_validation": best_fixed,
            "fixed_new_test": interval(fixed),
            "fixed_minus_untrained": interval(np.subtract(fixed, base).tolist()),
            "scale1_minus_untrained": interval(np.subtract([r["new"]["test"]["1.0"] for r in runs], base).tolist()),
            "train_s": interval([r["train_s"] for r in runs]),
            "load_avg_1m": [x for r in runs for x in r["load_avg_1m"]],
        }
        if all("new_tuned" in r for r in runs):  # runs measured with the tuned request-set threshold
            summary[dataset]["request_threshold"] = tuned_summary(runs, base)
    return summary


def tuned_summary(runs: list[dict], base: list[float]) -> dict:
    """The request-set threshold tuned on validation over the trained labels: new labels on test per scale, paired
    against the untrained encoder at 0.5 and against the untrained encoder with a threshold tuned the same way."""
    base_tuned = [r["untrained_new_tuned"]["test"] for r in runs]
    out = {
        "untrained_tuned_new_test": interval(base_tuned),
        "untrained_thresholds": [r["untrained_threshold"] for r in runs],
    }
    for s in SCALES:
        tuned = [r["new_tuned"]["test"][str(s)] for r in runs]
        out[str(s)] = {
            "new_validation": interval([r["new_tuned"]["validation"][str(s)] for r in runs]),
            "new_test": interval(tuned),
            "minus_untrained": interval(np.subtract(tuned, base).tolist()),
            "minus_untrained_tuned": interval(np.subtract(tuned, base_tuned).tolist()),
            "thresholds": [r["request_threshold"][str(s)] for r in runs],
        }
    return out


def tuned_table(summary: dict) -> str:
    """New labels on test with the tuned request-set threshold, per scale; Δ paired to both untrained baselines."""
    rows = [
        "| dataset | untrained, 0.5 | untrained, tuned threshold | "
        + " | ".join(f"s={s}, tuned threshold" for s in SCALES)
        + " |",
        "|---|---|---|" + "---|" * len(SCALES),
    ]
    for dataset, d in summary.items():
        if "request_threshold" not in d:
            continue
        t = d["request_threshold"]
        cells = [
            f"{fmt(t[str(s)]['new_test'])}<br>Δ vs 0.5 {fmt(t[str(s)]['minus_untrained'])}<br>"
            f"Δ vs tuned {fmt(t[str(s)]['minus_untrained_tuned'])}<br>validation {fmt(t[str(s)]['new_validation'])}"
            f"<br>thresholds {t[str(s)]['thresholds']}"
            for s in SCALES
        ]
        rows.append(
            f"| {dataset} | {fmt(d['untrained_new_test'])} | {fmt(t['untrained_tuned_new_test'])}<br>"
            f"thresholds {t['untrained_thresholds']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


def fmt(i: dict) -> str:
    return f"{i['mean']:.3f} [{i['low']:.3f}, {i['high']:.3f}]" if "low" in i else f"{i['mean']:.3f}"


def markdown_table(results: dict) -> str:
    """Levels on test, and in brackets below them the paired difference to the untrained encoder (same held-out
    labels, same documents): the label splits differ far more from each other than the methods do."""
    rows = [
        "| dataset | runs (label splits × seeds) | new labels: untrained | new: SFT, scale 1 | new: scale chosen on "
        "validation per model | new: one scale for all, chosen on validation | trained labels: SFT, scale 1 | "
        "load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, s in results["summary"].items():
        load = s["load_avg_1m"]
        rows.append(
            f"| {dataset} | {s['runs']} ({len(s['holdouts'])} × {len(s['seeds'])}) | {fmt(s['untrained_new_test'])} "
            f"| {fmt(s['new_test']['1.0'])}<br>Δ {fmt(s['scale1_minus_untrained'])} "
            f"| {fmt(s['chosen_new_test'])}<br>Δ {fmt(s['chosen_minus_untrained'])}<br>(scales {s['chosen_scales']}) "
            f"| s={s['best_fixed_scale_on_validation']}: {fmt(s['fixed_new_test'])}<br>"
            f"Δ {fmt(s['fixed_minus_untrained'])} | {fmt(s['trained_test']['1.0'])} "
            f"| {min(load):.1f}–{max(load):.1f} |"
        )
    rows += ["", "| dataset | F1-macro | " + " | ".join(f"s={s}" for s in SCALES) + " |", "|---|---|" + "---|" * 5]
    titles = {"new_validation": "new, validation", "new_test": "new, test", "trained_test": "trained, test"}
    for dataset, s in results["summary"].items():
        for key, title in titles.items():
            rows.append(f"| {dataset} | {title} | " + " | ".join(fmt(s[key][str(x)]) for x in SCALES) + " |")
    rows += ["", shared_scale_line(results["summary"])]
    if any("request_threshold" in d for d in results["summary"].values()):
        rows += ["", tuned_table(results["summary"])]
    return "\n".join(rows)


def shared_scale_line(summary: dict) -> str:
    """One default for every data set: the scale with the best validation new-label F1-macro, averaged over the
    data sets (each weighs the same), and what it gives on test."""
    by_scale = {s: np.mean([d["new_validation"][str(s)]["mean"] for d in summary.values()]) for s in SCALES}
    best = max(SCALES, key=lambda s: (by_scale[s], s))
    tests = ", ".join(
        f"{name} {d['new_test'][str(best)]['mean']:.3f} (untrained {d['untrained_new_test']['mean']:.3f})"
        for name, d in summary.items()
    )
    means = ", ".join(f"s={s}: {v:.3f}" for s, v in by_scale.items())
    return f"One scale for both data sets, by mean validation new-label F1-macro ({means}): s={best}; test: {tests}."


def parse_list(value: str, choices: int) -> list[int]:
    if value == "all":
        return list(range(choices))
    try:
        picked = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers or 'all', got '{value}'") from None
    return picked


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="bench_new_labels", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=sorted(HOLDOUTS), default="madewithml")
    p.add_argument("--seeds", default="0", help="comma list of training seeds")
    p.add_argument("--holdouts", default="all", help="comma list of label-split indices, or 'all'")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--scores-dir", default=str(SCORES), help="where each run's per-document probabilities go (.npz)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on the shared machine)")
    p.add_argument("--table", action="store_true", help="print the summary table of --out and stop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument(
        "--label-side",
        choices=sorted(LABEL_SIDES),
        default="shared",
        help="shared: labels through the tuned encoder, as sft trains; locked: through the pre-trained one (LiT)",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(markdown_table(json.loads(out.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    seeds = parse_list(args.seeds, 0)
    holdouts = parse_list(args.holdouts, len(HOLDOUTS[args.dataset]))
    if bad := [h for h in holdouts if not 0 <= h < len(HOLDOUTS[args.dataset])]:
        raise ConfigError(f"holdouts {bad} out of range for {args.dataset} (0..{len(HOLDOUTS[args.dataset]) - 1})")
    data = load_dataset(args.dataset, TrainConfig().val_fraction)
    done = (
        {(r["dataset"], r["holdout"], r["seed"]) for r in json.loads(out.read_text())["runs"]}
        if out.exists()
        else set()
    )
    untrained = untrained_probs(data)
    per_label = {
        split: new_label_f1(probs, frame, data[3], list(data[3]))
        for (split, probs), frame in zip(untrained.items(), data[1:3])
    }
    update(out, lambda r: r["untrained"].update({args.dataset: per_label}) or r["machine"].append(machine_info()))
    for seed in seeds:
        for holdout in holdouts:
            if (args.dataset, holdout, seed) in done:
                print(f"skip {args.dataset} holdout {holdout} seed {seed}: already in {out}", file=sys.stderr)
                continue
            record = run_one(
                args.dataset, holdout, seed, data, untrained, Path(args.scores_dir), overrides, args.label_side
            )
            update(out, lambda r, rec=record: r["runs"].append(rec))
            print(
                f"{args.dataset} holdout {holdout} seed {seed}: new untrained {record['untrained_new']['test']:.3f}, "
                f"scale 1 {record['new']['test']['1.0']:.3f}, chosen s={record['chosen_scale']} "
                f"{record['new']['test'][str(record['chosen_scale'])]:.3f}; tuned request threshold: untrained "
                f"{record['untrained_new_tuned']['test']:.3f}, s=0.25 {record['new_tuned']['test']['0.25']:.3f}; "
                f"trained {record['trained']['test']['1.0']:.3f}"
                f" ({record['train_s']:.0f} s train)",
                file=sys.stderr,
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
