"""Stage `grpo`: train the `policy` clone of the frozen SFT `reference` on user feedback; register a challenger.

    mlflow run . -e grpo --env-manager local -P model_name=tax-doc-classifier [-P feedback_uri=feedback.csv]

The feedback comes from the store (`feedback_uri` = its SQLAlchemy URL; default FEEDBACK_DB_URL or
./feedback.db) or from a CSV/JSONL export. Only feedback on `model_name` whose labels are all in the
reference's label set is used. After training, the policy's per-label thresholds are re-tuned with its own
scores on the reference's validation split (read from the run that made the reference; `validation_data`
overrides it): the policy's probabilities moved, so the reference's thresholds no longer fit them. The test split
stays unread. The result is registered as a new version tagged `lineage.kind=grpo` with
`lineage.parent_version=<reference version>` and the `challenger` alias, for the lifecycle controller.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import mlflow
import pandas as pd

from mlprojects import config as C
from mlprojects.data import prepare
from mlprojects.evaluation.plots import grpo_curves
from mlprojects.model.registered import load_classifier, log_classifier
from mlprojects.training.grpo_loss import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, SCALE_REWARDS
from mlprojects.training.grpo_trainer import GRPOTrainer, docs_per_step, prepare_policy
from mlprojects.training.rewards import targets_from_feedback
from registry import conventions as RC
from registry.cli import ArgumentParser, cli_entry, int_arg, model_name_arg, non_negative, positive
from registry.conventions import DEFAULT_MODEL_NAME
from registry.documents import read_table
from registry.errors import ConfigError, DataError
from registry.locations import feedback_db_url
from registry.log_model import register
from registry.lookup import resolve_version
from registry.tracking import log_epoch, log_json, log_params_once, setup
from serving.feedback.source import FILE_SUFFIXES, load_feedback

POSITIVE = {
    "num_generations",
    "temperature",
    "epsilon",
    "num_iterations",
    "learning_rate",
    "max_grad_norm",
    "num_train_epochs",
    "per_device_train_batch_size",
    "lora_r",
    "lora_alpha",
}  # the others may be 0
VALIDATION_ARTIFACT = "data/validation.parquet"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="grpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-name", type=model_name_arg, default=DEFAULT_MODEL_NAME)
    p.add_argument("--feedback-uri", default="", help="SQLAlchemy URL of the store, or a CSV/JSONL export")
    p.add_argument(
        "--validation-data",
        default="",
        help="labelled split to re-tune thresholds on (normalised "
        "text/labels Parquet); default: the reference's own validation split",
    )
    types = {"int": non_negative(int_arg), "float": non_negative(), "float | None": _optional_float, "str": str}
    positives = {"int": positive(int_arg), "float": positive()}
    choices = {
        "loss_type": LOSS_TYPES,
        "scale_rewards": SCALE_REWARDS,
        "importance_sampling_level": IMPORTANCE_SAMPLING_LEVELS,
    }
    for f in fields(C.GRPOParams):  # every GRPO hyperparameter, under TRL's name: --num-generations, --beta, ...
        kind = positives[str(f.type)] if f.name in POSITIVE else types[str(f.type)]
        p.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default, type=kind, choices=choices.get(f.name)
        )
    return p


def _optional_float(value: str) -> float | None:
    return None if value in ("", "None", "none") else non_negative()(value)


def alias_version(client: mlflow.MlflowClient, model_name: str, alias: str) -> str:
    try:
        return resolve_version(f"models:/{model_name}@{alias}", client)[1]
    except ConfigError as exc:
        raise ConfigError(
            f"registered model '{model_name}' has no '{alias}' alias: GRPO trains the '{RC.POLICY}' "
            f"clone of the frozen '{RC.REFERENCE}' (the lifecycle controller creates both from the "
            "champion); nothing was trained or registered"
        ) from exc


def validation_split(client: mlflow.MlflowClient, model_name: str, version: str, override: str) -> pd.DataFrame:
    """The split that selected the reference (thresholds, early stopping): the one the policy's thresholds are
    re-tuned on. Every sft and grpo run logs it as data/validation.parquet; registry copies keep the run."""
    uri = override or f"runs:/{client.get_model_version(model_name, version).run_id}/{VALIDATION_ARTIFACT}"
    try:
        return prepare(read_table(uri), ["text"], "labels")
    except (DataError, mlflow.exceptions.MlflowException, OSError) as exc:
        raise DataError(
            f"no validation split to re-tune the policy's thresholds on ({uri}): pass --validation-data "
            "with a labelled file the reference was selected on; nothing was trained or registered"
        ) from exc


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = C.GRPOParams(**{f.name: getattr(args, f.name) for f in fields(C.GRPOParams)})
    docs_per_step(params)  # group size and batch checked before any model is loaded
    feedback_uri = args.feedback_uri or feedback_db_url()
    uri = setup(args.model_name)
    client = mlflow.MlflowClient()
    ref_version = alias_version(client, args.model_name, RC.REFERENCE)
    policy_version = alias_version(client, args.model_name, RC.POLICY)
    with mlflow.start_run(run_name="grpo") as run:
        log_params_once(
            {
                **params.to_params(),
                "model_name": args.model_name,
                "feedback_uri": feedback_uri,
                "reference_version": ref_version,
                "policy_version": policy_version,
            }
        )
        validation = validation_split(client, args.model_name, ref_version, args.validation_data)
        reference = load_classifier(f"models:/{args.model_name}@{RC.REFERENCE}")
        feedback, counts = load_feedback(feedback_uri, args.model_name, reference.labels)
        mlflow.log_metrics(counts)
        if feedback.empty:
            raise DataError(
                f"no usable feedback on '{args.model_name}' in {feedback_uri} ({counts}); "
                "nothing was trained or registered"
            )
        policy = load_classifier(f"models:/{args.model_name}@{RC.POLICY}")
        policy.share_new_label_encoder(reference)  # new labels stay the reference's (feedback is on its own)
        digest = _log_feedback(feedback, feedback_uri)
        targets = targets_from_feedback(
            feedback["predicted_labels"], feedback["score"], feedback["corrected_labels"], reference.labels
        )
        trainer = GRPOTrainer(prepare_policy(policy, params), reference, list(feedback["text"]), targets, params)
        result = trainer.train(on_step=log_epoch)
        mlflow.log_figure(grpo_curves(result.history), "plots/grpo_curves.png")
        summary = {f"final_{k}": result.final(k) for k in ("reward_mean", "kl", "entropy", "clip_fraction")}
        summary["val_f1_macro_reference"] = reference.f1_scores(validation)["f1_macro"]
        policy.retune_thresholds(validation)
        policy.tune_request_threshold(validation)  # changed only where the policy's own encoder serves new labels
        summary["val_f1_macro"] = policy.f1_scores(validation)["f1_macro"]
        mlflow.log_metrics(summary)
        log_json(dict(zip(policy.labels, map(float, policy.thresholds))), "thresholds.json")
        with tempfile.TemporaryDirectory() as tmp:
            validation.to_parquet(Path(tmp) / "validation.parquet")  # the policy's clones re-tune on it too
            mlflow.log_artifact(str(Path(tmp) / "validation.parquet"), "data")
        info = log_classifier(policy, list(feedback["text"].head(3)))
        encoder = client.get_model_version(args.model_name, ref_version).tags.get(RC.TAG_ENCODER)
        version = register(
            info.model_uri,
            args.model_name,
            {
                RC.TAG_SOURCE_RUN: run.info.run_id,
                RC.TAG_KIND: "grpo",
                RC.TAG_PARENT_VERSION: ref_version,
                RC.TAG_DATA_DIGEST: digest,
                RC.TAG_ENCODER: encoder,
                RC.TAG_POLICY_VERSION: policy_version,
            },
        )
    print(
        f"\nRegistered {args.model_name} version {version.version} (GRPO child of reference version {ref_version}) "
        f"as '{RC.CHALLENGER}'; {counts['feedback_used']} feedback records, {result.steps} steps, "
        f"final reward {summary['final_reward_mean']:.3f}, KL {summary['final_kl']:.4f}; thresholds re-tuned on "
        f"{len(validation)} validation documents (F1-macro there {summary['val_f1_macro_reference']:.3f} → "
        f"{summary['val_f1_macro']:.3f}).\n"
        f"See it: mlflow ui --backend-store-uri {uri}"
    )
    return 0


def _log_feedback(feedback: pd.DataFrame, source: str) -> str:
    """The feedback used, as an MLflow dataset (digest for lineage) and a file next to the run."""
    flat = pd.DataFrame(
        {
            "prediction_id": feedback["prediction_id"],
            "model_version": feedback["model_version"],
            "text": feedback["text"],
            "predicted_labels": feedback["predicted_labels"].map("|".join),
            "score": feedback["score"],
            "corrected_labels": feedback["corrected_labels"].map(lambda ls: None if ls is None else "|".join(ls)),
        }
    )
    is_file = source.lower().endswith(FILE_SUFFIXES)  # a database URL is no dataset source MLflow resolves
    dataset = mlflow.data.from_pandas(flat, source=source if is_file else None, name="feedback")
    mlflow.log_input(dataset, context="training")
    log_json(flat.to_dict("records"), "data/feedback.json")
    return dataset.digest


if __name__ == "__main__":
    sys.exit(main())
