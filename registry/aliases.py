"""Aliases are the source of truth; the deprecated stages are mirrored so stage-based tools keep working.

MLflow quirk (#16734): `search_model_versions` returns versions with empty `aliases`, so aliases are always
read from the registered model.
"""
from __future__ import annotations

import warnings

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import conventions as C
from registry.lookup import versions_of


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version for one registered model."""
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def set_stage(client: MlflowClient, name: str, version: str, stage: str) -> None:
    """Mirror a stage (deprecated API, still what the UI and older tools show); a no-op when already there."""
    if client.get_model_version(name, str(version)).current_stage == stage:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, str(version), stage, archive_existing_versions=False)


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` and mirror its stage (champion -> Production, challenger -> Staging)."""
    client.set_registered_model_alias(name, alias, str(version))
    if alias in C.STAGE_FOR_ALIAS:
        set_stage(client, name, version, C.STAGE_FOR_ALIAS[alias])


def remove_alias(client: MlflowClient, name: str, alias: str, version: str | None = None) -> None:
    """Delete `alias`, only if it still points at `version` when one is given (another writer may have moved it)."""
    current = aliases(client, name).get(alias)
    if current is None or (version is not None and current != str(version)):
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException:
        pass  # deleted meanwhile: the wanted state


def set_tags(client: MlflowClient, name: str, version: str, tags: dict) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def retire_archived(client: MlflowClient, name: str, keep: int) -> list[str]:
    """Keep the newest `keep` Archived versions (rollback targets); older ones leave the stage, tagged retired.

    Retired, not deleted: clones and GRPO children may point at them (`models:/name/N` sources, lineage), and
    their artifacts stay available; deleting a version is left to a person.
    """
    held = set(aliases(client, name).values())
    archived = sorted((v for v in versions_of(client, name)
                       if v.current_stage == C.ARCHIVED_STAGE and str(v.version) not in held),
                      key=lambda v: int(v.version), reverse=True)
    retired = []
    for v in archived[max(keep, 0):]:
        client.set_model_version_tag(name, v.version, C.TAG_RETIRED, "true")
        set_stage(client, name, v.version, C.NO_STAGE)
        retired.append(str(v.version))
    return retired
