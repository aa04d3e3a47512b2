"""Aliases are the source of truth; the deprecated stages are mirrored so stage-based tools keep working, only
where the registry has stages (not on Unity Catalog: `registry.stages`). Archived champions also carry a tag,
so every reader works without stages.

MLflow quirk (#16734): `search_model_versions` returns versions with empty `aliases`, so aliases are always
read from the registered model.
"""

from __future__ import annotations

import warnings

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import conventions as C
from registry.lookup import versions_of
from registry.stages import client_stages_enabled


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version for one registered model."""
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def set_stage(client: MlflowClient, name: str, version: str, stage: str) -> None:
    """Mirror a stage (deprecated API, still what the UI and older tools show); a no-op when already there, or
    when the registry has no stages."""
    if not client_stages_enabled(client) or client.get_model_version(name, str(version)).current_stage == stage:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, str(version), stage, archive_existing_versions=False)


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` and mirror its stage (champion -> Production, challenger -> Staging); a champion
    back from the archive (rollback) loses its archived tag."""
    client.set_registered_model_alias(name, alias, str(version))
    if alias == C.CHAMPION and client.get_model_version(name, str(version)).tags.get(C.TAG_ARCHIVED) == "true":
        client.delete_model_version_tag(name, str(version), C.TAG_ARCHIVED)
    if alias in C.STAGE_FOR_ALIAS:
        set_stage(client, name, version, C.STAGE_FOR_ALIAS[alias])


def is_archived(stage: str | None, tags: dict) -> bool:
    """A previous champion kept for rollback: its tag, or (a registry with stages) the Archived stage."""
    return tags.get(C.TAG_ARCHIVED) == "true" or stage == C.ARCHIVED_STAGE


def archive(client: MlflowClient, name: str, version: str) -> None:
    """A champion that was replaced: tagged archived (and moved to the Archived stage where there are stages)."""
    client.set_model_version_tag(name, str(version), C.TAG_ARCHIVED, "true")
    set_stage(client, name, version, C.ARCHIVED_STAGE)


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
    archived = sorted(
        (v for v in versions_of(client, name) if is_archived(v.current_stage, v.tags) and str(v.version) not in held),
        key=lambda v: int(v.version),
        reverse=True,
    )
    retired = []
    for v in archived[max(keep, 0) :]:
        client.set_model_version_tag(name, v.version, C.TAG_RETIRED, "true")
        if v.tags.get(C.TAG_ARCHIVED) is not None:
            client.delete_model_version_tag(name, v.version, C.TAG_ARCHIVED)
        set_stage(client, name, v.version, C.NO_STAGE)
        retired.append(str(v.version))
    return retired
