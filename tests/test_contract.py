"""The pyfunc contract's one predict path, on a stand-in model (no encoder): what both pyfuncs answer."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from registry.contract import LIMITS, OUTPUT_COLUMNS, ContractError, label_descriptions, predict, to_params
from registry.documents import join_text


class StandIn:
    """Fixed probabilities per label; counts its calls."""

    label_descriptions = {"vat": "Value-added tax.", "payroll": "Payroll taxes."}
    labels = list(label_descriptions)
    thresholds = np.array([0.5, 0.3])
    request_threshold = 0.5
    single_label = False
    text_columns = ["title", "body"]

    def __init__(self):
        self.calls = 0

    def predict_proba(self, texts, label_descriptions=None):
        self.calls += 1
        width = len(label_descriptions) if label_descriptions else len(self.labels)
        return np.tile(np.linspace(0.9, 0.1, width), (len(texts), 1))


def test_documents_get_thresholded_labels_top_label_and_scores():
    out = predict(StandIn(), pd.DataFrame({"title": ["VAT", "Pay"], "body": ["invoice", None]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 2
    assert out.loc[0, "labels"] == ["vat"] and out.loc[0, "top_label"] == "vat"
    assert out.loc[0, "scores"] == {"vat": 0.9, "payroll": 0.1}
    assert list(out["label_set"]) == ["model", "model"]


@pytest.mark.parametrize("params", [None, to_params({"a": "Apples.", "b": "Banks."}), {"threshold": 0.2}])
def test_no_documents_is_an_empty_answer_with_the_contracts_columns_and_no_scoring(params):
    model = StandIn()
    out = predict(model, pd.DataFrame({"text": pd.Series([], dtype=str)}), params)
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 0
    assert model.calls == 0


def test_a_new_label_set_is_decided_at_the_models_request_threshold_unless_the_request_gives_one():
    model = StandIn()
    model.request_threshold = 0.25  # linspace(0.9, 0.1, 3): 0.9, 0.5, 0.1
    frame, new = pd.DataFrame({"text": ["x"]}), {"a": "A.", "b": "B.", "c": "C."}
    assert predict(model, frame, to_params(new)).loc[0, "labels"] == ["a", "b"]
    assert predict(model, frame, to_params(new, 0.6)).loc[0, "labels"] == ["a"]
    assert predict(model, frame).loc[0, "labels"] == ["vat"]  # the model's own labels keep their thresholds
    del model.request_threshold  # a model from code before the tuned threshold: the default, 0.5
    assert predict(model, frame, to_params(new)).loc[0, "labels"] == ["a", "b"]
    model.request_threshold = 0.55
    assert predict(model, frame, to_params(new)).loc[0, "labels"] == ["a"]


def test_a_new_label_set_and_one_threshold_replace_the_models_own():
    out = predict(StandIn(), pd.DataFrame({"text": ["x"]}), to_params({"a": "A.", "b": "B.", "c": "C."}, 0.4))
    assert set(out.loc[0, "scores"]) == {"a", "b", "c"} and out.loc[0, "labels"] == ["a", "b"]
    assert out.loc[0, "label_set"] == "request"
    assert predict(StandIn(), pd.DataFrame({"text": ["x"]}), {"threshold": 0.2}).loc[0, "label_set"] == "model"


@pytest.mark.parametrize(
    "value,message",
    [
        ("{oops", "not valid JSON"),
        ("[" * 5000, "nested too deeply"),
        ("[1, 2]", "must be a non-empty mapping"),
        ({}, "must be a non-empty mapping"),
        ({"a": 1}, "labels without a text description: ['a']"),
        ({" ": "Blank label."}, "labels without a text description"),
        ({"a": "  \n "}, "labels without a text description: ['a']"),
        ({"VAT": "Value-added tax.", " vat": "Sales tax."}, "names one label twice: 'VAT' and 'vat'"),
        ('{"a": "Apples.", "a": "Again."}', "repeats the label(s) ['a']"),
        ({"a": "x" * (LIMITS.max_description_chars + 1)}, f"longer than {LIMITS.max_description_chars} characters"),
        ({"a" * (LIMITS.max_label_chars + 1): "Long name."}, f"longer than {LIMITS.max_label_chars} characters"),
        ({f"l{i}": "d" for i in range(LIMITS.max_labels + 1)}, f"at most {LIMITS.max_labels} are allowed"),
    ],
)
def test_a_label_set_is_checked_in_one_place(value, message):
    with pytest.raises(ContractError, match=re.escape(message)):
        label_descriptions(value)
    assert label_descriptions('{"a": "Apples."}') == {"a": "Apples."}


def test_labels_come_back_stripped_and_descriptions_on_one_line():
    assert label_descriptions({" a ": " Apples\n and  pears. "}) == {"a": "Apples and pears."}


def test_the_models_own_labels_may_be_reused_only_with_their_descriptions():
    model, frame = StandIn(), pd.DataFrame({"text": ["x"]})
    same = predict(model, frame, to_params({"VAT": "Value-added  tax.", "fruit": "Apples."}))
    assert set(same.loc[0, "scores"]) == {"VAT", "fruit"}
    with pytest.raises(ContractError, match=r"own label\(s\) \['Vat'\] other descriptions"):
        predict(model, frame, to_params({"Vat": "Vehicle tax.", "fruit": "Apples."}))
    assert model.calls == 1


def test_training_and_inference_join_text_columns_alike():
    frame = pd.DataFrame({"title": ["VAT ", None, ""], "body": ["invoice", "memo", " "]}, index=[5, 6, 7])
    joined = join_text(frame, ["title", "body"])
    assert list(joined) == ["VAT. invoice", "memo", ""] and list(joined.index) == [5, 6, 7]
    assert list(predict(StandIn(), frame)["scores"].map(len)) == [2, 2, 2]
