"""A registered torch version -> its ONNX export, registered as `<name>-onnx` with lineage both ways.

Used by the `export_onnx` stage and by the lifecycle controller when it promotes a champion. Data, by the
three-split rule: the gates judge on the model's evaluation data (the `eval.data` model setting: its test
split); thresholds re-tuned for the export (`thresholds=validation`) come from the source SFT run's
`data/validation.parquet`; static quantisation is calibrated on its `data/train.parquet`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlprojects import config as C
from mlprojects.data import prepare
from mlprojects.model.registered import load_classifier
from mlprojects.onnx_model.export import ExportError, ExportResult, UnexportableModel, export_classifier
from mlprojects.onnx_model.registered import log_onnx_classifier
from registry import conventions as RC
from registry.aliases import remove_alias
from registry.documents import parse_columns, read_table
from registry.errors import ConfigError, DataError
from registry.log_model import register
from registry.lookup import versions_of
from registry.settings import read_settings
from registry.tracking import log_json, log_params_once

log = logging.getLogger(__name__)
LINEAGE_DEPTH = 8  # parents followed to find a split (GRPO children and clones log none of their own)


@dataclass
class Published:
    name: str
    version: str
    result: ExportResult | None  # None when an export made earlier was found again


def run_data(run_id: str | None, name: str) -> pd.DataFrame | None:
    """A split the training run logged under data/ (text, labels), or None."""
    if not run_id:
        return None
    try:
        return read_table(f"runs:/{run_id}/data/{name}.parquet")
    except Exception:  # not logged by this run: the caller decides whether that is an error
        return None


def lineage_data(client: MlflowClient, version: ModelVersion, split: str) -> pd.DataFrame | None:
    """`split` logged by the version's run, else by its parent's (a GRPO child or clone), and so on."""
    for _ in range(LINEAGE_DEPTH):
        frame = run_data(version.tags.get(RC.TAG_SOURCE_RUN) or version.run_id, split)
        if frame is not None:
            return frame
        parent = version.tags.get(RC.TAG_PARENT_VERSION)
        if not parent or parent == str(version.version):
            return None
        version = client.get_model_version(version.name, parent)
    return None


def gate_data(client: MlflowClient, source: ModelVersion) -> tuple[pd.DataFrame, str]:
    """(documents the gates judge on, where they came from): the model's `eval.data` setting, else the test
    split its SFT run logged. Never the validation split: the export's thresholds are tuned there."""
    settings = read_settings(client, source.name)
    if settings is not None:
        frame = prepare(read_table(settings.data), parse_columns(settings.text_columns), settings.label_column)
        return labelled(frame, settings.data), settings.data
    frame = lineage_data(client, source, "test")
    if frame is None:
        raise DataError(
            f"{source.name} version {source.version} has no evaluation data for the parity gates: "
            "configure it (python -m lifecycle configure --eval-data ...) or pass eval_data"
        )
    return labelled(frame, "the SFT run's test split"), "the SFT run's test split"


def labelled(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Documents with at least one label; DataError when none is left."""
    frame = frame.assign(labels=frame["labels"].map(lambda ls: [] if ls is None else list(ls)))
    frame = frame[frame["labels"].map(len) > 0].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"the evaluation data ({where}) has no labelled documents")
    return frame


def source_classifier(source: ModelVersion):
    try:
        return load_classifier(f"models:/{source.name}/{source.version}", device="cpu")
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot export {source.name} version {source.version}: {exc}") from exc


def export_version(
    client: MlflowClient,
    source: ModelVersion,
    classifier,
    cfg: C.OnnxConfig,
    onnx_name: str,
    evaluation: pd.DataFrame,
    eval_source: str,
    role: str = "",
) -> Published:
    """Export, gate, log and register one version; ExportError (nothing registered) when a gate fails."""
    tuning = lineage_data(client, source, "validation") if cfg.thresholds == "validation" else None
    tuning = None if tuning is None else labelled(tuning, "validation split")
    calibration = lineage_data(client, source, "train")
    calibration = evaluation if calibration is None else calibration
    calibration_texts = list(calibration["text"].sample(min(cfg.calibration_docs, len(calibration)), random_state=0))
    # nested under the controller's run; under `mlflow run` no run is active yet and the stage's own resumes
    with (
        mlflow.start_run(run_name="export_onnx", nested=mlflow.active_run() is not None) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        log_params_once(
            {
                **vars(cfg),
                "source_model": source.name,
                "source_version": source.version,
                "eval_data": eval_source,
                "model_name": onnx_name,
                "threshold_data": "validation split" if tuning is not None else "torch thresholds",
            }
        )
        try:
            result = export_classifier(
                classifier,
                Path(tmp) / "onnx_classifier",
                cfg,
                list(evaluation["text"]),
                list(evaluation["labels"]),
                calibration_texts,
                *((list(tuning["text"]), list(tuning["labels"])) if tuning is not None else ()),
            )
        except ExportError as exc:
            mlflow.set_tag(RC.TAG_ONNX_PARITY, "failed" if exc.parity else "export failed")
            if exc.parity:
                mlflow.log_metrics(exc.parity.metrics() | {f"size_mb_{k}": v for k, v in exc.sizes_mb.items()})
            raise
        parity = result.parity
        mlflow.set_tag(RC.TAG_ONNX_PARITY, "passed")
        mlflow.log_metrics(parity.metrics() | {f"size_mb_{k}": v for k, v in result.sizes_mb.items()})
        log_json(
            {
                "sizes_mb": result.sizes_mb,
                "steps": result.steps,
                "precision": parity.precision,
                **parity.metrics(),
                "n_eval_docs": parity.n_texts,
                "eval_data": eval_source,
            },
            "onnx/parity_report.json",
        )
        info = log_onnx_classifier(result.directory, list(evaluation["text"].head(3)), cfg.threads)
        version = register(
            info.model_uri,
            onnx_name,
            {
                RC.TAG_KIND: "onnx",
                RC.TAG_PARENT_VERSION: source.version,
                RC.TAG_SOURCE_MODEL: source.name,
                RC.TAG_SOURCE_RUN: run.info.run_id,
                RC.TAG_ENCODER: source.tags.get(RC.TAG_ENCODER),
                RC.TAG_DATA_DIGEST: source.tags.get(RC.TAG_DATA_DIGEST),
                RC.TAG_ONNX_PRECISION: parity.precision,
            },
            alias=None,
        )
    client.update_model_version(
        onnx_name,
        version.version,
        description=(
            f"ONNX {parity.precision} export of {source.name} version {source.version}{f' ({role})' if role else ''}. "
            f"Parity on {eval_source}: {parity.summary()}. Quantisation: {result.steps['quantization']}. "
            f"Thresholds: {result.steps['thresholds']}."
        ),
    )
    client.set_model_version_tag(source.name, source.version, RC.TAG_ONNX_VERSION, f"{onnx_name}/{version.version}")
    return Published(onnx_name, str(version.version), result)


def existing_export(client: MlflowClient, source: ModelVersion, onnx_name: str) -> str | None:
    """The version of `onnx_name` exported from `source` (also one registered just before a crash, which the
    source's tag does not name yet; a clone's copied tag names its parent's export and is not taken), or None."""
    try:
        versions = versions_of(client, onnx_name)
    except MlflowException:
        return None
    found = [
        v
        for v in versions
        if v.tags.get(RC.TAG_SOURCE_MODEL) == source.name and v.tags.get(RC.TAG_PARENT_VERSION) == str(source.version)
    ]
    return str(max(int(v.version) for v in found)) if found else None


def export_ladder(quantization: str) -> list[tuple[str, C.OnnxConfig]]:
    """The exports a new champion tries in turn, fastest first: every weight MatMul int8; int8 with the
    feed-forward output projections kept fp32 (the nodes whose quantisation flips the demo model's decisions);
    fp32."""
    cfg = C.OnnxConfig(quantization=quantization)
    if quantization == "none":
        return [("fp32", cfg)]
    return [
        ("int8", cfg),
        ("int8 with fp32 FFN outputs", replace(cfg, fp32_matmuls=C.FFN_OUTPUT_MATMULS)),
        ("fp32", replace(cfg, quantization="none")),
    ]


def export_champion(client: MlflowClient, name: str, version: str, quantization: str) -> str:
    """Export a version about to become champion: the first of `export_ladder` that passes its gates. When none can
    ship, or the model has no data to judge an export on, the version is tagged with the reason and torch
    serves it: a promotion never waits on its export. Idempotent: an export made before a crash is found
    again. Returns one line saying what was done; `follow_champion` then moves the alias."""
    source = client.get_model_version(name, version)
    onnx_name = f"{name}{C.ONNX_MODEL_SUFFIX}"
    done = existing_export(client, source, onnx_name)
    if done is not None:
        client.set_model_version_tag(name, version, RC.TAG_ONNX_VERSION, f"{onnx_name}/{done}")
        return f"version {version} already has its ONNX export {onnx_name}/{done}"
    refused = []
    try:
        evaluation, where = gate_data(client, source)
        classifier = source_classifier(source)
    except (DataError, ConfigError) as exc:
        refused.append(str(exc))
    for kind, attempt in [] if refused else export_ladder(quantization):
        try:
            published = export_version(
                client, source, classifier, attempt, onnx_name, evaluation, where, role=RC.CHAMPION
            )
        except ExportError as exc:
            refused.append(f"{kind}: " + ("; ".join(exc.parity.failures) if exc.parity else str(exc)))
            log.warning("ONNX export of %s version %s refused: %s", name, version, exc)
            if isinstance(exc, UnexportableModel):  # every other setting would fail the same way
                break
            continue
        note = f" (refused first: {'; '.join(refused)})" if refused else ""
        client.set_model_version_tag(name, version, RC.TAG_ONNX_STATUS, f"{kind}{note}"[:4000])
        return f"exported version {version} as {published.name}/{published.version} ({kind}{note})"
    client.set_model_version_tag(name, version, RC.TAG_ONNX_STATUS, f"refused: {'; '.join(refused)}"[:4000])
    return f"no ONNX export for version {version} (torch serves it): {'; '.join(refused)}"


def _exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def follow_champion(client: MlflowClient, name: str, version: str) -> None:
    """`<name>-onnx@champion` names the export of `version` when it has one, else nothing (torch serves)."""
    onnx_name = f"{name}{C.ONNX_MODEL_SUFFIX}"
    if not _exists(client, onnx_name):
        return
    done = existing_export(client, client.get_model_version(name, version), onnx_name)
    if done is None:
        remove_alias(client, onnx_name, RC.CHAMPION)
    else:  # the alias alone: the stage mirror would leave every former champion's export in Production
        client.set_registered_model_alias(onnx_name, RC.CHAMPION, done)
