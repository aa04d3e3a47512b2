"""ONNX export end to end on a tiny SFT model: `mlflow run -e export_onnx`, lineage both ways, the pyfunc in a
process where torch and transformers cannot be imported, parity gates that pass and fail, unexportable encoders."""

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
import torch

import mlprojects.onnx_model.export as export
from mlprojects.config import FFN_OUTPUT_MATMULS, OnnxConfig, TrainConfig
from mlprojects.evaluation.bootstrap import paired_bootstrap
from mlprojects.export_onnx import build_parser, main
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import DualEncoder, load_encoder
from mlprojects.onnx_model.export import ExportError, export_classifier
from mlprojects.onnx_model.parity import ParityReport, decision_agreement, gate_failures, own_thresholds, row_cosines
from mlprojects.onnx_model.publish import export_ladder
from mlprojects.onnx_model.runtime import NEW_LABEL_MODEL_FILE, OnnxClassifier
from mlprojects.sft import main as sft_main
from registry import conventions as C
from registry.contract import OUTPUT_COLUMNS, to_params
from tests.conftest import REPO, cli_args, lora_with_update, use_mlflow_store
from tests.test_sft_stage import mlflow_run

FRUIT = {"apple": "Apples, orchards and fruit harvests.", "bank": "Banks, loans and interest rates."}
TEXTS = [
    "Is VAT due on our consulting invoices to Germany for 2022?",
    "Payroll tax memo for new hires",
    "Transfer pricing documentation for the intercompany loan",
]

# Runs in a fresh interpreter: torch/transformers/peft imports raise before MLflow loads the model.
NO_TORCH_SCRIPT = r"""
import json, sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "peft"}:
            raise ImportError(f"{name} is blocked in this process")
        return None

sys.meta_path.insert(0, BlockTorch())
import mlflow, pandas as pd
from registry.contract import to_params

uri, texts, fruit = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = mlflow.pyfunc.load_model(uri, model_config={"threads": 1})
own = model.predict(pd.DataFrame({"text": texts}))
columns = model.predict(pd.DataFrame({"title": [texts[0]], "body": ["for 2022"]}))
zero_shot = model.predict(pd.DataFrame({"text": texts}), params=to_params(fruit, threshold=0.5))
print(json.dumps({"own": own.to_dict("records"), "columns": columns.to_dict("records"),
                  "zero_shot": zero_shot.to_dict("records"),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "peft"})}))
"""


@pytest.fixture(scope="module")
def registry_env(tmp_path_factory):
    """One SQLite store shared by the tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        yield use_mlflow_store(tmp_path_factory.mktemp("onnx-registry"), mp)


@pytest.fixture(scope="module")
def source_model(registry_env, tiny_encoder, demo_frame, tmp_path_factory):
    data = tmp_path_factory.mktemp("onnx-data") / "small.csv"
    demo_frame.head(120).to_csv(data, index=False)
    rc = sft_main(cli_args(data=data, encoder=tiny_encoder, max_epochs=1, min_examples=2, model_name="tiny-clf"))
    assert rc == 0
    return "models:/tiny-clf/1"


@pytest.fixture(scope="module")
def exported(registry_env, source_model):
    """The stage through `mlflow run`, as a user would type it."""
    proc = mlflow_run("export_onnx", {"model_uri": source_model}, registry_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Registered tiny-clf-onnx version 1" in proc.stdout
    return "models:/tiny-clf-onnx/1"


def test_export_registers_onnx_version_with_lineage_both_ways(exported):
    client = mlflow.MlflowClient()
    onnx_version = client.get_model_version("tiny-clf-onnx", "1")
    source = client.get_model_version("tiny-clf", "1")
    assert onnx_version.tags["lineage.kind"] == "onnx"
    assert onnx_version.tags["lineage.parent_version"] == "1"
    assert onnx_version.tags["lineage.source_model"] == "tiny-clf"
    assert onnx_version.tags["lineage.encoder"] == source.tags["lineage.encoder"]
    assert source.tags["lineage.onnx_version"] == "tiny-clf-onnx/1"
    # the export answers with its source's label set, and records it as every version does
    assert onnx_version.tags[C.TAG_LABEL_SET_DIGEST] == source.tags[C.TAG_LABEL_SET_DIGEST]
    assert onnx_version.tags[C.TAG_LABEL_SET] == source.tags[C.TAG_LABEL_SET]
    recorded = mlflow.artifacts.load_dict(f"models:/tiny-clf-onnx/1/artifacts/{C.LABEL_SET_FILE}")
    assert recorded == mlflow.artifacts.load_dict(f"models:/tiny-clf/1/artifacts/{C.LABEL_SET_FILE}")

    run = client.get_run(onnx_version.run_id)
    assert run.data.tags["onnx.parity"] == "passed"
    metrics = run.data.metrics
    assert metrics["parity_fp32_min_cosine"] >= 0.9999
    assert metrics["parity_int8_mean_cosine"] >= 0.99
    assert metrics["f1_macro_drop_low"] <= 0.005 and metrics["decision_agreement"] >= 0.9
    assert {"size_mb_torch_fp32", "size_mb_onnx_fp32", "size_mb_onnx_int8", "size_mb_onnx_new_labels_int8"} <= set(
        metrics
    )
    # the source has a new-label encoder (sft's default scale): its graph is exported and gated too
    assert metrics["parity_new_labels_fp32_min_cosine"] >= 0.9999
    assert metrics["parity_new_labels_int8_mean_cosine"] >= 0.99
    package = os.path.join(mlflow.artifacts.download_artifacts(exported), "artifacts", "onnx_classifier")
    assert "MatMulInteger" in {n.op_type for n in onnx.load(os.path.join(package, NEW_LABEL_MODEL_FILE)).graph.node}
    assert (
        json.load(open(os.path.join(package, "onnx_classifier.json")))["new_label_adapter_scale"]
        == TrainConfig().new_label_adapter_scale
    )
    report = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/onnx/parity_report.json")
    assert report["steps"]["quantization"] == "dynamic" and report["precision"] == "int8"
    assert report["steps"]["thresholds"] == "the torch model's"
    assert onnx_version.tags["onnx.precision"] == "int8"
    assert onnx_version.description.startswith("ONNX int8 export of tiny-clf version 1. Parity on runs:/")

    requirements = mlflow.pyfunc.get_model_dependencies(exported, format="pip")
    packages = {line.split("==")[0] for line in open(requirements).read().split() if line}
    assert packages == {"mlflow", "onnxruntime", "tokenizers", "pandas", "numpy"}
    graph = onnx.load(
        os.path.join(mlflow.artifacts.download_artifacts(exported), "artifacts", "onnx_classifier", "model.onnx")
    )
    assert "MatMulInteger" in {n.op_type for n in graph.graph.node}  # int8 weights
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


def test_onnx_pyfunc_serves_the_contract_without_torch(exported, source_model, registry_env):
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, exported, json.dumps(TEXTS), json.dumps(FRUIT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": registry_env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert "were ignored" not in proc.stderr  # the threads setting reached the model

    torch_out = mlflow.pyfunc.load_model(source_model).predict(pd.DataFrame({"text": TEXTS}))
    labels = set(torch_out.loc[0, "scores"])
    for onnx_row, torch_row in zip(out["own"], torch_out.to_dict("records")):
        assert set(onnx_row) == set(OUTPUT_COLUMNS) and onnx_row["label_set"] == torch_row["label_set"] == "model"
        assert set(onnx_row["scores"]) == labels
        assert onnx_row["top_label"] == torch_row["top_label"]
        for label in labels:
            assert onnx_row["scores"][label] == pytest.approx(torch_row["scores"][label], abs=0.02)
    assert set(out["columns"][0]["scores"]) == labels
    for row in out["zero_shot"]:
        assert set(row["scores"]) == set(FRUIT) and row["top_label"] in FRUIT and row["label_set"] == "request"
        assert row["labels"] == [l for l, s in row["scores"].items() if s >= 0.5]


def test_torch_and_onnx_pyfuncs_answer_no_documents_alike(exported, source_model):
    """One predict path: an empty input is an empty answer with the contract's columns, from either model, with
    the model's own labels or a new label set."""
    empty = pd.DataFrame({"text": pd.Series([], dtype=str)})
    for uri in (source_model, exported):
        model = mlflow.pyfunc.load_model(uri)
        for params in (None, to_params(FRUIT)):
            out = model.predict(empty, params=params)
            assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 0, (uri, params)


def _no_version(name: str) -> bool:
    return mlflow.MlflowClient().search_model_versions(f"name='{name}'") == []


def test_parity_gates_fail_and_nothing_is_registered(registry_env, source_model, capsys):
    rc = main(
        [
            "--model-uri",
            source_model,
            "--model-name",
            "strict-onnx",
            "--min-int8-mean-cosine",
            "1.01",
            "--max-f1-drop",
            "-1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "failed its parity gates, nothing was registered" in err
    assert "int8 embedding parity: mean cosine" in err and "< 1.01" in err
    assert "F1-macro drop" in err and "paired bootstrap 95% interval [" in err and "> -1.0" in err
    assert "fp32 embedding parity" not in err
    assert _no_version("strict-onnx")
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`onnx.parity` = 'failed'", output_format="list"
    )[0]
    assert run.data.params["model_name"] == "strict-onnx"
    assert "parity_int8_mean_cosine" in run.data.metrics


def test_a_tampered_graph_fails_the_fp32_gate(registry_env, source_model, monkeypatch, capsys):
    original = export.export_graph

    def tampered(classifier, path, opset):
        path, names = original(classifier, path, opset)
        graph = onnx.load(str(path))
        weight = max(graph.graph.initializer, key=lambda i: np.prod(i.dims))  # the word embeddings
        values = onnx.numpy_helper.to_array(weight)
        values = values + np.random.default_rng(0).normal(0, values.std(), values.shape).astype(values.dtype)
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(path))
        return path, names

    monkeypatch.setattr(export, "export_graph", tampered)
    rc = main(["--model-uri", source_model, "--model-name", "tampered-onnx"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "fp32 embedding parity: min cosine" in err and "< 0.9999" in err
    assert _no_version("tampered-onnx")
    assert mlflow.MlflowClient().get_model_version("tiny-clf", "1").tags.get("lineage.onnx_version") in (
        None,
        "tiny-clf-onnx/1",
    )


def test_the_fp32_export_reports_fp32_numbers(registry_env, source_model, capsys):
    """A graph that was never quantised names no int8 cosine and no int8 size anywhere; asked to, the export
    re-tunes its thresholds on the source run's validation split."""
    rc = main(
        [
            "--model-uri",
            source_model,
            "--model-name",
            "plain-onnx",
            "--quantization",
            "none",
            "--thresholds",
            "validation",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "int8" not in out and "fp32 graph, min cosine to torch" in out
    assert "Thresholds: tuned on" in out and "validation documents with the export's scores" in out
    version = mlflow.MlflowClient().get_model_version("plain-onnx", "1")
    assert version.tags["onnx.precision"] == "fp32" and version.description.startswith("ONNX fp32 export")
    metrics = mlflow.MlflowClient().get_run(version.run_id).data.metrics
    assert not [k for k in metrics if "int8" in k]
    assert metrics["parity_fp32_mean_cosine"] >= 0.9999 and metrics["decision_agreement"] >= 0.9


class _UnexportableEncoder(torch.nn.Module):
    """An encoder built on an operator ONNX has no equivalent for."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 4)
        self.config = SimpleNamespace(model_type="custom")

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.embedding(input_ids % 100)
        gram = hidden @ hidden.transpose(1, 2)
        return SimpleNamespace(last_hidden_state=torch.linalg.eigvalsh(gram).unsqueeze(-1).expand(*gram.shape[:2], 4))


def test_an_encoder_the_exporter_cannot_handle_is_a_clear_error(tiny_encoder, tmp_path):
    from transformers import AutoTokenizer

    model = DualEncoder(_UnexportableEncoder(), AutoTokenizer.from_pretrained(tiny_encoder))
    classifier = Classifier(model, FRUIT, np.full(2, 0.5))
    with pytest.raises(ExportError, match="cannot export encoder '_UnexportableEncoder' to ONNX: .*eigvalsh"):
        export_classifier(classifier, tmp_path / "out", OnnxConfig(), TEXTS, [["apple"]] * 3, TEXTS)
    assert not any((tmp_path / "out").iterdir())


def test_static_quantisation_is_calibrated_on_text(tiny_encoder, tmp_path):
    """Static QDQ: activation ranges from real documents (QuantizeLinear nodes with fixed scales)."""
    encoder, tokenizer = load_encoder(tiny_encoder)
    classifier = Classifier(DualEncoder(encoder, tokenizer).eval(), FRUIT, np.full(2, 0.5))
    result = export_classifier(
        classifier,
        tmp_path / "out",
        OnnxConfig(quantization="static", max_f1_drop=1.0),
        TEXTS,
        [["bank"]] * 3,
        TEXTS * 4,
    )
    graph = onnx.load(str(result.directory / "model.onnx"))
    assert "QuantizeLinear" in {n.op_type for n in graph.graph.node}
    assert result.parity.fp32_min_cosine >= 0.9999
    assert result.steps == {"fusion": "none", "quantization": "static", "thresholds": "the torch model's"}


def test_request_label_sets_are_served_by_the_new_label_graph(tiny_encoder, tmp_path):
    """Scale 0: the export's new-label graph is the untrained encoder, and request label sets are scored by it
    (as the torch model does); its own labels by the main graph."""
    model = lora_with_update(TrainConfig(encoder=tiny_encoder, lora_r=4), 0.2)
    Classifier(model, FRUIT, np.full(2, 0.5), new_label_adapter_scale=0.0, request_threshold=0.37).save(
        tmp_path / "torch"
    )
    classifier = Classifier.load(tmp_path / "torch", "cpu")
    cfg = OnnxConfig(quantization="none", max_f1_drop=1.0, min_agreement=0.0)
    result = export_classifier(classifier, tmp_path / "out", cfg, TEXTS, [["bank"]] * 3, TEXTS)
    assert result.parity.new_labels_fp32_min_cosine >= 0.9999 and "onnx_new_labels_fp32" in result.sizes_mb
    onnx_clf = OnnxClassifier.load(result.directory, threads=1)
    assert onnx_clf.request_threshold == classifier.request_threshold == 0.37  # request sets decided alike
    new = {"vat": "Value added tax on invoices.", "payroll": "Wages and payroll tax."}
    np.testing.assert_allclose(onnx_clf.predict_proba(TEXTS, new), classifier.predict_proba(TEXTS, new), atol=1e-4)
    meta_file = result.directory / "onnx_classifier.json"  # an export from before the threshold was tuned
    meta_file.write_text(
        json.dumps({k: v for k, v in json.loads(meta_file.read_text()).items() if k != "request_threshold"})
    )
    assert OnnxClassifier.load(result.directory, threads=1).request_threshold == 0.5
    np.testing.assert_allclose(onnx_clf.predict_proba(TEXTS), classifier.predict_proba(TEXTS), atol=1e-4)
    main_only = OnnxClassifier(
        onnx_clf.encoder, FRUIT, onnx_clf.label_embeddings, onnx_clf.thresholds, onnx_clf.scale, onnx_clf.bias
    )
    assert not np.allclose(main_only.predict_proba(TEXTS, new), onnx_clf.predict_proba(TEXTS, new), atol=1e-3)


def test_the_new_label_graph_is_held_to_the_cosine_gates():
    report = _report()
    report.new_labels_fp32_min_cosine, report.new_labels_mean_cosine, report.new_labels_min_cosine = 0.999, 0.9, 0.8
    assert gate_failures(report, 0.9999, 0.99, 0.005, 0.9) == [
        "new-label graph fp32 embedding parity: min cosine 0.999000 < 0.9999",
        "new-label graph int8 embedding parity: mean cosine 0.900000 < 0.99",
    ]
    assert report.metrics()["parity_new_labels_int8_mean_cosine"] == 0.9
    assert "new-label graph int8 mean cosine 0.90000" in report.summary()
    assert not [k for k in _report().metrics() if "new_labels" in k]


def _report(precision="int8", fp32=1.0, mean=0.995, f1=(0.80, 0.797), drop=(-0.02, 0.03), agreement=0.95, n=40):
    return ParityReport(precision, fp32, mean, mean - 0.01, f1[0], f1[1], drop[0], drop[1], agreement, n)


def test_gate_failures_name_each_gate_and_its_value():
    assert gate_failures(_report(), 0.9999, 0.99, 0.005, 0.9) == []
    bad = _report(fp32=0.9991, mean=0.95, f1=(0.80, 0.70), drop=(0.05, 0.15), agreement=0.85)
    failures = gate_failures(bad, 0.9999, 0.99, 0.005, 0.9)
    assert failures[0] == "fp32 embedding parity: min cosine 0.999100 < 0.9999"
    assert failures[1] == "int8 embedding parity: mean cosine 0.950000 < 0.99"
    assert failures[2] == (
        "F1-macro drop 0.1000 (0.8000 -> 0.7000), paired bootstrap 95% interval "
        "[0.0500, 0.1500]: lower bound 0.0500 > 0.005"
    )
    assert failures[3] == "decision agreement with torch 0.8500 < 0.9 (same label set on 34 of 40 documents)"
    assert bad.f1_macro_drop == pytest.approx(0.1)


def test_f1_gate_refuses_only_a_drop_credibly_above_the_allowed_one():
    """A 6-point point drop on a few dozen documents whose interval reaches below the allowed drop is noise,
    not evidence; the same drop measured tightly is refused. Agreement bounds how often decisions differ."""
    noisy = _report(f1=(0.80, 0.74), drop=(-0.01, 0.14))
    assert gate_failures(noisy, 0.9999, 0.99, 0.005, 0.9) == []
    tight = _report(f1=(0.80, 0.74), drop=(0.04, 0.08))
    assert [f.split(" (")[0] for f in gate_failures(tight, 0.9999, 0.99, 0.005, 0.9)] == ["F1-macro drop 0.0600"]
    assert gate_failures(_report(drop=(0.005, 0.02)), 0.9999, 0.99, 0.005, 0.9) == []  # the bound itself passes


def test_the_fp32_fallback_is_held_to_fp32_gates_and_reports_fp32_numbers():
    fp32 = _report(precision="fp32", fp32=0.99995, mean=0.98)  # no int8 gate for a graph never quantised
    assert gate_failures(fp32, 0.9999, 0.99, 0.005, 0.9) == []
    assert "int8" not in " ".join(fp32.metrics()) and "int8" not in fp32.summary()
    assert set(fp32.metrics()) >= {
        "parity_fp32_mean_cosine",
        "parity_fp32_min_cosine",
        "decision_agreement",
        "f1_macro_drop_low",
        "f1_macro_drop_high",
    }
    assert "int8 mean cosine 0.99500" in _report().summary()
    assert fp32.summary().startswith("fp32 graph, min cosine to torch 0.999950; F1-macro 0.8000 -> 0.7970")


def test_decision_agreement_and_own_thresholds_by_hand():
    torch_pred = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)
    onnx_pred = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], bool)
    assert decision_agreement(torch_pred, onnx_pred) == 0.75
    assert decision_agreement(np.zeros((0, 2)), np.zeros((0, 2))) == 1.0
    # label 0: positives score 0.62 and 0.58, negatives 0.40 and 0.57: thresholds 0.45, 0.50 and 0.55 all give
    # F1 0.8 (both positives, one false positive), 0.60 gives 0.67; the tie goes to the one nearest 0.5.
    # Label 1: the positive scores 0.30, negatives <= 0.20: 0.25 and 0.30 are perfect; 0.30 is nearer 0.5.
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 0]], float)
    probs = np.array([[0.62, 0.10], [0.58, 0.30], [0.40, 0.20], [0.57, 0.05]])
    assert own_thresholds(y, probs, np.array([0.9, 0.9]), single_label=False).tolist() == [0.5, 0.3]
    assert own_thresholds(y, probs, np.array([0.9, 0.9]), single_label=True).tolist() == [0.9, 0.9]
    assert own_thresholds(y[:0], probs[:0], np.array([0.9, 0.9]), single_label=False).tolist() == [0.9, 0.9]


def test_same_decisions_give_a_zero_drop_interval():
    y = np.array([[1, 0], [0, 1], [1, 1]], float)
    pred = np.array([[1, 0], [0, 0], [1, 1]], bool)
    drop = paired_bootstrap(y, pred, pred.copy(), 200)
    assert (drop["gain"], drop["low"], drop["high"]) == (0.0, 0.0, 0.0)


def test_row_cosines_by_hand():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [3.0, 4.0]])
    assert row_cosines(a, b) == pytest.approx([0.0, 1.0])


def test_the_matmuls_named_stay_fp32_under_int8(tiny_encoder, tmp_path):
    """The controller's second try: the feed-forward output projections keep fp32 weights, every other weight
    MatMul is int8; a pattern that names no MatMul is an error, not a silent plain int8."""
    encoder, tokenizer = load_encoder(tiny_encoder)
    classifier = Classifier(DualEncoder(encoder, tokenizer).eval(), FRUIT, np.full(2, 0.5))
    cfg = OnnxConfig(fp32_matmuls=FFN_OUTPUT_MATMULS, max_f1_drop=1.0, min_agreement=0.0)
    result = export_classifier(classifier, tmp_path / "out", cfg, TEXTS, [["bank"]] * 3, TEXTS)
    nodes = onnx.load(str(result.directory / "model.onnx")).graph.node
    layers = encoder.config.num_hidden_layers
    kept = [n.name for n in nodes if n.op_type == "MatMul" and re.search(FFN_OUTPUT_MATMULS, n.name)]
    assert sorted(kept) == [f"/encoder/encoder/layer.{i}/output/dense/MatMul" for i in range(layers)]
    # per layer: query, key, value, attention output, FFN input quantised; QKᵀ and attention·V have no weights
    assert sum(n.op_type in {"DynamicQuantizeMatMul", "MatMulInteger"} for n in nodes) == 5 * layers
    assert result.steps["quantization"].startswith(f"dynamic, {layers} of ")
    assert result.steps["quantization"].endswith(f"MatMuls kept fp32 ('{FFN_OUTPUT_MATMULS}')")
    assert result.parity.precision == "int8"

    with pytest.raises(ExportError, match="fp32_matmuls 'no-such-node' names none of the graph's .* MatMuls"):
        export_classifier(
            classifier, tmp_path / "none", replace(cfg, fp32_matmuls="no-such-node"), TEXTS, [["bank"]] * 3, TEXTS
        )


def test_the_controller_tries_int8_then_int8_with_fp32_ffn_outputs_then_fp32():
    ladder = export_ladder("dynamic")
    assert [kind for kind, _ in ladder] == ["int8", "int8 with fp32 FFN outputs", "fp32"]
    assert [(c.quantization, c.fp32_matmuls) for _, c in ladder] == [
        ("dynamic", ""),
        ("dynamic", FFN_OUTPUT_MATMULS),
        ("none", ""),
    ]
    assert [kind for kind, _ in export_ladder("none")] == ["fp32"]


def test_an_fp32_matmuls_pattern_is_checked_before_exporting(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model-uri", "models:/tiny-clf/1", "--fp32-matmuls", "layer.(0"])
    assert exit_.value.code == 2
    assert "--fp32-matmuls: not a regular expression: 'layer.(0'" in capsys.readouterr().err
    assert build_parser().parse_args(["--model-uri", "models:/m/1", "--fp32-matmuls", "ffn-output"]).fp32_matmuls == (
        FFN_OUTPUT_MATMULS
    )


def test_re_tuned_thresholds_include_the_request_threshold(tiny_encoder, tmp_path):
    """`thresholds=validation`: the export tunes the request label sets' threshold with its own scores too, as
    `sft` tunes the torch model's; an fp32 graph scores as torch does, so it lands where torch's tuning does."""
    model = lora_with_update(TrainConfig(encoder=tiny_encoder, lora_r=4), 0.2)
    Classifier(model, FRUIT, np.full(2, 0.5), new_label_adapter_scale=0.0, request_threshold=0.99).save(
        tmp_path / "torch"
    )
    classifier = Classifier.load(tmp_path / "torch", "cpu")
    labels = [["bank"], ["apple"], ["bank", "apple"]]
    cfg = OnnxConfig(quantization="none", max_f1_drop=1.0, min_agreement=0.0, thresholds="validation")
    result = export_classifier(classifier, tmp_path / "out", cfg, TEXTS, labels, TEXTS, TEXTS, labels)
    onnx_clf = OnnxClassifier.load(result.directory, threads=1)
    expected = classifier.tune_request_threshold(pd.DataFrame({"text": TEXTS, "labels": labels}))
    assert onnx_clf.request_threshold == expected != 0.99
    assert result.steps["thresholds"] == "tuned on 3 validation documents with the export's scores"
