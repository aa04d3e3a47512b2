"""Stage `export_onnx`: a registered torch model -> quantised ONNX pyfunc, registered as `<name>-onnx` after
its parity gates pass (nothing is registered otherwise).

    mlflow run . -e export_onnx --env-manager local -P model_uri=models:/tax-doc-classifier@champion
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from mlprojects import config as C
from mlprojects.data import parse_columns, prepare, read_table
from mlprojects.errors import (ArgumentParser, ConfigError, DataError, cli_entry, finite_float,
                              int_arg, model_name_arg, non_negative, optional, registered_uri_arg)
from mlprojects.onnx_export import ExportError, export_classifier
from mlprojects.onnx_quantize import MODES
from mlprojects.tracking import log_json, log_params_once, setup
from registry import conventions as RC
from registry.contract import format_predictions
from registry.log_model import log_onnx_classifier, register
from registry.lookup import load_classifier, model_name_of


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="export_onnx", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = C.OnnxConfig()
    p.add_argument("--model-uri", required=True, type=registered_uri_arg, help="models:/<name>/<version> or models:/<name>@<alias>")
    p.add_argument("--eval-data", default="", help="labelled evaluation data; default: the model's validation split")
    p.add_argument("--text-columns", default="", help="of --eval-data; default: the model's text columns")
    p.add_argument("--label-column", default=C.DEMO_LABEL_COLUMN)
    p.add_argument("--label-delimiter", default="|")
    p.add_argument("--quantization", default=d.quantization, choices=[*MODES, "none"])
    p.add_argument("--threads", type=non_negative(int_arg), default=d.threads, help="inference threads, 0 = all")
    p.add_argument("--model-name", type=optional(model_name_arg), default="", help=f"default: <source name>{C.ONNX_MODEL_SUFFIX}")
    p.add_argument("--min-fp32-cosine", type=finite_float, default=d.min_fp32_cosine)
    p.add_argument("--min-int8-mean-cosine", type=finite_float, default=d.min_int8_mean_cosine)
    p.add_argument("--max-f1-drop", type=finite_float, default=d.max_f1_drop)
    return p


def source_version(model_uri: str):
    """The registered version behind `models:/name/N` or `models:/name@alias` (lineage needs one)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if not model_uri.startswith("models:/"):
        raise ConfigError(f"model_uri must name a registered model (models:/<name>/<version> or "
                          f"models:/<name>@<alias>), got '{model_uri}'")
    client = mlflow.MlflowClient()
    try:
        name, version = get_model_name_and_version(client, model_uri)
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise ConfigError(f"no registered model version at {model_uri}: {exc.message}") from exc


def run_data(run_id: str, name: str) -> pd.DataFrame | None:
    """A split the training run logged under data/ (text, labels), or None."""
    try:
        return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"data/{name}.parquet"))
    except Exception:  # not logged by this run: the caller decides whether that is an error
        return None


def evaluation_frames(args, version, text_columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluation, calibration): --eval-data or the run's validation split; the run's training split calibrates."""
    if args.eval_data:
        columns = parse_columns(args.text_columns) if args.text_columns else text_columns
        evaluation = prepare(read_table(args.eval_data), columns, args.label_column, args.label_delimiter)
    else:
        evaluation = run_data(version.run_id, "validation")
        if evaluation is None:
            raise DataError(f"{args.model_uri} has no logged validation split (data/validation.parquet); "
                            "pass eval_data")
    evaluation = evaluation.assign(labels=evaluation["labels"].map(lambda ls: [] if ls is None else list(ls)))
    evaluation = evaluation[evaluation["labels"].map(len) > 0]
    if evaluation.empty:
        raise DataError("the evaluation data has no labelled documents")
    calibration = run_data(version.run_id, "train")
    return evaluation.reset_index(drop=True), evaluation if calibration is None else calibration


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = C.OnnxConfig.from_dict(vars(args))
    setup(model_name_of(args.model_uri))
    source = source_version(args.model_uri)
    onnx_name = args.model_name or f"{source.name}{C.ONNX_MODEL_SUFFIX}"
    try:
        classifier = load_classifier(args.model_uri, device="cpu")
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot export {args.model_uri}: {exc}") from exc
    evaluation, calibration = evaluation_frames(args, source, classifier.text_columns)
    calibration_texts = list(calibration["text"].sample(min(cfg.calibration_docs, len(calibration)), random_state=0))
    with mlflow.start_run(run_name="export_onnx") as run, tempfile.TemporaryDirectory() as tmp:
        log_params_once({**vars(cfg), "model_uri": args.model_uri, "source_model": source.name,
                         "source_version": source.version, "eval_data": args.eval_data or "validation split",
                         "model_name": onnx_name})
        try:
            result = export_classifier(classifier, Path(tmp) / "onnx_classifier", cfg, list(evaluation["text"]),
                                       list(evaluation["labels"]), calibration_texts)
        except ExportError as exc:
            mlflow.set_tag("onnx.parity", "failed" if exc.parity else "export failed")
            if exc.parity:
                mlflow.log_metrics(exc.parity.metrics() | {f"size_mb_{k}": v for k, v in exc.sizes_mb.items()})
            raise
        mlflow.set_tag("onnx.parity", "passed")
        mlflow.log_metrics(result.parity.metrics() | {f"size_mb_{k}": v for k, v in result.sizes_mb.items()})
        log_json({"sizes_mb": result.sizes_mb, "steps": result.steps, **result.parity.metrics(),
                  "n_eval_docs": result.parity.n_texts}, "onnx/parity_report.json")
        example = evaluation[["text"]].head(3).reset_index(drop=True)
        probs = classifier.predict_proba(list(example["text"]))
        info = log_onnx_classifier(result.directory, classifier.text_columns, example,
                                   format_predictions(probs, classifier.labels, classifier.thresholds,
                                                      classifier.single_label), cfg.threads)
        version = register(info.model_uri, onnx_name, {
            RC.TAG_KIND: "onnx", RC.TAG_PARENT_VERSION: source.version, RC.TAG_SOURCE_MODEL: source.name,
            RC.TAG_SOURCE_RUN: run.info.run_id, RC.TAG_ENCODER: source.tags.get(RC.TAG_ENCODER),
            RC.TAG_DATA_DIGEST: source.tags.get(RC.TAG_DATA_DIGEST)}, alias=None)
        mlflow.MlflowClient().set_model_version_tag(source.name, source.version, RC.TAG_ONNX_VERSION,
                                                    f"{onnx_name}/{version.version}")
    p = result.parity
    print(f"\nRegistered {onnx_name} version {version.version} (models:/{onnx_name}/{version.version}) from "
          f"{source.name} version {source.version}.\n"
          f"Parity: fp32 min cosine {p.fp32_min_cosine:.6f}, int8 mean cosine {p.int8_mean_cosine:.5f}, "
          f"F1-macro {p.f1_macro_torch:.4f} -> {p.f1_macro_onnx:.4f}. Sizes (MB): {result.sizes_mb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
