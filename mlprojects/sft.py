"""Stage `sft`: validate the data, fine-tune the dual encoder (LoRA), log everything, register the model.

mlflow run . -e sft --env-manager local -P data=... -P labels=...
mlflow run . -e sft --env-manager local -P tune=pbt -P pbt_trials=4     # Population Based Training (Ray Tune)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from pathlib import Path

import mlflow

import validation
from mlprojects import config as C
from mlprojects.data import Splits, load_splits
from mlprojects.evaluation.plots import hyperparameter_trajectories, training_curves
from mlprojects.model.encoder import check_encoder_fit
from mlprojects.model.registered import log_classifier
from mlprojects.streaming import Stream, load_stream, stream_source
from mlprojects.training.pbt import best_classifier, run_tuning, validate_config
from mlprojects.training.ray_cluster import check_local, check_reachable, ray_session
from mlprojects.training.ray_sft import train_distributed
from mlprojects.training.trainer import train_classifier
from registry import conventions as RC
from registry.cli import (
    ArgumentParser,
    boolean,
    cli_entry,
    fraction,
    int_arg,
    model_name_arg,
    non_negative,
    number,
    positive,
    unit_interval,
)
from registry.conventions import DEFAULT_MODEL_NAME
from registry.documents import parse_columns
from registry.errors import ConfigError, DataError
from registry.log_model import register
from registry.settings import init_from_sft_run
from registry.tracking import log_dataset, log_epoch, log_json, log_params_once, setup

log = logging.getLogger(__name__)


def range_arg(value: str) -> tuple[float, float]:
    """'1e-4,3e-3' -> (0.0001, 0.003)."""
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got '{value}'") from None
    return low, high


def module_list(value: str) -> list[str] | None:
    """'query,value' -> ['query', 'value']; '' -> None: every linear layer of each block."""
    if not value.strip():
        return None
    modules = [m.strip() for m in value.split(",")]
    if not all(modules):
        raise argparse.ArgumentTypeError(f"expected a comma list of module names, got '{value}'")
    return modules


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = C.TrainConfig()
    p.add_argument("--data", default=str(C.DEMO_DATA), help="CSV, JSONL or Parquet path/URI")
    p.add_argument("--labels", default=str(C.DEMO_LABELS), help="YAML/JSON: label -> description")
    p.add_argument("--text-columns", default=C.DEMO_TEXT_COLUMNS, help="comma list, joined with '. '")
    p.add_argument("--label-column", default=C.DEMO_LABEL_COLUMN)
    p.add_argument("--label-delimiter", default="|")
    p.add_argument("--soft-label-column", default="", help="column of {label: probability} (optional)")
    p.add_argument("--val-data", default="", help="validation file (selects); else a stratified split of --data")
    p.add_argument("--val-fraction", type=fraction, default=d.val_fraction, help="share of --data for validation")
    p.add_argument("--test-data", default="", help="test file (judges); else a stratified split of --data")
    p.add_argument("--test-fraction", type=fraction, default=d.test_fraction, help="share of --data for test")
    p.add_argument("--model-name", type=model_name_arg, default=DEFAULT_MODEL_NAME)
    p.add_argument("--encoder", default=d.encoder, help="HF id or local path; default: bundled MiniLM")
    p.add_argument("--max-epochs", type=positive(int_arg), default=d.max_epochs)
    p.add_argument("--patience", type=non_negative(int_arg), default=d.patience)
    p.add_argument("--batch-size", type=positive(int_arg), default=d.batch_size)
    p.add_argument("--grad-accum-steps", type=positive(int_arg), default=d.grad_accum_steps)
    p.add_argument("--learning-rate", type=positive(), default=d.learning_rate)
    p.add_argument("--lora-r", type=positive(int_arg), default=d.lora_r)
    p.add_argument("--lora-alpha", type=positive(int_arg), default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=unit_interval, default=d.lora_dropout)
    p.add_argument(
        "--lora-target-modules",
        type=module_list,
        default="",
        help="comma list of module-name suffixes (peft); default: every linear layer of each block",
    )
    p.add_argument(
        "--lora-b-lr-ratio", type=positive(), default=d.lora_b_lr_ratio, help="LoRA+: B's learning rate / A's"
    )
    p.add_argument("--weight-decay", type=non_negative(), default=d.weight_decay)
    p.add_argument("--warmup-ratio", type=unit_interval, default=d.warmup_ratio)
    p.add_argument(
        "--new-label-adapter-scale",
        type=unit_interval,
        default=d.new_label_adapter_scale,
        help="share of the LoRA update in the encoder that serves request label sets (1: no second encoder)",
    )
    p.add_argument("--contrastive-weight", type=non_negative(), default=d.contrastive_weight)
    p.add_argument("--margin", type=non_negative(), default=d.margin, help="contrastive margin between cosines")
    p.add_argument("--init-scale", type=positive(), default=d.init_scale, help="initial logit scale on the cosine")
    p.add_argument("--init-bias", type=number, default=d.init_bias, help="initial logit bias")
    # measured and left off by default (bench/README.md): they reproduce the benchmark's candidates
    p.add_argument("--softmax-weight", type=non_negative(), default=d.softmax_weight)
    p.add_argument("--description-dropout", type=unit_interval, default=d.description_dropout)
    p.add_argument("--anchor-weight", type=non_negative(), default=d.anchor_weight)
    p.add_argument("--cloze-weight", type=non_negative(), default=d.cloze_weight)
    p.add_argument("--pos-weight", type=positive(), default=None)
    p.add_argument("--focal-gamma", type=non_negative(), default=d.focal_gamma)
    p.add_argument("--pooling", default=d.pooling, choices=["mean", "cls"])
    p.add_argument("--max-length", type=positive(int_arg), default=d.max_length)
    p.add_argument(
        "--min-examples", type=non_negative(int_arg), default=d.min_examples, help="gate: examples needed per label"
    )
    p.add_argument("--seed", type=non_negative(int_arg), default=d.seed)
    s = p.add_argument_group("scale (Ray Train: DDP workers; the default is this process, no Ray)")
    w = C.ScaleConfig()
    s.add_argument("--num-workers", type=positive(int_arg), default=w.num_workers, help="DDP workers per run/trial")
    s.add_argument("--use-gpu", type=boolean, default=w.use_gpu, help="one GPU per worker (NCCL); else gloo on CPU")
    s.add_argument("--cpus-per-worker", type=positive(), default=w.cpus_per_worker)
    s.add_argument(
        "--worker-failures", type=non_negative(int_arg), default=w.max_failures, help="restarts after a worker dies"
    )
    s.add_argument(
        "--stream",
        type=boolean,
        default=w.stream,
        help="read --data (Parquet/CSV file, folder or glob) as a ray.data stream",
    )
    s.add_argument("--reader-cpus", type=positive(), default=w.reader_cpus, help="Ray CPUs that read the stream")
    s.add_argument(
        "--gate-sample", type=positive(int_arg), default=w.gate_sample, help="streamed rows the data gate checks whole"
    )
    t = p.add_argument_group("tuning (Population Based Training with Ray Tune)")
    b, r = C.PBTConfig(), C.RayConfig()
    t.add_argument("--tune", default="none", choices=["none", "pbt"], help="none: one configuration, no Ray")
    t.add_argument("--pbt-trials", type=positive(int_arg), default=b.population, help="population size (>= 2)")
    t.add_argument(
        "--perturbation-interval",
        type=positive(int_arg),
        default=b.perturbation_interval,
        help="epochs or steps (--perturbation-unit) between exploit/explore steps",
    )
    t.add_argument("--perturbation-unit", default=b.perturbation_unit, help="epochs or steps (optimiser steps)")
    t.add_argument("--mutations", default=",".join(b.mutations), help="comma list of hyperparameters to mutate")
    t.add_argument("--lr-range", type=range_arg, default=b.learning_rate, help="LOW,HIGH (log-uniform)")
    t.add_argument("--weight-decay-range", type=range_arg, default=b.weight_decay, help="LOW,HIGH")
    t.add_argument("--warmup-range", type=range_arg, default=b.warmup_ratio, help="LOW,HIGH")
    t.add_argument(
        "--ray-address",
        default=r.ray_address,
        help="'auto' or host:port joins a cluster; '': local (PBT and Ray Train)",
    )
    t.add_argument("--cpus-per-trial", type=positive(), default=b.cpus_per_trial)
    t.add_argument("--gpus-per-trial", type=non_negative(), default=b.gpus_per_trial)
    t.add_argument(
        "--max-failures", type=non_negative(int_arg), default=b.max_failures, help="retries of a crashed trial"
    )
    t.add_argument("--storage-path", default=r.storage_path, help="Ray's trial checkpoints (default ~/ray_results)")
    t.add_argument("--resume", default="", help="experiment path of an interrupted tuning run to restore")
    return p


def config_from_args(args: argparse.Namespace) -> C.TrainConfig:
    return C.TrainConfig.from_dict(
        {
            **vars(args),
            "soft_label_column": args.soft_label_column or None,
        }
    )


def cluster_config_from_args(args: argparse.Namespace) -> C.RayConfig:
    """Where Ray runs: for PBT's trials, for Ray Train's workers, and for Ray Data reading a stream."""
    return C.RayConfig(ray_address=args.ray_address.strip(), storage_path=args.storage_path)


def pbt_config_from_args(args: argparse.Namespace, cfg: C.TrainConfig, cluster: C.RayConfig) -> C.PBTConfig:
    pbt = C.PBTConfig(
        population=args.pbt_trials,
        perturbation_interval=args.perturbation_interval,
        perturbation_unit=args.perturbation_unit.strip(),
        mutations=tuple(parse_columns(args.mutations)),
        learning_rate=args.lr_range,
        weight_decay=args.weight_decay_range,
        warmup_ratio=args.warmup_range,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures,
        cluster=cluster,
    )
    validate_config(pbt, cfg)
    return pbt


def scale_config_from_args(args: argparse.Namespace, cluster: C.RayConfig) -> C.ScaleConfig:
    """Workers a local Ray could never place, or a cluster that does not answer, fail here, before any data is read."""
    scale = C.ScaleConfig(
        args.num_workers,
        args.use_gpu,
        args.cpus_per_worker,
        args.worker_failures,
        args.stream,
        args.reader_cpus,
        args.gate_sample,
    )
    if scale.stream and args.tune != "none":
        raise ConfigError("--stream trains one configuration; PBT over a stream is not supported yet")
    if scale.distributed:
        check_local(scale, cluster)
        check_reachable(cluster.ray_address)
    return scale


def check_gate(splits: Splits, min_examples: int, stream: Stream | None = None) -> None:
    """Run the great-expectations gate, log its result, stop the stage (nothing registered) if it fails. A stream
    is judged on its sample (the fit frame) and the counts of its one pass."""
    if stream:
        result = validation.validate_streamed_training_data(
            splits.fit,
            stream.counts,
            list(splits.descriptions),
            min_examples=min_examples,
            val=splits.validation,
            test=splits.test,
        )
    else:
        result = validation.validate_training_data(
            splits.fit,
            list(splits.descriptions),
            min_examples=min_examples,
            val=splits.validation if len(splits.validation) else None,
            test=splits.test if len(splits.test) else None,
        )
    log_json(result.details, "validation/training_data_result.json")
    mlflow.set_tag(RC.TAG_TRAINING_DATA_GATE, "passed" if result.success else "failed")
    if not result.success:
        raise DataError(
            "training data failed validation, nothing was trained or registered:\n"
            + "\n".join(f"- {f}" for f in result.failures)
        )


def load_data(
    args: argparse.Namespace, cfg: C.TrainConfig, scale: C.ScaleConfig, source, text_columns: list[str]
) -> tuple[Splits, Stream | None]:
    """The three splits, and the stream behind the fit split when `--stream` reads it with Ray Data."""
    common = dict(seed=cfg.seed, delimiter=args.label_delimiter, soft_label_column=cfg.soft_label_column)
    if source:
        return load_stream(
            source,
            args.labels,
            text_columns,
            args.label_column,
            args.val_data,
            args.test_data,
            scale.reader_cpus,
            scale.gate_sample,
            **common,
        )
    splits = load_splits(
        args.data,
        args.labels,
        text_columns,
        args.label_column,
        args.val_data or None,
        args.test_data or None,
        cfg.val_fraction,
        cfg.test_fraction,
        **common,
    )
    return splits, None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    cluster = cluster_config_from_args(args)  # where Ray runs: its address, storage, local CPUs
    pbt = pbt_config_from_args(args, cfg, cluster) if args.tune == "pbt" else None  # a bad tuning config fails first
    scale = scale_config_from_args(args, cluster)
    check_encoder_fit(cfg, pbt.lora_r if pbt and "lora_r" in pbt.mutations else ())
    text_columns = parse_columns(args.text_columns)
    source = stream_source(args.data, args.val_data, args.test_data) if scale.stream else None  # before Ray starts
    uri = setup(args.model_name)
    with ray_session(cluster) if scale.stream else contextlib.nullcontext():  # a stream is read by Ray Data
        splits, stream = load_data(args, cfg, scale, source, text_columns)
        train, val, descriptions = splits.fit, splits.validation, splits.descriptions
        with mlflow.start_run(run_name="sft-pbt" if pbt else "sft") as run:
            mlflow.set_tag(RC.TAG_STAGE, "sft")
            log_params_once(
                {
                    **cfg.to_params(),
                    "data": args.data,
                    "labels": args.labels,
                    "text_columns": ",".join(text_columns),
                    "label_column": args.label_column,
                    "val_data": args.val_data or f"split {cfg.val_fraction}",
                    "test_data": args.test_data or f"split {cfg.test_fraction}",
                    "model_name": args.model_name,
                    "tune": args.tune,
                    "num_workers": scale.num_workers,
                    "use_gpu": scale.use_gpu,
                    "stream": scale.stream,
                }
            )
            digest = log_dataset(train, args.data, "train", "training")
            val_digest = log_dataset(val, args.val_data or args.data, "validation", "validation")
            test_digest = log_dataset(splits.test, args.test_data or args.data, "test", "testing")
            docs = {f"docs_{name}": len(frame) for name, frame in splits.frames().items()}
            if stream:  # the fit frame is the gate's sample; the count is the stream's
                docs.update(docs_train=stream.counts.rows, docs_train_gate_sample=len(splits.fit))
            mlflow.log_metrics(docs)
            check_gate(splits, cfg.min_examples, stream)
            mlflow.log_dict(descriptions, "labels.json")
            classifier, best, hparam_tags = fit(
                cfg, pbt, scale, cluster, stream or train, val, descriptions, text_columns, run.info.run_id, args.resume
            )
            mlflow.log_metrics({f"best_{k}": float(v) for k, v in best.items() if not k.startswith("hp_")})
            mlflow.log_metric("request_threshold", classifier.tune_request_threshold(val))
            test = classifier.f1_scores(splits.test)  # reported only: nothing above chose anything by it
            mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
            version = publish(
                classifier,
                splits,
                args.model_name,
                {
                    RC.TAG_SOURCE_RUN: run.info.run_id,
                    RC.TAG_KIND: "sft",
                    RC.TAG_DATA_DIGEST: digest,
                    RC.TAG_VALIDATION_DIGEST: val_digest,
                    RC.TAG_TEST_DIGEST: test_digest,
                    RC.TAG_ENCODER: cfg.encoder,
                    **hparam_tags,
                },
            )
            init_from_sft_run(mlflow.MlflowClient(), args.model_name, run.info.run_id)
    print(
        f"\nRegistered {args.model_name} version {version.version} (models:/{args.model_name}/{version.version}, "
        f"alias {RC.CHALLENGER}); "
        f"test F1-macro {test['f1_macro']:.3f} on {len(splits.test)} held-out documents "
        f"(validation {best['f1_macro']:.3f} at epoch {int(best['epoch'])}, used for selection).\n"
        f"See it: mlflow ui --backend-store-uri {uri}  (then open http://127.0.0.1:5000)"
    )
    return 0


def fit(
    cfg: C.TrainConfig,
    pbt: C.PBTConfig | None,
    scale: C.ScaleConfig,
    cluster: C.RayConfig,
    train,
    val,
    descriptions: dict[str, str],
    text_columns: list[str],
    run_id: str,
    resume: str,
):
    """(classifier, best validation metrics, hyperparameter tags) from PBT, Ray Train workers, or this process.
    `train` is the fit frame, or the stream behind it."""
    if pbt:
        return tune_classifier(cfg, pbt, train, val, descriptions, text_columns, run_id, resume or None, scale)
    if scale.distributed:
        classifier, result = train_distributed(
            cfg, scale, cluster, train, val, descriptions, text_columns, f"sft-ray-{run_id}"
        )
        for epoch, record in enumerate(result.history, 1):
            log_epoch(epoch, record)
    else:
        classifier, result = train_classifier(cfg, train, val, descriptions, text_columns, log_epoch)
    mlflow.log_figure(training_curves(result.history), "plots/training_curves.png")
    return classifier, {**result.best_metrics, "epoch": result.best_epoch}, {}


def tune_classifier(
    cfg: C.TrainConfig,
    pbt: C.PBTConfig,
    train,
    val,
    descriptions: dict[str, str],
    text_columns: list[str],
    run_id: str,
    resume: str | None,
    scale: C.ScaleConfig,
):
    """PBT over the population (each trial a child run); log its history; the best checkpoint as a Classifier."""

    def announce(path: str) -> None:
        mlflow.set_tag(RC.TAG_PBT_EXPERIMENT, path)
        log.info("tuning state in %s; an interrupted run resumes with --resume %s", path, path)

    if resume:
        mlflow.set_tag(RC.TAG_PBT_RESUMED_FROM, resume)
    outcome = run_tuning(
        cfg,
        pbt,
        train,
        val,
        descriptions,
        "pbt",
        parent_run_id=run_id,
        name=f"sft-pbt-{run_id}",
        resume=resume,
        on_start=announce,
        scale=scale,
    )
    if len(outcome.perturbations):
        mlflow.log_table(outcome.perturbations, "pbt/perturbations.json")
    mlflow.log_table(outcome.trials, "pbt/trials.json")
    mlflow.log_figure(hyperparameter_trajectories(outcome.trials), "plots/pbt_trajectories.png")
    mlflow.log_metrics({"pbt_exploits": len(outcome.perturbations), "pbt_wall_s": outcome.wall_s})
    mlflow.set_tag(RC.TAG_PBT_BEST_TRIAL, outcome.best_trial)
    log_json(outcome.best_hparams, "pbt/best_hparams.json")
    classifier = best_classifier(cfg, outcome, descriptions, text_columns)
    return classifier, outcome.best_metrics, {f"{RC.HPARAM_PREFIX}{k}": v for k, v in outcome.best_hparams.items()}


def publish(classifier, splits: Splits, model_name: str, tags: dict):
    """Log thresholds, the three splits and the pyfunc into the active run; register it as a new version."""
    log_json(dict(zip(classifier.labels, map(float, classifier.thresholds))), "thresholds.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in splits.frames().items():
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), "data")
    info = log_classifier(classifier, list(splits.validation["text"].head(3)))
    return register(info.model_uri, model_name, tags)


if __name__ == "__main__":
    sys.exit(main())
