"""Stage `evaluate`: score a model on a labelled dataset, log metrics + plots, tag the model version.

    mlflow run . -e evaluate --env-manager local -P model_uri=models:/tax-doc-classifier@champion \
        -P data=data.csv -P labels=labels.yaml -P text_columns=title,body -P label_column=labels
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlflow

from mlprojects.evaluation.judging import (
    evaluate_model,
    load_descriptions_arg,
    load_eval_data,
    log_evaluation,
    log_model_metrics,
)
from registry.aliases import set_tags
from registry.cli import ArgumentParser, cli_entry, fraction, int_arg, non_negative, output_path_arg, positive
from registry.contract import check_known_labels
from registry.errors import ConfigError
from registry.lookup import classifier_meta, model_name_of, registered_version
from registry.model_card import write_card
from registry.settings import BOOTSTRAP_RESAMPLES, CONFIDENCE
from registry.tracking import log_params_once, setup


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-uri", required=True, help="models:/name/N, models:/name@alias, runs:/..., a path")
    p.add_argument("--data", required=True, help="labelled CSV, JSONL or Parquet path/URI")
    p.add_argument(
        "--labels", default="", help="YAML/JSON: label -> description (not needed with --label-descriptions)"
    )
    p.add_argument("--text-columns", default="text", help="comma list, joined with '. '")
    p.add_argument("--label-column", default="labels")
    p.add_argument("--label-delimiter", default="|")
    p.add_argument(
        "--label-descriptions",
        default="",
        help="JSON or YAML/JSON file: a new label set (the data's labels) to evaluate zero-shot",
    )
    p.add_argument("--output", type=output_path_arg, default="", help="also write the metrics here as JSON")
    p.add_argument("--bootstrap", type=positive(int_arg), default=BOOTSTRAP_RESAMPLES)
    p.add_argument("--confidence", type=fraction, default=CONFIDENCE)
    p.add_argument("--seed", type=non_negative(int_arg), default=0)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(model_name_of(args.model_uri))
    override = load_descriptions_arg(args.label_descriptions)
    if not override and not args.labels:
        raise ConfigError("give the label file (labels) or a label set to evaluate zero-shot (label_descriptions)")
    version = registered_version(args.model_uri)
    if override and version:  # a conflict is found from the version's metadata, before its weights download
        check_known_labels(classifier_meta(*version).get("label_descriptions", {}), override)
    data = load_eval_data(
        args.data, override or args.labels, args.text_columns, args.label_column, args.label_delimiter
    )
    with mlflow.start_run(run_name="evaluate"):
        log_params_once(
            {
                "model_uri": args.model_uri,
                "data": args.data,
                "labels": args.labels,
                "zero_shot": bool(override),
                "bootstrap": args.bootstrap,
                "confidence": args.confidence,
            }
        )
        ev = evaluate_model(args.model_uri, data, args.bootstrap, args.seed, args.confidence, zero_shot=bool(override))
        log_evaluation(ev)
        if not override:  # zero-shot scores on another label set are not the model's own results
            log_model_metrics(ev, args.model_uri)
        if version and not override:
            set_tags(mlflow.MlflowClient(), *version, ev.version_tags())
            write_card(mlflow.MlflowClient(), *version)
    if args.output:
        Path(args.output).write_text(json.dumps({"report": ev.report, "intervals": ev.intervals}, indent=2))
    low, high = ev.intervals["f1_macro"]
    print(
        f"{args.model_uri} on {args.data} ({len(data.texts)} docs): F1-macro {ev.report['f1_macro']:.3f} "
        f"[{low:.3f}, {high:.3f}], F1-micro {ev.report['f1_micro']:.3f}, subset accuracy "
        f"{ev.report['subset_accuracy']:.3f}"
        + (f"; model version {version[1]} tagged" if version and not override else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
