"""Shared fixtures: a tiny randomly initialised BERT encoder (seconds, not minutes) and a temp MLflow store."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlprojects.config import TrainConfig, resolve_encoder
from mlprojects.model.encoder import DualEncoder, build_model

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the endpoints tests start keep their inference log out of the repository, in a folder removed when pytest exits
if "INFERENCE_LOG_URL" not in os.environ:
    _log_dir = tempfile.mkdtemp(prefix="inference-log-")
    atexit.register(shutil.rmtree, _log_dir, ignore_errors=True)
    os.environ["INFERENCE_LOG_URL"] = f"sqlite:///{_log_dir}/inference_log.db"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with the MiniLM tokenizer, saved as a local path (any path must work)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def lora_with_update(cfg: TrainConfig, std: float = 0.05) -> DualEncoder:
    """A LoRA model whose adapters hold a non-zero update (peft starts B at zero), as after some training."""
    torch.manual_seed(1)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    return model.eval()


def cli_args(**options) -> list[str]:
    """A command line's options from keyword arguments: max_epochs=1 -> ['--max-epochs', '1']."""
    return [arg for name, value in options.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def feedback_record(prediction_id: str, **changes) -> dict:
    """A good feedback record on model `clf` version 1 (labels vat, payroll, audit), with `changes`."""
    return {
        "prediction_id": prediction_id,
        "model_name": "clf",
        "model_version": "1",
        "text": f"document {prediction_id}",
        "predicted_labels": ["vat"],
        "score": 4,
        "corrected_labels": None,
        "source": "test",
        **changes,
    }


def use_mlflow_store(directory: Path, monkeypatch: pytest.MonkeyPatch, artifacts: Path | None = None) -> str:
    """Point MLflow (this process and subprocesses) at a SQLite store + artifact root in `directory`. MLflow exports
    the active run and experiment to the environment, which would otherwise leak from the previous store."""
    import mlflow

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", (artifacts or directory / "artifacts").as_uri())
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture()
def mlflow_env(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking + registry store and local artifact root for one test."""
    import mlflow

    yield use_mlflow_store(tmp_path, monkeypatch)
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def demo_frame() -> pd.DataFrame:
    return pd.read_csv(REPO / "data" / "demo" / "tax_documents.csv")


@pytest.fixture()
def small_dataset(tmp_path, demo_frame) -> dict:
    """120 demo documents + the demo label file, written as a CSV: enough for the gate and a 2-epoch SFT."""
    path = tmp_path / "small.csv"
    demo_frame.head(120).to_csv(path, index=False)
    return {
        "data": str(path),
        "labels": str(REPO / "data" / "demo" / "labels.yaml"),
        "text_columns": "title,body",
        "label_column": "labels",
    }
