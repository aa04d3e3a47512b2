"""A registry people can read: each registered model's description, and each version's Markdown model card.

A card is rendered from the version's own tags (lineage, evaluation, decision, deployment) and aliases, so the
stage that made the version and the controller that judges and deploys it refresh it the same way, and a card
never says what the tags do not.
"""

from __future__ import annotations

import hashlib
import json
import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import conventions as C
from registry.aliases import is_archived
from registry.contract import REQUEST_THRESHOLD, normalise
from registry.lookup import classifier_meta, versions_of

log = logging.getLogger(__name__)

MAX_CHARS = 5000  # what every registry backend stores in a description
SUMMARY = ("f1_macro", "f1_micro", "f1_weighted", "subset_accuracy")
CARD_DESCRIPTION_CHARS = 120  # of each description in the label-set tag and card; in full in LABEL_SET_FILE


def model_description(name: str, meta: dict) -> str:
    """What the model classifies, its label set, how versions are trained and judged."""
    labels = meta.get("label_descriptions") or {label: "" for label in meta.get("labels", [])}
    columns = ", ".join(meta.get("text_columns") or ["text"])
    kind = "single-label (arg-max)" if meta.get("single_label") else "multi-label"
    rows = "\n".join(f"| `{label}` | {_cell(text)} |" for label, text in labels.items())
    export = (
        "\n\n**ONNX export** (onnxruntime, no torch) of the torch model named in each version's "
        "`lineage.source_model`; registered only when its parity gates against the torch model pass."
        if "input_names" in meta
        else ""
    )
    return _fit(f"""**{name}**: a semantic dual-encoder document classifier, {kind}, over {len(labels)} labels.
A shared transformer encoder (LoRA adapters) embeds the document ({columns}) and each label description; the
scaled cosine similarity through a sigmoid is the probability of that label. A new label set is classified
zero-shot by describing it (pyfunc param `label_descriptions`).

| label | description |
|---|---|
{rows}

**Trained**: LoRA fine-tuning (`sft`) on the fit split; early stopping, tuning and per-label thresholds on the
validation split. Later versions: GRPO on user feedback (`grpo`), anchored to a frozen `reference` clone.

**Judged**: the lifecycle controller scores every candidate on the held-out test split and promotes it to
`champion` only if it passes the gates and beats the champion by the margin, with a paired-bootstrap interval of
the F1-macro gain above 0. Each version's description is its model card: data, metrics, lineage, decision,
deployment.{export}""")


def describe_model(client: MlflowClient, name: str, meta: dict) -> None:
    """Give the registered model its description, unless it has one (a person's edit is kept)."""
    if not (client.get_registered_model(name).description or "").strip():
        client.update_registered_model(name, description=model_description(name, meta))


def status(version: str, stage: str | None, tags: dict, aliases: dict[str, str]) -> str:
    held = sorted(alias for alias, v in aliases.items() if v == str(version))
    if held:
        return ", ".join(f"`{alias}`" for alias in held)
    if tags.get(C.TAG_RETIRED) == "true":
        return "retired (artifacts kept)"
    if is_archived(stage, tags):
        return "archived (a rollback target)"
    if tags.get(C.TAG_DECISION):
        return tags[C.TAG_DECISION]
    return "registered"


def render_card(name: str, version: str, tags: dict, aliases: dict[str, str], stage: str | None = None) -> str:
    """The Markdown card of one version, from its tags and the model's aliases (pure)."""
    kind = tags.get(C.TAG_KIND, "")
    parent = tags.get(C.TAG_PARENT_VERSION)
    origin = {
        "sft": "fine-tuned (SFT) from the encoder",
        "grpo": f"GRPO child of reference version {parent}",
        "clone": f"**clone** of champion version {tags.get(C.TAG_CLONE_OF, parent)}"
        + (f", role `{tags[C.TAG_ROLE]}`" if tags.get(C.TAG_ROLE) else "")
        + ": the same weights, kept for GRPO",
        "onnx": f"ONNX export of {tags.get(C.TAG_SOURCE_MODEL, '')} version {parent}",
    }.get(kind, kind or "unknown")
    parts = [
        f"### {name} version {version}",
        f"**Origin**: {origin}  ",
        f"**Status**: {status(version, stage, tags, aliases)}",
    ]
    data = [
        (k[len(C.LINEAGE_PREFIX) :], v)
        for k, v in sorted(tags.items())
        if k.startswith(C.LINEAGE_PREFIX) and "digest" in k
    ]
    if data:
        parts += ["", "**Data** (digests)", "", "| data | digest |", "|---|---|"] + [
            f"| {k} | `{v}` |" for k, v in data
        ]
    metrics = [
        (m, tags[f"{C.TAG_EVAL_PREFIX}{m}"], tags.get(f"{C.TAG_EVAL_PREFIX}{m}_ci", ""))
        for m in SUMMARY
        if f"{C.TAG_EVAL_PREFIX}{m}" in tags
    ]
    if metrics:
        parts += [
            "",
            "**Test-split metrics**"
            + (f" on {_cell(tags[C.TAG_EVAL_DATA_USED])}" if C.TAG_EVAL_DATA_USED in tags else ""),
            "",
            "| metric | value | interval |",
            "|---|---|---|",
        ] + [f"| {m} | {v} | {ci} |" for m, v, ci in metrics]
    lineage = [
        (label, tags[key])
        for label, key in (
            ("source run", C.TAG_SOURCE_RUN),
            ("parent version", C.TAG_PARENT_VERSION),
            ("encoder", C.TAG_ENCODER),
            ("git commit", C.TAG_GIT_COMMIT),
            ("ONNX export", C.TAG_ONNX_VERSION),
        )
        if tags.get(key)
    ]
    if lineage:
        parts += ["", "**Lineage**", ""] + [f"- {label}: `{value}`" for label, value in lineage]
    if tags.get(C.TAG_DECISION) or tags.get(C.TAG_BLOCKED):
        parts += ["", "**Decision**", ""]
        if tags.get(C.TAG_DECISION):
            parts.append(f"- {tags[C.TAG_DECISION]}: {_cell(tags.get(C.TAG_REASON, ''))}")
        if tags.get(C.TAG_COMPARED_WITH):
            parts.append(
                f"- against champion version {tags[C.TAG_COMPARED_WITH]} (F1-macro "
                f"{tags.get(C.TAG_CHAMPION_F1, '?')}), gain interval {tags.get(C.TAG_GAIN_CI, '?')}, "
                f"margin {tags.get(C.TAG_MARGIN, '?')}"
            )
        if tags.get(C.TAG_BLOCKED):
            parts.append(f"- waiting: {_cell(tags[C.TAG_BLOCKED])}")
        if tags.get(C.TAG_DECIDED_AT):
            parts.append(f"- at {tags[C.TAG_DECIDED_AT]} by {tags.get(C.TAG_ACTOR, '?')}")
    if tags.get(C.TAG_DEPLOY_TARGET):
        parts += [
            "",
            f"**Deployment**: {tags[C.TAG_DEPLOY_STATUS]} on `{tags[C.TAG_DEPLOY_TARGET]}` at "
            f"{tags.get(C.TAG_DEPLOY_AT, '?')}",
        ]
    parts += _label_set_section(tags)  # last: a long label set is what the registry's limit cuts
    return _fit("\n".join(parts))


def label_set_tags(descriptions: dict[str, str]) -> dict[str, str]:
    """The version's label set as tags: each description cut short (so even the largest set fits a tag), and a
    digest of the whole set, so two versions can be seen to answer with the same labels."""
    whole = json.dumps(descriptions, sort_keys=True, ensure_ascii=False)
    short = {label: _short(text) for label, text in descriptions.items()}
    return {
        C.TAG_LABEL_SET: json.dumps(short, ensure_ascii=False),
        C.TAG_LABEL_SET_DIGEST: hashlib.sha256(whole.encode()).hexdigest()[:12],
    }


def _label_set_section(tags: dict) -> list[str]:
    try:
        labels = json.loads(tags.get(C.TAG_LABEL_SET) or "{}")
    except ValueError:
        return []
    if not isinstance(labels, dict) or not labels:
        return []
    return [
        "",
        f"**Label set** ({len(labels)} labels, digest `{tags.get(C.TAG_LABEL_SET_DIGEST, '?')}`; descriptions in "
        f"full in the model's artifact `{C.LABEL_SET_FILE}`)",
        *_new_label_lines(tags.get(C.TAG_NEW_LABEL_SCALE), tags.get(C.TAG_REQUEST_THRESHOLD)),
        "",
        "| label | description |",
        "|---|---|",
    ] + [f"| `{_cell(label)}` | {_cell(text)} |" for label, text in labels.items()]


def _new_label_lines(scale: str | None, threshold: str | None) -> list[str]:
    """Which encoder answers a request's own label set (`label_descriptions`), and the threshold its labels are
    decided with; nothing for versions before the scale, and the default threshold for those before its tuning."""
    try:
        share = float(scale or "")
    except ValueError:
        return []
    try:
        cut = f"{float(threshold or ''):g}, tuned on validation over the model's own labels scored this way"
    except ValueError:
        cut = f"{REQUEST_THRESHOLD:g}"
    decided = f"; each label assigned at probability ≥ {cut}."
    if share >= 1.0:
        return [
            "",
            f"**New labels** (a request's `label_descriptions`): scored by the same fine-tuned encoder{decided}",
        ]
    return [
        "",
        f"**New labels** (a request's `label_descriptions`): scored by a second encoder holding {share:g} of "
        "the fine-tuning update (weight-space blend with the pre-trained encoder, which keeps more zero-shot "
        f"ability); the model's own labels by the fully fine-tuned one{decided}",
    ]


def write_card(client: MlflowClient, name: str, version: str) -> None:
    """Render one version's card from the registry and store it as the version's description."""
    v = client.get_model_version(name, str(version))
    aliases = {a: str(n) for a, n in client.get_registered_model(name).aliases.items()}
    card = render_card(name, str(version), dict(v.tags), aliases, v.current_stage)
    if card != (v.description or ""):
        client.update_model_version(name, str(version), description=card)


def refresh_cards(client: MlflowClient, name: str) -> list[str]:
    """Re-render every version's card (after the controller acted); writes only the cards that changed."""
    aliases = {a: str(n) for a, n in client.get_registered_model(name).aliases.items()}
    changed = []
    for v in versions_of(client, name):
        card = render_card(name, str(v.version), dict(v.tags), aliases, v.current_stage)
        if card != (v.description or ""):
            client.update_model_version(name, str(v.version), description=card)
            changed.append(str(v.version))
    return changed


def publish(client: MlflowClient, name: str, version: str) -> None:
    """After registration: the model's description (first time), the version's label set as tags, and its card."""
    try:
        meta = classifier_meta(name, version)
    except (FileNotFoundError, MlflowException) as exc:  # a model logged by other code: it still gets its card
        log.warning("no description for %s: %s", name, exc)
    else:
        describe_model(client, name, meta)
        if meta.get("label_descriptions"):
            tags = label_set_tags(meta["label_descriptions"])
            tags[C.TAG_NEW_LABEL_SCALE] = str(float(meta.get(C.LABEL_SET_NEW_LABEL_SCALE, 1.0)))
            if C.LABEL_SET_REQUEST_THRESHOLD in meta:  # absent: logged before it was tuned, served at the default
                tags[C.TAG_REQUEST_THRESHOLD] = str(float(meta[C.LABEL_SET_REQUEST_THRESHOLD]))
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
    write_card(client, name, version)


def _short(text: str) -> str:
    text = normalise(text)
    return text if len(text) <= CARD_DESCRIPTION_CHARS else text[: CARD_DESCRIPTION_CHARS - 2] + " …"


def _cell(text: str) -> str:
    return normalise(text).replace("|", "\\|")


def _fit(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 2] + " …"
