"""Names every stage agrees on: aliases (the source of truth), the stages they mirror, and lineage tags."""
from __future__ import annotations

CHAMPION = "champion"  # serving
CHALLENGER = "challenger"  # candidate waiting for the lifecycle controller
REFERENCE = "reference"  # frozen SFT model that GRPO is anchored to
POLICY = "policy"  # trainable GRPO policy

# Deprecated registry stages, mirrored from aliases so stage-based tools keep working.
STAGE_FOR_ALIAS = {CHAMPION: "Production", CHALLENGER: "Staging"}
ARCHIVED_STAGE = "Archived"

# Lineage tags on every model version.
TAG_SOURCE_RUN = "lineage.source_run_id"
TAG_PARENT_VERSION = "lineage.parent_version"  # clones, GRPO children, ONNX exports
TAG_KIND = "lineage.kind"  # sft | grpo | clone | onnx
TAG_DATA_DIGEST = "lineage.data_digest"
TAG_ENCODER = "lineage.encoder"
TAG_GIT_COMMIT = "lineage.git_commit"
TAG_SOURCE_MODEL = "lineage.source_model"  # ONNX exports: the registered model they were exported from
TAG_ONNX_VERSION = "lineage.onnx_version"  # on a source version: its latest ONNX export (`<name>-onnx`)
