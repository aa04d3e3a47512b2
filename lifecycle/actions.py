"""The controller's registry writes. Multi-step actions run from an intent record (registered-model tag
`lifecycle.pending`) written first and cleared last; every step is idempotent, so resuming after a crash
replays the intent to the end. Steps are ordered so a champion alias always exists once there was one."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from mlflow import MlflowClient
from sqlalchemy.engine import Engine

from lifecycle import history
from lifecycle.faults import checkpoint
from lifecycle.lock import Lease
from mlprojects.onnx_model.publish import export_champion, follow_champion
from registry import conventions as C
from registry.aliases import archive, remove_alias, retire_archived, set_alias, set_stage, set_tags
from registry.lookup import versions_of
from serving.targets import Deployment, DeploymentTarget


@dataclass
class Context:
    client: MlflowClient
    name: str
    engine: Engine
    lease: Lease
    actor: str
    target: DeploymentTarget


def new_intent(action: str, **fields) -> dict:
    return {"action": action, "id": uuid.uuid4().hex, "at": time.time(), **fields}


def write_intent(ctx: Context, intent: dict) -> None:
    ctx.lease.ensure()
    ctx.client.set_registered_model_tag(ctx.name, C.TAG_PENDING, json.dumps(intent))


def clear_intent(ctx: Context) -> None:
    ctx.client.delete_registered_model_tag(ctx.name, C.TAG_PENDING)


def promote(ctx: Context, intent: dict) -> str | None:
    """The new champion's ONNX export first (when asked for), then the champion (alias + Production) and its
    export's alias together, then the old one leaves (Archived): never no champion, and `<name>-onnx@champion`
    never names an older champion's export. Returns what the export did."""
    version, previous = intent["version"], intent.get("previous")
    exported = None
    if intent.get("onnx"):
        ctx.lease.ensure()
        exported = export_champion(ctx.client, ctx.name, version, intent["onnx"])
        checkpoint("promote.export")
    set_alias(ctx.client, ctx.name, C.CHAMPION, version)
    follow_champion(ctx.client, ctx.name, version)
    checkpoint("promote.champion")
    remove_alias(ctx.client, ctx.name, C.CHALLENGER, version)
    checkpoint("promote.challenger")
    if previous and previous != version:
        archive(ctx.client, ctx.name, previous)
    checkpoint("promote.archive")
    history.record(
        ctx.engine,
        ctx.name,
        "promote",
        version,
        previous,
        intent["actor"],
        intent["id"],
        {"reason": intent["tags"].get(C.TAG_REASON)},
    )
    checkpoint("promote.history")
    set_tags(ctx.client, ctx.name, version, intent["tags"])
    checkpoint("promote.tags")
    clear_intent(ctx)
    return exported


def reject(ctx: Context, version: str, tags: dict) -> None:
    """Reason first, then out of the candidates (alias, Staging); a crash in between only means re-evaluation."""
    ctx.lease.ensure()
    set_tags(ctx.client, ctx.name, version, {**tags, C.TAG_DECISION: "rejected"})
    remove_alias(ctx.client, ctx.name, C.CHALLENGER, version)
    set_stage(ctx.client, ctx.name, version, C.NO_STAGE)


def block(ctx: Context, version: str, reason: str) -> None:
    """The candidate cannot be judged for a reason that is not its own (configuration, dataset): it waits."""
    ctx.lease.ensure()
    set_tags(ctx.client, ctx.name, version, {C.TAG_BLOCKED: reason[:4000], C.TAG_DECIDED_AT: _now()})


def rollback(ctx: Context, intent: dict) -> None:
    version, previous = intent["version"], intent["previous"]
    set_alias(ctx.client, ctx.name, C.CHAMPION, version)
    follow_champion(ctx.client, ctx.name, version)
    checkpoint("rollback.champion")
    archive(ctx.client, ctx.name, previous)
    set_tags(
        ctx.client,
        ctx.name,
        previous,
        {
            C.TAG_DECISION: "rolled_back",
            C.TAG_ACTOR: intent["actor"],
            C.TAG_DECIDED_AT: _now(),
            C.TAG_REASON: f"rolled back to {version}",
        },
    )
    checkpoint("rollback.archive")
    history.record(
        ctx.engine,
        ctx.name,
        "rollback",
        version,
        previous,
        intent["actor"],
        intent["id"],
        {"reason": f"rollback from version {previous}"},
    )
    clear_intent(ctx)


def clone(ctx: Context, intent: dict) -> None:
    """The champion copied (copy_model_version, same registered model) as frozen `reference` and trainable
    `policy`; a copy made before a crash is found again (by its intent id, or as a copy still carrying only the
    champion's own tags) instead of being made twice."""
    parent = intent["version"]
    versions = versions_of(ctx.client, ctx.name)
    existing = {v.tags.get(C.TAG_ROLE): str(v.version) for v in versions if v.tags.get(C.TAG_INTENT) == intent["id"]}
    # copy_model_version copies the champion's tags: a copy whose intent tag is still the champion's was never tagged
    champion_intent = next((v.tags.get(C.TAG_INTENT) for v in versions if str(v.version) == parent), None)
    untagged = sorted(
        (
            str(v.version)
            for v in versions
            if v.source == f"models:/{ctx.name}/{parent}" and v.tags.get(C.TAG_INTENT) == champion_intent
        ),
        key=int,
    )
    # clones of this champion made earlier (it was champion before a rollback): the same weights, re-used
    earlier = {
        v.tags.get(C.TAG_ROLE): str(v.version)
        for v in sorted(versions, key=lambda v: int(v.version))
        if v.tags.get(C.TAG_CLONE_OF) == parent and v.tags.get(C.TAG_RETIRED) != "true"
    }
    for role in (C.REFERENCE, C.POLICY):
        version = existing.get(role) or earlier.get(role)
        if version is None:
            ctx.lease.ensure()
            if untagged:  # killed between copying and tagging: adopt that copy
                version = untagged.pop(0)
            else:
                version = str(ctx.client.copy_model_version(f"models:/{ctx.name}/{parent}", ctx.name).version)
                checkpoint(f"clone.{role}.created")
        # idempotent, so a replay also finishes a copy that was killed while being tagged
        ctx.lease.ensure()
        set_tags(ctx.client, ctx.name, version, {C.TAG_ROLE: role, C.TAG_INTENT: intent["id"]})
        checkpoint(f"clone.{role}.claimed")
        for key in _inherited_decision_tags(ctx, version):
            ctx.client.delete_model_version_tag(ctx.name, version, key)
        set_tags(
            ctx.client, ctx.name, version, {C.TAG_KIND: "clone", C.TAG_PARENT_VERSION: parent, C.TAG_CLONE_OF: parent}
        )
        checkpoint(f"clone.{role}.copied")
        set_alias(ctx.client, ctx.name, role, version)
        checkpoint(f"clone.{role}.alias")
    clear_intent(ctx)


def deploy(ctx: Context, version: str) -> Deployment:
    ctx.lease.ensure()
    before = ctx.target.current(ctx.name)
    deployment = ctx.target.deploy(ctx.name, version)
    set_tags(
        ctx.client,
        ctx.name,
        version,
        {C.TAG_DEPLOY_TARGET: deployment.target, C.TAG_DEPLOY_STATUS: deployment.status, C.TAG_DEPLOY_AT: _now()},
    )
    if before and before.version != str(version):  # its card must not say it still serves
        set_tags(
            ctx.client,
            ctx.name,
            before.version,
            {C.TAG_DEPLOY_STATUS: f"replaced by version {version}", C.TAG_DEPLOY_AT: _now()},
        )
    checkpoint("deploy.done")
    return deployment


def retire(ctx: Context, keep: int) -> list[str]:
    ctx.lease.ensure()
    return retire_archived(ctx.client, ctx.name, keep)


RESUME = {"promote": promote, "rollback": rollback, "clone": clone}


def resume(ctx: Context, intent: dict) -> None:
    """Finish an action a crashed controller started (its decision was made; the steps are idempotent)."""
    ctx.lease.ensure()
    RESUME[intent["action"]](ctx, intent)


def _inherited_decision_tags(ctx: Context, version: str) -> list[str]:
    tags = ctx.client.get_model_version(ctx.name, version).tags
    return [
        k for k in tags if k.startswith((C.LIFECYCLE_PREFIX, C.DEPLOY_PREFIX)) and k not in (C.TAG_ROLE, C.TAG_INTENT)
    ]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
