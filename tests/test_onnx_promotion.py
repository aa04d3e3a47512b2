"""The controller exports each new champion to ONNX as part of promoting it (tiny encoder, real SQLite registry):
`<name>-onnx@champion` always names the current champion's export, or nothing when it has none."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from lifecycle import actions as A
from lifecycle.__main__ import main
from lifecycle.config import ONNX_ON_PROMOTION
from lifecycle.controller import Controller
from mlprojects import config as C
from mlprojects.onnx_model.export import export_classifier
from mlprojects.onnx_model.publish import export_ladder, gate_data, source_classifier
from mlprojects.sft import main as sft_main
from registry.aliases import aliases
from tests.conftest import cli_args


@pytest.fixture()
def champion(mlflow_env, tiny_encoder, demo_frame, tmp_path, monkeypatch):
    """A tiny SFT model made champion by the controller (which exports it on the way)."""
    monkeypatch.setenv("LOCAL_DEPLOY_DIR", str(tmp_path / "deployments"))
    data = tmp_path / "small.csv"
    demo_frame.head(120).to_csv(data, index=False)
    assert sft_main(cli_args(data=data, encoder=tiny_encoder, max_epochs=1, min_examples=2, model_name="promo")) == 0
    log = Controller("promo").reconcile()
    return log


def promote(version: str, onnx: str | None) -> str | None:
    """The controller's promote action on `version`, as after a decision to promote it."""
    controller = Controller("promo")
    assert controller.lease.try_acquire()
    with controller.lease:
        intent = A.new_intent(
            "promote", version=version, previous=controller.state().champion, actor="test", tags={}, onnx=onnx
        )
        A.write_intent(controller.ctx, intent)
        return A.promote(controller.ctx, intent)


def new_version() -> str:
    """Another version of the same model (a copy of version 1, carrying its lineage and splits)."""
    return str(MlflowClient().copy_model_version("models:/promo/1", "promo").version)


def test_each_new_champion_gets_its_own_export_and_the_alias_follows(champion, monkeypatch):
    client = MlflowClient()
    assert any(line.startswith("exported version 1 as promo-onnx/1") for line in champion), champion
    first = client.get_model_version_by_alias("promo-onnx", "champion")
    assert str(first.version) == "1" and first.tags["lineage.parent_version"] == "1"
    assert first.description.startswith(f"ONNX {first.tags['onnx.precision']} export of promo version 1 (champion)")
    assert client.get_model_version("promo", "1").tags["lineage.onnx_version"] == "promo-onnx/1"

    second = new_version()
    said = promote(second, "none")
    assert said == f"exported version {second} as promo-onnx/2 (fp32)"
    assert aliases(client, "promo")["champion"] == second and aliases(client, "promo-onnx")["champion"] == "2"
    assert client.get_model_version("promo-onnx", "2").tags["onnx.precision"] == "fp32"
    assert client.get_model_version("promo", second).tags["onnx.status"] == "fp32"
    assert promote(second, "none") == f"version {second} already has its ONNX export promo-onnx/2"  # a replay

    # neither int8 nor fp32 passes: the promotion goes on, torch serves, and no alias names an older export
    monkeypatch.setattr(C, "OnnxConfig", functools.partial(C.OnnxConfig, min_fp32_cosine=1.5))
    third = new_version()
    said = promote(third, "dynamic")
    assert said.startswith(f"no ONNX export for version {third} (torch serves it): int8: fp32 embedding parity")
    assert "; int8 with fp32 FFN outputs: fp32 embedding parity" in said and "; fp32: fp32 embedding parity" in said
    assert aliases(client, "promo")["champion"] == third and "champion" not in aliases(client, "promo-onnx")
    assert client.get_model_version("promo", third).tags["onnx.status"].startswith("refused: int8: fp32 embedding")
    assert len(client.search_model_versions("name='promo-onnx'")) == 2  # nothing registered

    # a rollback brings back the previous champion and its export
    Controller("promo").rollback()
    assert aliases(client, "promo")["champion"] == second and aliases(client, "promo-onnx")["champion"] == "2"


def test_a_champion_refused_plain_int8_ships_int8_with_fp32_ffn_outputs(champion, monkeypatch, tmp_path):
    """The ladder's second rung, with an int8 cosine gate set between the two rungs' measured cosines."""
    client = MlflowClient()
    source = client.get_model_version("promo", "1")
    classifier, (evaluation, _) = source_classifier(source), gate_data(client, source)
    texts, labels = list(evaluation["text"]), list(evaluation["labels"])
    ungated = dict(max_f1_drop=1.0, min_agreement=0.0, min_int8_mean_cosine=0.0)
    cosine = {
        kind: export_classifier(
            classifier, tmp_path / str(i), replace(cfg, **ungated), texts, labels, texts
        ).parity.mean_cosine
        for i, (kind, cfg) in enumerate(export_ladder("dynamic")[:2])
    }
    assert cosine["int8 with fp32 FFN outputs"] > cosine["int8"]
    gate = (cosine["int8"] + cosine["int8 with fp32 FFN outputs"]) / 2
    monkeypatch.setattr(C, "OnnxConfig", functools.partial(C.OnnxConfig, min_int8_mean_cosine=gate))

    version = new_version()
    said = promote(version, "dynamic")
    assert said.startswith(f"exported version {version} as promo-onnx/2 (int8 with fp32 FFN outputs (refused first: ")
    assert f"int8: int8 embedding parity: mean cosine {cosine['int8']:.6f} < {gate}" in said
    status = client.get_model_version("promo", version).tags["onnx.status"]
    assert status.startswith("int8 with fp32 FFN outputs (refused first: int8: int8 embedding parity")
    export = client.get_model_version("promo-onnx", "2")
    assert export.tags["onnx.precision"] == "int8" and "MatMuls kept fp32" in export.description
    assert aliases(client, "promo-onnx")["champion"] == "2"


def test_export_on_promotion_can_be_turned_off(champion):
    assert Controller("promo").onnx_on_promotion() == ONNX_ON_PROMOTION
    assert main(["configure", "--model-name", "promo", "--onnx-export", "off"]) == 0
    assert Controller("promo").onnx_on_promotion() is None
    assert promote(new_version(), None) is None
    assert "champion" not in aliases(MlflowClient(), "promo-onnx")  # the new champion has no export
