"""Names every stage agrees on: aliases (the source of truth), the stages they mirror, and every tag name (model
version, registered model and run tags): no other module spells one."""

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
LINEAGE_PREFIX = "lineage."
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
TAG_POLICY_VERSION = "grpo.policy_version"  # on a GRPO child: the policy clone it was trained from
TAG_LABEL_SET = "label_set"  # JSON label -> description (each cut short) of the labels the version answers with
TAG_LABEL_SET_DIGEST = "label_set.digest"  # of the whole set: equal digests, the same labels and descriptions
LABEL_SET_FILE = "label_set.json"  # artifact of every logged model: its label set, descriptions in full
# its keys: the label -> description mapping, the share of the fine-tuning (LoRA) update in the encoder that
# serves request label sets (1.0: the model's own encoder serves them too), and the one threshold a request set's
# labels are decided with (tuned on validation; absent: 0.5)
LABEL_SET_DESCRIPTIONS, LABEL_SET_NEW_LABEL_SCALE = "label_descriptions", "new_label_adapter_scale"
LABEL_SET_REQUEST_THRESHOLD = "request_threshold"
TAG_NEW_LABEL_SCALE = "label_set.new_label_adapter_scale"  # the same share, as a version tag (shown on the card)
TAG_REQUEST_THRESHOLD = "label_set.request_threshold"  # the same threshold, as a version tag (shown on the card)
HPARAM_PREFIX = "hparam."  # on a tuned SFT version: the best trial's hyperparameters, hparam.<name>


# Evaluation results (model version tags; written by the evaluate stage and the controller).
TAG_EVAL_PREFIX = "eval."  # eval.f1_macro, eval.f1_macro_low, eval.f1_macro_high, eval.subset_accuracy, ...
TAG_EVAL_DATA_USED = "eval.dataset"
TAG_EVAL_F1_MACRO = f"{TAG_EVAL_PREFIX}f1_macro"

# Lifecycle decisions (model version tags, one set per decision).
LIFECYCLE_PREFIX = "lifecycle."
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

# Deployment (model version tags, written by the controller; `deploy.target` is also a registered-model tag).
DEPLOY_PREFIX = "deploy."
TAG_DEPLOY_STATUS = "deploy.status"  # deployed | replaced by version N
TAG_DEPLOY_AT = "deploy.at"
TAG_AZUREML_PREFIX = "deployment.azureml."  # where Azure ML serves the version: .endpoint, .deployment

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

# Monitoring: the `monitor` stage's verdict on the champion version it watched (version tags).
TAG_MONITOR_VERDICT = "monitor.verdict"  # ok | drift | degraded; none is written for a window without traffic
TAG_MONITOR_REASON = "monitor.reason"
TAG_MONITOR_WINDOW = "monitor.window"  # "<start> .. <end>" (UTC, ISO 8601) of the traffic judged
TAG_MONITOR_AT = "monitor.at"
TAG_MONITOR_RUN = "monitor.run_id"

# Registered-model tags: continuous training, opt in per model (`python -m lifecycle configure --auto-retrain on`).
TAG_RETRAIN_CONFIG = {
    "auto": "retrain.auto",  # on | off
    "min_feedback": "retrain.min_feedback",  # new feedback records since the last GRPO run that start one
    "min_interval_s": "retrain.min_interval_s",  # at least this long between two triggered runs
    "on_degraded": "retrain.on_degraded",  # on | off: a `degraded` monitor verdict on the champion starts one
    "grpo_epochs": "retrain.grpo_epochs",  # num_train_epochs of the triggered GRPO run
}
TAG_RETRAIN_REASON = "lifecycle.retrain_reason"  # on a GRPO run the controller launched: what triggered it
TAG_RETRAIN_RUN = "lifecycle.retrain_run"  # on a controller run: the GRPO run it launched

# Run tags.
TAG_STAGE = "stage"  # the entry point that made the run: sft, sft-pbt-trial (MLflow's own names: MLFLOW_*)
TAG_TRAINING_DATA_GATE = "validation.training_data"  # sft: passed | failed
TAG_PBT_EXPERIMENT = "pbt.experiment_path"  # sft --tune pbt: Ray's state, what --resume takes
TAG_PBT_RESUMED_FROM = "pbt.resumed_from"
TAG_PBT_BEST_TRIAL = "pbt.best_trial"
TAG_ONNX_PARITY = "onnx.parity"  # export: passed | failed | export failed
TAG_CONTROLLER_MODEL = "lifecycle.model_name"  # a controller run: the model it acts on (its actor: TAG_ACTOR)
TAG_PROMOTED = "lifecycle.promoted"  # a controller run: the version it promoted
TAG_ORPHANED = "lifecycle.orphaned"  # a controller run another controller closed (its own was killed)
