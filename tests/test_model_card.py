"""Model cards and descriptions are rendered from tags alone (pure): what each section says, and its limits."""

import json

import mlflow

from mlprojects.config import TrainConfig
from registry import conventions as C
from registry.documents import load_label_descriptions
from registry.model_card import MAX_CHARS, label_set_tags, model_description, render_card
from tests.conftest import REPO
from tests.serving_model import build_served_model

TAGS = {
    C.TAG_KIND: "grpo",
    C.TAG_PARENT_VERSION: "2",
    C.TAG_DATA_DIGEST: "d1",
    "lineage.test_digest": "t9",
    "eval.f1_macro": "0.8123",
    "eval.f1_macro_ci": "[0.7900, 0.8300]",
    C.TAG_EVAL_DATA_USED: "runs:/r/test.parquet",
    C.TAG_DECISION: "promoted",
    C.TAG_REASON: "better | by 0.05",
    C.TAG_COMPARED_WITH: "1",
    C.TAG_CHAMPION_F1: "0.7600",
    C.TAG_GAIN_CI: "[+0.0100, +0.0900]",
    C.TAG_MARGIN: "0.01",
    "deploy.target": "local",
    "deploy.status": "deployed",
    "deploy.at": "2026-12-01T00:00:00Z",
}


def test_card_sections_from_tags():
    card = render_card("main.s.clf", "3", TAGS, {"champion": "3", "reference": "1"})
    assert card.startswith("### main.s.clf version 3")
    assert "GRPO child of reference version 2" in card and "**Status**: `champion`" in card
    assert "| data_digest | `d1` |" in card and "| test_digest | `t9` |" in card
    assert "| f1_macro | 0.8123 | [0.7900, 0.8300] |" in card and "runs:/r/test.parquet" in card
    assert "- promoted: better \\| by 0.05" in card and "gain interval [+0.0100, +0.0900]" in card
    assert "**Deployment**: deployed on `local`" in card


def test_status_without_alias_and_clone_marker():
    assert "archived (a rollback target)" in render_card("m", "4", {C.TAG_ARCHIVED: "true"}, {})
    assert "archived" in render_card("m", "4", {}, {}, stage="Archived")
    assert "retired" in render_card("m", "4", {C.TAG_RETIRED: "true", C.TAG_ARCHIVED: "false"}, {})
    clone = render_card("m", "5", {C.TAG_KIND: "clone", C.TAG_CLONE_OF: "4", C.TAG_ROLE: "reference"}, {})
    assert "**clone** of champion version 4, role `reference`" in clone


def test_description_lists_labels_and_stays_within_the_registry_limit():
    text = model_description(
        "m",
        {"label_descriptions": {"vat": "Value added tax.", "audit": "Tax audits."}, "text_columns": ["title", "body"]},
    )
    assert "| `vat` | Value added tax. |" in text and "over 2 labels" in text and "(title, body)" in text
    many = model_description("m", {"labels": [f"label_{i}" for i in range(1000)]})
    assert len(many) <= MAX_CHARS and many.endswith("…")


def test_the_label_set_is_in_tags_and_card_descriptions_cut_short():
    long = "Value added tax " * 40
    tags = label_set_tags({"vat": long, "audit": "Tax audits | reviews."})
    assert len(tags[C.TAG_LABEL_SET_DIGEST]) == 12
    assert json.loads(tags[C.TAG_LABEL_SET])["vat"].endswith(" …")
    assert (
        label_set_tags({"audit": "Tax audits | reviews.", "vat": long})[C.TAG_LABEL_SET_DIGEST]
        == tags[C.TAG_LABEL_SET_DIGEST]
    )  # the digest names the set, whatever its order
    card = render_card("m", "1", {**TAGS, **tags}, {})
    assert f"**Label set** (2 labels, digest `{tags[C.TAG_LABEL_SET_DIGEST]}`" in card and C.LABEL_SET_FILE in card
    assert "| `audit` | Tax audits \\| reviews. |" in card
    assert card.index("**Deployment**") < card.index("**Label set**")
    assert "**Label set**" not in render_card("m", "1", {C.TAG_LABEL_SET: "not json"}, {})


def test_a_registered_version_records_its_label_set(tmp_path_factory, tiny_encoder):
    """Every logged model carries its label set as an artifact; registering it puts the set in tags and card."""
    served = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    client = mlflow.MlflowClient(served.tracking_uri)
    version = client.get_model_version(served.name, served.version)
    labels = load_label_descriptions(str(REPO / "data/demo/labels.yaml"))
    assert version.tags[C.TAG_LABEL_SET_DIGEST] == label_set_tags(labels)[C.TAG_LABEL_SET_DIGEST]
    assert f"| `vat` | {labels['vat'][:20]}" in version.description
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(served.tracking_uri)
    try:
        recorded = mlflow.artifacts.load_dict(f"models:/{served.name}/{served.version}/artifacts/{C.LABEL_SET_FILE}")
    finally:
        mlflow.set_tracking_uri(previous)
    scale = TrainConfig().new_label_adapter_scale  # the served model was trained with sft's defaults
    threshold = recorded.pop(C.LABEL_SET_REQUEST_THRESHOLD)  # tuned by sft on validation
    assert recorded == {C.LABEL_SET_DESCRIPTIONS: labels, C.LABEL_SET_NEW_LABEL_SCALE: scale}
    assert version.tags[C.TAG_NEW_LABEL_SCALE] == str(scale)
    assert version.tags[C.TAG_REQUEST_THRESHOLD] == str(threshold) and 0.0 < threshold < 1.0
    assert f"probability ≥ {threshold:g}, tuned on validation" in version.description


def test_the_card_says_which_encoder_serves_new_labels():
    tags = label_set_tags({"vat": "Value added tax."})
    blended = render_card("m", "1", {**tags, C.TAG_NEW_LABEL_SCALE: "0.3"}, {})
    assert "a second encoder holding 0.3 of the fine-tuning update" in blended
    assert "same fine-tuned encoder" in render_card("m", "1", {**tags, C.TAG_NEW_LABEL_SCALE: "1.0"}, {})
    tuned = render_card("m", "1", {**tags, C.TAG_NEW_LABEL_SCALE: "0.3", C.TAG_REQUEST_THRESHOLD: "0.27"}, {})
    assert "assigned at probability ≥ 0.27, tuned on validation" in tuned
    assert "assigned at probability ≥ 0.5." in blended  # logged before the threshold was tuned: the default
    for before in ({}, {C.TAG_NEW_LABEL_SCALE: "n/a"}):  # versions logged before the knob, or an edited tag
        assert "**New labels**" not in render_card("m", "1", {**tags, **before}, {})
