"""Request label sets are served by a second encoder with only part of the LoRA update (WiSE-FT blend): saved next
to the main one, loaded back, carried unchanged through GRPO, and used by the pyfunc for request label sets only."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from mlprojects.config import GRPOParams, TrainConfig
from mlprojects.evaluation.metrics import tune_shared_threshold
from mlprojects.model.classifier import META_FILE, NEW_LABEL_ENCODER_DIR, Classifier
from mlprojects.model.encoder import DualEncoder, build_model, merged_encoder
from mlprojects.model.registered import log_classifier
from mlprojects.training.grpo_trainer import prepare_policy
from registry.contract import to_params
from registry.tracking import setup
from tests.conftest import lora_with_update

OWN = {"vat": "Value added tax on sales and invoices.", "payroll": "Wages, salaries and payroll tax."}
NEW = {"fruit": "Apples, pears and orchards.", "bank": "Banks, loans and interest rates."}
TEXTS = ["Is VAT due on consulting invoices to Germany?", "Our orchard sells apples.", "Salary slips for May"]


def _classifier(tiny_encoder: str, scale: float) -> Classifier:
    return Classifier(
        lora_with_update(TrainConfig(encoder=tiny_encoder, lora_r=4), 0.2),
        OWN,
        np.full(2, 0.5),
        new_label_adapter_scale=scale,
    )


def _direct(model: DualEncoder, encoder, descriptions: dict[str, str]) -> np.ndarray:
    """Probabilities from `encoder` with `model`'s pooling and logit scale/bias, computed without the Classifier."""
    plain = DualEncoder(encoder, model.tokenizer, model.pooling, model.max_length, float(model.scale), 0.0)
    with torch.no_grad():
        plain.bias.copy_(model.bias)
    return plain.probabilities(plain.embed(TEXTS), plain.embed(list(descriptions.values())))


def _weights(model: DualEncoder) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in model.encoder.state_dict().items()}


def test_a_blend_below_one_is_saved_as_a_second_encoder_and_loaded_back(tiny_encoder, tmp_path):
    classifier = _classifier(tiny_encoder, 0.5)
    classifier.save(tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / META_FILE).read_text())
    assert meta["new_label_adapter_scale"] == 0.5 and meta["new_label_bias"] == meta["bias"]
    loaded = Classifier.load(tmp_path / "clf", "cpu")
    assert loaded.new_label_adapter_scale == 0.5 and loaded.new_label_model is not None
    blend = merged_encoder(classifier.model, 0.5).state_dict()
    for key, value in _weights(loaded.new_label_model).items():
        torch.testing.assert_close(value, blend[key])
    assert (loaded.model.pooling, loaded.model.max_length) == (
        loaded.new_label_model.pooling,
        loaded.new_label_model.max_length,
    )
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), classifier.predict_proba(TEXTS), atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, None])
def test_scale_one_and_versions_before_the_knob_have_one_encoder(tiny_encoder, tmp_path, scale):
    classifier = _classifier(tiny_encoder, scale or 0.5)
    classifier.save(tmp_path / "clf")
    if scale is None:  # a version saved before the knob: no second encoder, no entry in classifier.json
        meta_file = tmp_path / "clf" / META_FILE
        meta = {k: v for k, v in json.loads(meta_file.read_text()).items() if not k.startswith("new_label")}
        meta_file.write_text(json.dumps(meta))
        for path in sorted((tmp_path / "clf" / NEW_LABEL_ENCODER_DIR).iterdir()):
            path.unlink()
        (tmp_path / "clf" / NEW_LABEL_ENCODER_DIR).rmdir()
    assert not (tmp_path / "clf" / NEW_LABEL_ENCODER_DIR).exists()
    loaded = Classifier.load(tmp_path / "clf", "cpu")
    assert loaded.new_label_model is None and loaded.new_label_adapter_scale == 1.0
    full = _direct(loaded.model, merged_encoder(classifier.model), NEW)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS, NEW), full, atol=1e-5)


def test_the_request_threshold_is_tuned_on_the_own_labels_scored_as_a_request_set(tiny_encoder, tmp_path):
    """Tuned with the encoder that will serve request sets (the blend), saved, loaded back; 0.5 when absent."""
    classifier = _classifier(tiny_encoder, 0.5)
    frame = pd.DataFrame({"text": TEXTS, "labels": [["vat"], ["payroll"], ["payroll"]]})
    chosen = classifier.tune_request_threshold(frame)
    blend = merged_encoder(classifier.model, 0.5)
    probs = _direct(classifier.model, blend, OWN)
    assert chosen == tune_shared_threshold(np.array([[1, 0], [0, 1], [0, 1]]), probs) == classifier.request_threshold
    assert classifier.tune_request_threshold(frame.iloc[:0]) == chosen  # no documents: kept
    classifier.save(tmp_path / "clf")
    assert Classifier.load(tmp_path / "clf", "cpu").request_threshold == chosen
    meta_file = tmp_path / "clf" / META_FILE  # a version saved before the threshold was tuned
    meta_file.write_text(
        json.dumps({k: v for k, v in json.loads(meta_file.read_text()).items() if k != "request_threshold"})
    )
    assert Classifier.load(tmp_path / "clf", "cpu").request_threshold == 0.5


def test_a_grpo_policy_keeps_the_references_new_label_encoder(tiny_encoder, tmp_path):
    """The policy's fresh adapters sit on the merged SFT encoder: saving it must carry the reference's second
    encoder as it is, not blend the policy's adapters into a new one."""
    _classifier(tiny_encoder, 0.3).save(tmp_path / "reference")
    reference = Classifier.load(tmp_path / "reference", "cpu")
    policy = Classifier.load(tmp_path / "reference", "cpu")
    reference.request_threshold = 0.31
    policy.share_new_label_encoder(reference)
    assert policy.request_threshold == 0.31  # tuned for the encoder the policy keeps
    prepare_policy(policy, GRPOParams(lora_r=4))
    with torch.no_grad():  # as after GRPO: the main encoder, the logit scale and bias all moved
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        policy.model.bias.sub_(10.0)  # far enough that the own labels' probabilities move off saturation
    policy.save(tmp_path / "policy")
    saved = Classifier.load(tmp_path / "policy", "cpu")
    assert saved.new_label_adapter_scale == 0.3
    before, after = _weights(reference.new_label_model), _weights(saved.new_label_model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert float(saved.new_label_model.bias) == pytest.approx(float(reference.new_label_model.bias))
    np.testing.assert_allclose(saved.predict_proba(TEXTS, NEW), reference.predict_proba(TEXTS, NEW), atol=1e-6)
    assert not np.allclose(saved.predict_proba(TEXTS), reference.predict_proba(TEXTS), atol=1e-3)


def test_the_pyfunc_answers_request_label_sets_with_the_blended_encoder(tiny_encoder, mlflow_env):
    """Scale 0: a request label set is scored by the untrained encoder, the model's own by the full merge."""
    classifier = _classifier(tiny_encoder, 0.0)
    setup("new-labels")  # this store's experiment (MLflow remembers the last store's otherwise)
    with mlflow.start_run():
        info = log_classifier(classifier, TEXTS[:1])
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = pd.DataFrame({"text": TEXTS})
    own, request = model.predict(frame), model.predict(frame, params=to_params(NEW))
    assert set(own["label_set"]) == {"model"} and set(request["label_set"]) == {"request"}
    untrained = build_model(TrainConfig(encoder=tiny_encoder), lora=False).encoder
    expected = {"request": _direct(classifier.model, untrained, NEW)}
    expected["own"] = _direct(classifier.model, merged_encoder(classifier.model), OWN)
    got = {
        name: np.array([[row[l] for l in labels] for row in out["scores"]])
        for name, out, labels in [("request", request, NEW), ("own", own, OWN)]
    }
    np.testing.assert_allclose(got["request"], expected["request"], atol=2e-6)
    np.testing.assert_allclose(got["own"], expected["own"], atol=2e-6)
    assert not np.allclose(expected["request"], _direct(classifier.model, merged_encoder(classifier.model), NEW))
