"""Which default SFT recipe: several ways of turning one training run into a model, measured on the same runs.

    python -m bench.bench_recipe --seeds 42,7,1,2,3 --out bench/results/recipe/defaults.json
    python -m bench.bench_recipe --set learning_rate=2e-3 --set max_epochs=5 --out bench/results/recipe/lr2e-3.json

Each seed trains `max_epochs` epochs without early stopping (the learning-rate schedule depends on max_epochs
only, so the epochs an early-stopped run would have trained are the same) and keeps every epoch's trainable
weights. The rules, each a model from that one run:
- `f1_patience`: today's selection, the best validation F1-macro epoch with early stopping after `patience`;
- `loss_patience`: the same on validation loss (lowest), a smoother criterion than 72 documents' F1;
- `last`: the last epoch;
- `avg_last_K`: the average of the last K epochs' trainable weights (LoRA, scale, bias), SWA-style;
- `soupN_f1_patience`, `soupN_last` (`--soup N`): N runs on the same split (the seed's own and N − 1 with other
  LoRA initialisations and data orders), each keeping its F1-rule epoch or its last, merged and averaged in weight
  space (a model soup). With `--set max_epochs=E/N` it costs what one run of E epochs does;
- `refit_f1_epoch`, `refit_last` (`--refit`): a second run from the same initialisation on fit + validation (the
  whole non-test split, the same documents for every seed), kept at the epoch the F1 rule chose on the first run,
  or at its last. The usual refit once validation has chosen: 72 more training documents, and no validation
  left to judge the result (its validation columns are empty; test only reports).
Validation and test scores are recorded for every rule; the rule is chosen on validation, test only reports.
A rule's own validation score flatters the rules that select on it (the F1 rule keeps the epoch that maximises
it), so the `cross_` rows compare rules without that bias: the validation split is halved (stratified), the F1
rule chooses on one half and is scored on the other, both ways round (means); the rules that choose nothing
(`last`, `avg_last_K`) are scored on the two halves alike. Their test column is the kept models' (mean of two
for `cross_f1_patience`).
Split and seeds as `bench.bench_sft` (the seed also draws the validation split). `--label-text name+description`
embeds each label as "<name>: <description>" instead of its description alone, in training and in scoring.

    python -m bench.bench_recipe --demo --recipe old:learning_rate=1e-3 --recipe new: --out /tmp/demo_times.json

`--demo` times `train_classifier` (what `sft` runs between reading the data and registering) on the demo data's
fit / validation split for each named recipe (TrainConfig overrides), alternating them, side by side in one run;
repeat i uses the i-th of `--seeds`, and the kept model's validation and test F1-macro are recorded with its time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from bench.bench_sft import argmax_scores, parse_overrides
from bench.machine import new_results, write_results
from bench.madewithml import load_split
from mlprojects.config import TrainConfig
from mlprojects.data import stratified_split
from mlprojects.model.encoder import DualEncoder, build_model, merged_encoder
from mlprojects.training.trainer import SFTTrainer, average_states, make_split
from registry.cli import ArgumentParser, cli_entry, int_arg, positive


def select_with_patience(scores: list[float], patience: int, higher_is_better: bool) -> int:
    """The 0-based epoch `fit` would keep: the best score so far, stopping `patience` epochs after it."""
    best = 0
    for epoch in range(1, len(scores)):
        better = scores[epoch] > scores[best] if higher_is_better else scores[epoch] < scores[best]
        if better:
            best = epoch
        elif epoch - best >= patience:
            break
    return best


LABEL_TEXTS = ("description", "name+description")


def label_texts(descriptions: dict[str, str], kind: str) -> dict[str, str]:
    """The text each label is embedded as: its description, or "<name>: <description>"."""
    if kind == "description":
        return dict(descriptions)
    if kind == "name+description":
        return {name: f"{name}: {text}" for name, text in descriptions.items()}
    raise ValueError(f"label text '{kind}' is not one of {LABEL_TEXTS}")


def scores_of(model, texts: list[str], frame, names: list[str], label_texts: list[str]) -> dict[str, float]:
    probs = model.probabilities(model.embed(texts), model.embed(label_texts))
    return argmax_scores(probs, frame, names)


def judged(model, val, test, names: list[str], label_texts: list[str]) -> dict[str, float]:
    """A model's F1-macro on the validation and the test split."""
    return {
        "val_f1_macro": scores_of(model, list(val["text"]), val, names, label_texts)["f1_macro"],
        "test_f1_macro": scores_of(model, list(test["text"]), test, names, label_texts)["f1_macro"],
    }


def f1_rule_epoch(epochs: list[dict], patience: int) -> int:
    """The 0-based epoch today's rule keeps: best validation F1-macro, early stopping after `patience`."""
    return select_with_patience([e["f1_macro"] for e in epochs], patience, True)


def half_scores(model, halves, names: list[str], label_texts: list[str]) -> list[float]:
    """F1-macro on each half of the validation split."""
    return [scores_of(model, list(h["text"]), h, names, label_texts)["f1_macro"] for h in halves]


def cross_selected(epochs: list[dict], patience: int) -> dict:
    """The F1 rule judged without its own bias: choose the epoch on one validation half (best F1, patience), score
    it on the other half, both ways round; means of the two held-half scores and of the two kept models' tests."""
    kept = [select_with_patience([e["val_half_f1"][d] for e in epochs], patience, True) for d in (0, 1)]
    return {
        "epochs": [k + 1 for k in kept],
        "val_f1_macro": float(np.mean([epochs[k]["val_half_f1"][1 - d] for d, k in enumerate(kept)])),
        "test_f1_macro": float(np.mean([epochs[k]["test_f1_macro"] for k in kept])),
    }


def merged_soup(members: list[DualEncoder]) -> DualEncoder:
    """One plain encoder whose weights are the mean of the members' merged weights, W + mean(BA): members trained
    from the same pre-trained encoder with different LoRA initialisations and data orders, whose factors A and B
    cannot be averaged apart. Logit scale and bias: the members' means. Served like any merged model."""
    encoders = [merged_encoder(m) for m in members]
    states = [e.state_dict() for e in encoders]
    encoders[0].load_state_dict({k: torch.stack([s[k].double() for s in states]).mean(0) for k in states[0]})
    first = members[0]
    scale, bias = (float(np.mean([float(getattr(m, a).detach()) for m in members])) for a in ("scale", "bias"))
    return DualEncoder(encoders[0], first.tokenizer, first.pooling, first.max_length, scale, bias).eval()


def run_seed(
    cfg: TrainConfig, train, test, descriptions: dict[str, str], averages: list[int], soup: int = 1, refit: bool = False
) -> dict:
    fit_part, val = stratified_split(train, cfg.val_fraction, cfg.seed)
    halves = stratified_split(val, 0.5, cfg.seed)  # for the cross_ rules: choose on one half, score on the other
    names, label_texts = list(descriptions), list(descriptions.values())
    model, epochs, states = train_member(cfg, fit_part, val, halves, test, names, label_texts)
    rules = epoch_rules(cfg, epochs)
    for k in averages:
        if k > len(states):
            continue
        model.load_trainable_state(average_states(states[-k:]))
        rules[f"avg_last_{k}"] = {"epochs": k, **judged(model, val, test, names, label_texts)}
        rules[f"cross_avg_last_{k}"] = {
            "val_f1_macro": float(np.mean(half_scores(model, halves, names, label_texts))),
            "test_f1_macro": rules[f"avg_last_{k}"]["test_f1_macro"],
        }
    out = {"seed": cfg.seed, "epochs": epochs, "rules": rules}
    if soup > 1:
        out["members"], soups = soup_rules(
            cfg, soup, (model, epochs, states), fit_part, val, halves, test, names, label_texts
        )
        rules.update(soups)
    if refit:
        _, out["refit_epochs"], _ = train_member(cfg, train, val, halves, test, names, label_texts)
        rules.update(refit_rules(out["refit_epochs"], rules["f1_patience"]["epoch"]))
    return out


def refit_rules(refit_epochs: list[dict], chosen_epoch: int) -> dict:
    """The refit run kept at the first run's F1-rule epoch (1-based) and at its last; validation was trained on, so
    it has no score to give."""
    return {
        "refit_f1_epoch": kept_epoch(refit_epochs, chosen_epoch - 1, judged_on_val=False),
        "refit_last": kept_epoch(refit_epochs, len(refit_epochs) - 1, judged_on_val=False),
    }


def soup_rules(cfg, size: int, first, fit_part, val, halves, test, names, label_texts) -> tuple[list[dict], dict]:
    """`size` members on the same split (the first is the seed's own run, the others train with seeds
    seed + 1000·j: another LoRA initialisation and data order), each keeping its F1-rule epoch or its last; each
    soup scored on validation and test."""
    members = [first] + [
        train_member(replace(cfg, seed=cfg.seed + 1000 * j), fit_part, val, halves, test, names, label_texts)
        for j in range(1, size)
    ]
    rules = {}
    for rule, keep in (("f1_patience", lambda epochs: f1_rule_epoch(epochs, cfg.patience)), ("last", lambda _: -1)):
        for model, epochs, states in members:
            model.load_trainable_state(states[keep(epochs)])
        soup = merged_soup([model for model, _, _ in members])
        rules[f"soup{size}_{rule}"] = judged(soup, val, test, names, label_texts)
    return [{"seed": cfg.seed + 1000 * j, "epochs": epochs} for j, (_, epochs, _) in enumerate(members) if j], rules


def train_member(cfg: TrainConfig, fit_part, val, halves, test, names, label_texts):
    """One run of `max_epochs` epochs: the model, each epoch's scores, and each epoch's trainable state."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    trainer = SFTTrainer(model, label_texts, make_split(fit_part, names), make_split(val, names), cfg)
    epochs, states = [], []
    for _ in range(cfg.max_epochs):
        started = time.perf_counter()
        record = trainer.train_epoch()
        train_s = time.perf_counter() - started
        metrics = trainer.validate()
        metrics.pop("thresholds")
        states.append(model.trainable_state())
        test_scores = scores_of(model, list(test["text"]), test, names, label_texts)
        epochs.append(
            {
                **record,
                **metrics,
                "val_half_f1": half_scores(model, halves, names, label_texts),
                "test_f1_macro": test_scores["f1_macro"],
                "train_s": train_s,
            }
        )
        print(f"seed {cfg.seed} epoch {len(epochs)}: {epochs[-1]}", file=sys.stderr, flush=True)
    return model, epochs, states


def kept_epoch(epochs: list[dict], index: int, judged_on_val: bool = True) -> dict:
    """A rule's row for the run's 0-based epoch `index`: its validation and test F1-macro, validation None for a run
    that trained on it."""
    return {
        "epoch": index + 1,
        "val_f1_macro": epochs[index]["f1_macro"] if judged_on_val else None,
        "test_f1_macro": epochs[index]["test_f1_macro"],
    }


def epoch_rules(cfg: TrainConfig, epochs: list[dict]) -> dict:
    """The rules that keep one epoch of a run, and the cross_ rows."""
    return {
        "f1_patience": kept_epoch(epochs, f1_rule_epoch(epochs, cfg.patience)),
        "loss_patience": kept_epoch(epochs, select_with_patience([e["val_loss"] for e in epochs], cfg.patience, False)),
        "last": kept_epoch(epochs, len(epochs) - 1),
        "cross_f1_patience": cross_selected(epochs, cfg.patience),
        "cross_last": {
            "val_f1_macro": float(np.mean(epochs[-1]["val_half_f1"])),
            "test_f1_macro": epochs[-1]["test_f1_macro"],
        },
    }


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summary(per_seed: list[dict]) -> dict[str, dict]:
    """Per rule: mean ± sd (ddof 1) over seeds of validation and test F1-macro, and the test range (validation
    None where the rule trained on it)."""
    out = {}
    for rule in per_seed[0]["rules"]:
        val = np.array([s["rules"][rule]["val_f1_macro"] for s in per_seed], dtype=float)
        test = np.array([s["rules"][rule]["test_f1_macro"] for s in per_seed])
        judged_on_val = not np.isnan(val).any()
        out[rule] = {
            "val_mean": float(val.mean()) if judged_on_val else None,
            "val_sd": _sd(val) if judged_on_val else None,
            "test_mean": float(test.mean()),
            "test_sd": _sd(test),
            "test_min": float(test.min()),
            "test_max": float(test.max()),
        }
    return out


def demo_times(recipes: dict[str, dict], seeds: list[int]) -> dict:
    """Wall time of `train_classifier` on the demo splits `sft` makes, per recipe, the recipes alternating; one
    repeat per seed (the seed draws the splits too), with the kept model's validation and test F1-macro: the demo
    is what a new user trains first, so a recipe chosen on Made With ML must not cost it quality."""
    from mlprojects import config as C
    from mlprojects.data import load_splits
    from mlprojects.training.trainer import train_classifier

    times: dict[str, list[dict]] = {name: [] for name in recipes}
    for seed in seeds:
        for name, overrides in recipes.items():
            cfg = TrainConfig.from_dict({**TrainConfig().to_params(), **overrides, "seed": seed})
            splits = load_splits(
                str(C.DEMO_DATA), str(C.DEMO_LABELS), C.DEMO_TEXT_COLUMNS, C.DEMO_LABEL_COLUMN,
                val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed,
            )  # fmt: skip
            started = time.perf_counter()
            classifier, result = train_classifier(cfg, splits.fit, splits.validation, splits.descriptions, ["text"])
            wall_s = time.perf_counter() - started
            times[name].append(
                {
                    "seed": seed,
                    "wall_s": round(wall_s, 1),
                    "epochs_run": len(result.history),
                    "val_f1_macro": result.best_metrics["f1_macro"],
                    "test_f1_macro": classifier.f1_scores(splits.test)["f1_macro"],
                }
            )
            print(f"{name} seed {seed}: {times[name][-1]}", file=sys.stderr, flush=True)
    return times


def parse_recipe(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, TrainConfig overrides)."""
    name, _, pairs = text.partition(":")
    return name, parse_overrides([p for p in pairs.split(",") if p])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_recipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--seeds", default="42,7,1,2,3")
    p.add_argument("--average", default="2,3,4", help="comma list of K for avg_last_K")
    p.add_argument("--soup", type=int, default=1, help="N > 1: also N runs per split, their merged weights averaged")
    p.add_argument("--refit", action="store_true", help="also refit on fit + validation (2x the training time)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label-text", choices=LABEL_TEXTS, default="description", help="what each label is embedded as")
    p.add_argument("--out", required=True)
    p.add_argument("--demo", action="store_true", help="time the --recipe recipes on the demo data instead")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    p.add_argument(
        "--repeats", type=positive(int_arg), default=2, help="--demo: one repeat per seed, the first N of --seeds"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.demo:
        recipes = dict(parse_recipe(r) for r in args.recipe)
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.repeats > len(seeds):
            p.error(f"--repeats {args.repeats} needs as many --seeds (one per repeat), got {len(seeds)}")
        seeds = seeds[: args.repeats]
        results = new_results(recipes=recipes, seeds=seeds)
        results["times"] = demo_times(recipes, seeds)
        write_results(results, args.out)
        return 0
    overrides = parse_overrides(args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    averages = [int(k) for k in args.average.split(",") if k.strip()]
    train, test, descriptions = load_split()
    descriptions = label_texts(descriptions, args.label_text)
    results = new_results(overrides=overrides, seeds=seeds, label_text=args.label_text)
    started = time.perf_counter()
    results["per_seed"] = []
    for seed in seeds:
        cfg = TrainConfig.from_dict({**TrainConfig().to_params(), **overrides, "seed": seed})
        results["per_seed"].append(run_seed(cfg, train, test, descriptions, averages, args.soup, args.refit))
        results["config"] = cfg.to_params()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    results["summary"] = summary(results["per_seed"])
    write_results(results, args.out)
    for rule, s in results["summary"].items():
        val = "     -       " if s["val_mean"] is None else f"{s['val_mean']:.3f} ± {s['val_sd']:.3f}"
        test = f"{s['test_mean']:.3f} ± {s['test_sd']:.3f} ({s['test_min']:.3f}-{s['test_max']:.3f})"
        print(f"{rule:14s} val {val}   test {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
