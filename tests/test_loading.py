"""A logged model runs the code it was logged with, even where the process has imported newer packages of the same
names (a version logged before a module moved must still load in the controller, the endpoint and Spark)."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pandas as pd

import registry.contract
from mlprojects.config import TrainConfig
from mlprojects.model.classifier import Classifier
from mlprojects.model.encoder import build_model
from mlprojects.model.registered import load_classifier, log_classifier
from registry.loading import load_pyfunc

MODEL_FILE = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Old(PythonModel):
    def load_context(self, context):
        from registry.contract import LAYOUT  # only the model's own copy has it

        self.layout = LAYOUT

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"layout": [self.layout] * len(model_input)})


mlflow.models.set_model(Old())
"""


def test_a_model_loads_its_own_copy_of_a_package_this_process_has_imported(mlflow_env, tmp_path, monkeypatch):
    old = tmp_path / "old" / "registry"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    (old / "contract.py").write_text('LAYOUT = "before the move"\n')
    (tmp_path / "model.py").write_text(MODEL_FILE)
    mlflow.set_experiment("loading")  # not an experiment id left active by an earlier test's store
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="m", python_model=str(tmp_path / "model.py"), code_paths=[str(old)])

    model = load_pyfunc(info.model_uri)

    assert model.predict(pd.DataFrame({"text": ["a"]}))["layout"].tolist() == ["before the move"]
    assert sys.modules["registry.contract"] is registry.contract  # the process keeps its own
    assert not any("before" in p or str(tmp_path) in p for p in sys.path)

    # a run's URI of a logged model is not where MLflow 3 keeps its files: it is downloaded, and removed once loaded
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    model = load_pyfunc(f"runs:/{run.info.run_id}/m")
    assert list(scratch.iterdir()) == []
    assert model.predict(pd.DataFrame({"text": ["a"]}))["layout"].tolist() == ["before the move"]


def test_a_registered_classifier_loads_without_leaving_its_download_behind(
    mlflow_env, tiny_encoder, tmp_path, monkeypatch
):
    classifier = Classifier(
        build_model(TrainConfig(encoder=tiny_encoder)), {"a": "alpha", "b": "beta"}, np.full(2, 0.5)
    )
    mlflow.set_experiment("loading")
    with mlflow.start_run():
        info = log_classifier(classifier, ["an alpha document"])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))

    loaded = load_classifier(info.model_uri, "cpu")

    assert list(scratch.iterdir()) == []
    np.testing.assert_allclose(
        loaded.predict_proba(["an alpha document"]), classifier.predict_proba(["an alpha document"]), atol=1e-5
    )
