"""Does the export ladder give demo-sized models an int8 speed-up that plain int8 is refused? Per seed: train a
model as `make demo` does (3 epochs on the demo data's fit split, validation selects), export every rung of the
controller's ladder (`export_ladder`: int8, int8 with the FFN output projections fp32, fp32), judge each with the
shipped gates on the test split, and time all of them and torch side by side. The model is exported as the
controller exports it: saved with LoRA merged, then loaded.

    python -m bench.bench_int8_fallback --seeds 42,7,1,2 --out bench/results/int8_fallback.json

Each rung is exported with its gates off, so its graph exists to be timed, then judged with the shipped gates
(`gate_failures`, `OnnxConfig` defaults) on the same report. Timing: `bench.bench_onnx.measure` (variants
interleaved, the fastest of `--rounds` counts), on the test and validation documents.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from bench.bench_new_labels import load_dataset
from bench.bench_onnx import measure
from bench.bench_sft import parse_overrides, parse_seeds
from bench.machine import new_results, write_results
from mlprojects.config import OnnxConfig, TrainConfig
from mlprojects.model.classifier import Classifier
from mlprojects.onnx_model.export import export_classifier
from mlprojects.onnx_model.parity import gate_failures
from mlprojects.onnx_model.publish import export_ladder
from mlprojects.onnx_model.runtime import MODEL_FILE, OnnxClassifier
from mlprojects.training.trainer import train_classifier
from registry.cli import ArgumentParser, cli_entry

NO_GATES = dict(min_fp32_cosine=-1.0, min_int8_mean_cosine=-1.0, max_f1_drop=1.0, min_agreement=0.0)


def judge_rungs(classifier, fit, test, workdir: Path) -> tuple[dict[str, dict], dict[str, Path]]:
    """Each ladder rung's parity report, whether the shipped gates pass it, and its exported graph."""
    shipped = OnnxConfig()
    rungs, graphs = {}, {}
    for kind, cfg in export_ladder("dynamic"):
        out = workdir / kind.replace(" ", "_")
        result = export_classifier(
            classifier, out, replace(cfg, **NO_GATES), list(test["text"]), list(test["labels"]), list(fit["text"])
        )
        failures = gate_failures(
            result.parity,
            shipped.min_fp32_cosine,
            shipped.min_int8_mean_cosine,
            shipped.max_f1_drop,
            shipped.min_agreement,
        )
        rungs[kind] = {
            **result.parity.metrics(),
            "n_eval_docs": result.parity.n_texts,
            "passes": not failures,
            "failures": failures,
            "quantization": result.steps["quantization"],
            "size_mb": round((out / MODEL_FILE).stat().st_size / 2**20, 2),
        }
        graphs[kind] = out
    return rungs, graphs


def run_seed(seed: int, rounds: int, overrides: dict) -> dict:
    fit, val, test, descriptions = load_dataset("demo", TrainConfig().val_fraction)
    cfg = TrainConfig(**{"max_epochs": 3, **overrides, "seed": seed})
    trained, result = train_classifier(cfg, fit, val, descriptions, ["text"])
    with tempfile.TemporaryDirectory() as tmp:
        # as the controller exports it: saved (LoRA merged) and loaded from there, not the peft model in training
        classifier = Classifier.load(trained.save(Path(tmp) / "classifier"), "cpu")
        rungs, graphs = judge_rungs(classifier, fit, test, Path(tmp))
        embedders = {"torch_fp32": classifier.model.embed}
        embedders |= {kind: OnnxClassifier.load(path).encoder.embed for kind, path in graphs.items()}
        texts = list(test["text"]) + list(val["text"])
        timings = measure(embedders, texts, rounds)
    return {
        "seed": seed,
        "docs": {"fit": len(fit), "validation": len(val), "test": len(test)},
        "validation_f1_macro": result.best_metrics["f1_macro"],
        "rungs": rungs,
        "timings": timings,
        "shipped": next((kind for kind, r in rungs.items() if r["passes"]), "torch"),
    }


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="bench_int8_fallback", description=__doc__)
    p.add_argument("--seeds", default="42,7,1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--out", default=str(Path(__file__).with_name("results") / "int8_fallback.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    results = new_results(seeds=args.seeds, rounds=args.rounds, threads=args.threads, overrides=overrides, runs=[])
    for seed in parse_seeds(args.seeds):
        results["runs"].append(run_seed(seed, args.rounds, overrides))
        write_results(results, args.out)  # after every seed: a cut-short run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
