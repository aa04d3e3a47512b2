"""Names every stage agrees on: aliases (the source of truth), the stages they mirror, and lineage tags."""

from __future__ import annotations

CHAMPION = "champion"  # serving
CHALLENGER = "challenger"  # candidate waiting for the lifecycle controller
REFERENCE = "reference"  # frozen SFT model that GRPO is anchored to
POLICY = "policy"  # trainable GRPO policy

DEFAULT_MODEL_NAME = "tax-doc-classifier"  # the demo's model, and the one commands act on when given none

# Deprecated registry stages, mirrored from aliases so stage-based tools keep working, where the registry has
# them (registry.stages); every reader also works from aliases and tags alone.
STAGE_FOR_ALIAS = {CHAMPION: "Production", CHALLENGER: "Staging"}
ARCHIVED_STAGE = "Archived"  # previous champions (the last K are kept here for rollback)
NO_STAGE = "None"  # rejected candidates and retired versions
REQUEST_STAGE = STAGE_FOR_ALIAS[CHALLENGER]  # a version a person moves here is a request to evaluate it

# Lineage tags on every model version.
TAG_SOURCE_RUN = "lineage.source_run_id"
TAG_PARENT_VERSION = "lineage.parent_version"  # clones, GRPO children, ONNX exports
TAG_KIND = "lineage.kind"  # sft | grpo | clone | onnx
TAG_DATA_DIGEST = "lineage.data_digest"  # the fit (training) split
TAG_VALIDATION_DIGEST = "lineage.validation_digest"
TAG_TEST_DIGEST = "lineage.test_digest"
TAG_ENCODER = "lineage.encoder"
TAG_GIT_COMMIT = "lineage.git_commit"
TAG_CLONE_OF = "lineage.clone_of"  # clones: the champion version they copy (also said in their description)
TAG_SOURCE_MODEL = "lineage.source_model"  # ONNX exports: the registered model they were exported from
TAG_ONNX_VERSION = "lineage.onnx_version"  # on a source version: its latest ONNX export (`<name>-onnx`)
TAG_ONNX_PRECISION = "onnx.precision"  # on an ONNX export: int8 | fp32 (the fallback when int8 fails its gates)
TAG_ONNX_STATUS = "onnx.status"  # on a champion: what its export on promotion shipped, or why none did


# Evaluation results (model version tags; written by the evaluate stage and the controller).
TAG_EVAL_PREFIX = "eval."  # eval.f1_macro, eval.f1_macro_low, eval.f1_macro_high, eval.subset_accuracy, ...
TAG_EVAL_DATA_USED = "eval.dataset"

# Lifecycle decisions (model version tags, one set per decision).
TAG_DECISION = "lifecycle.decision"  # promoted | rejected | rolled_back
TAG_REASON = "lifecycle.reason"
TAG_DECIDED_AT = "lifecycle.decided_at"
TAG_ACTOR = "lifecycle.actor"
TAG_REQUESTED_BY = "lifecycle.requested_by"  # "challenger alias" | "stage transition"
TAG_COMPARED_WITH = "lifecycle.champion_version"
TAG_CHAMPION_F1 = "lifecycle.champion_f1_macro"
TAG_CANDIDATE_F1 = "lifecycle.candidate_f1_macro"
TAG_MARGIN = "lifecycle.margin"
TAG_GAIN_CI = "lifecycle.gain_ci"  # paired-bootstrap interval of candidate - champion F1-macro
TAG_CONTROLLER_RUN = "lifecycle.controller_run_id"
TAG_BLOCKED = "lifecycle.blocked"  # why a candidate is waiting (no evaluation config, dataset fails its gate)
TAG_RETIRED = "lifecycle.retired"  # archived champions beyond the last K: out of any stage, artifacts kept
TAG_ARCHIVED = "lifecycle.archived"  # "true" on a previous champion kept for rollback (the Archived stage's twin)
TAG_ROLE = "lifecycle.role"  # reference | policy on clones
TAG_INTENT = "lifecycle.intent_id"  # the multi-step action that created a clone (crash recovery)

# Registered-model tags: the evaluation configuration and controller state.
TAG_EVAL_CONFIG = {
    "data": "eval.data",  # URI of the labelled evaluation set (the first sft run's test split)
    "labels": "eval.labels",  # label -> description file
    "text_columns": "eval.text_columns",
    "label_column": "eval.label_column",
    "margin": "eval.margin",  # F1-macro gain a challenger needs over the champion
    "min_f1_macro": "eval.min_f1_macro",  # gate: no model below this becomes champion
    "bootstrap": "eval.bootstrap",  # resamples for intervals and the paired test
    "confidence": "eval.confidence",
    "keep_archived": "lifecycle.keep_archived",
}
TAG_PENDING = "lifecycle.pending"  # JSON intent of an unfinished multi-step action
TAG_DEPLOY_TARGET = "deploy.target"  # which DeploymentTarget serves the champion (default: local)
TAG_ONNX_ON_PROMOTION = "lifecycle.onnx_export"  # quantisation of the export made on promotion, or "off"
