"""The torch classifier as a registered MLflow model: logged with the code it runs, loaded back to train further
(GRPO) or to export (ONNX)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import mlprojects
import registry
from mlprojects.model.classifier import Classifier
from registry.log_model import log_pyfunc, torch_requirements
from registry.lookup import classifier_dir

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
# What a logged model imports at inference: our two packages, copied into each version (`code_paths`).
MODEL_CODE = [str(Path(mlprojects.__file__).parent), str(Path(registry.__file__).parent)]


def log_classifier(
    classifier: Classifier, example_texts: Sequence[str], name: str = "model", saved: str | Path | None = None
):
    """Log `classifier` as the torch pyfunc into the active run, its answer to `example_texts` as the example;
    returns MLflow's ModelInfo. `saved`: a directory it was already saved to (else it is saved here)."""
    requirements = torch_requirements()  # a requirement no index can serve stops here, before anything is saved
    with tempfile.TemporaryDirectory() as tmp:
        directory = saved or classifier.save(Path(tmp) / "classifier")
        return log_pyfunc(
            PYFUNC_FILE,
            {"classifier": str(directory)},
            requirements,
            classifier,
            example_texts,
            MODEL_CODE,
            name,
            new_label_adapter_scale=classifier.served_new_label_adapter_scale,
        )


def load_classifier(model_uri: str, device: str | None = None) -> Classifier:
    """The Classifier behind a registered torch model (it reads every file while loading)."""
    with classifier_dir(model_uri) as directory:
        return Classifier.load(directory, device)
