"""A snapshot of one registered model as the controller sees it: versions, stages, aliases, tags, intent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlflow import MlflowClient

from registry import conventions as C
from registry.aliases import is_archived
from registry.lookup import versions_of


@dataclass(frozen=True)
class VersionInfo:
    version: str
    stage: str
    tags: dict = field(default_factory=dict)


@dataclass
class RegistryState:
    name: str
    versions: dict[str, VersionInfo]
    aliases: dict[str, str]
    tags: dict[str, str]

    @property
    def champion(self) -> str | None:
        return self.aliases.get(C.CHAMPION)

    @property
    def pending(self) -> dict | None:
        raw = self.tags.get(C.TAG_PENDING)
        return json.loads(raw) if raw else None

    def archived(self) -> list[str]:
        """Archived versions holding no alias, newest first."""
        held = set(self.aliases.values())
        return sorted(
            (v for v, info in self.versions.items() if is_archived(info.stage, info.tags) and v not in held),
            key=int,
            reverse=True,
        )


def read_state(client: MlflowClient, name: str) -> RegistryState:
    model = client.get_registered_model(name)
    versions = {
        str(v.version): VersionInfo(str(v.version), v.current_stage, dict(v.tags))
        for v in versions_of(client, name)
        if v.status == "READY"
    }
    return RegistryState(name, versions, {a: str(v) for a, v in model.aliases.items()}, dict(model.tags))
