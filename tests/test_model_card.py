"""Model cards and descriptions are rendered from tags alone (pure): what each section says, and its limits."""

from registry import conventions as C
from registry.model_card import MAX_CHARS, model_description, render_card

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
