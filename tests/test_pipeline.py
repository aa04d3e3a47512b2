"""The whole lifecycle through `mlflow run . -e pipeline` (tiny encoder): every stage, one command."""
import mlflow
import pandas as pd

from registry import conventions as RC
from serving.feedback import FeedbackStore
from tests.test_sft_stage import mlflow_run


def test_pipeline_runs_every_stage_and_leaves_a_consistent_registry(mlflow_env, tiny_encoder, tmp_path, monkeypatch):
    feedback_db = f"sqlite:///{tmp_path / 'feedback.db'}"
    monkeypatch.setenv("LOCAL_DEPLOY_DIR", str(tmp_path / "deployments"))
    proc = mlflow_run("pipeline", {"encoder": tiny_encoder, "model_name": "tiny-pipeline", "pbt_trials": 2,
                                   "max_epochs": 1, "grpo_epochs": 1, "feedback_db": feedback_db}, mlflow_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("1. validate + SFT with PBT", "2. lifecycle", "3. evaluate the champion", "5. smoke scoring",
                 "6. GRPO", "7. evaluate the GRPO challenger", "8. lifecycle: compare"):
        assert f"✓ {step}" in proc.stdout, step
    assert "Registry after the pipeline" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout

    client = mlflow.MlflowClient()
    aliases = client.get_registered_model("tiny-pipeline").aliases
    assert {RC.CHAMPION, RC.REFERENCE, RC.POLICY} <= set(aliases)
    champion = client.get_model_version("tiny-pipeline", str(aliases[RC.CHAMPION]))
    assert champion.current_stage == "Production"
    grpo = [v for v in client.search_model_versions("name='tiny-pipeline'") if v.tags.get(RC.TAG_KIND) == "grpo"]
    assert len(grpo) == 1 and grpo[0].tags[RC.TAG_PARENT_VERSION] == str(aliases[RC.REFERENCE])
    assert grpo[0].tags.get(RC.TAG_DECISION) in ("promoted", "rejected")  # the controller decided
    assert len(FeedbackStore(feedback_db).query(model_name="tiny-pipeline")) > 0

    # The ONNX step either registered an export of the champion or was refused by a parity gate, saying so.
    exports = client.search_model_versions("name='tiny-pipeline-onnx'") if any(
        m.name == "tiny-pipeline-onnx" for m in client.search_registered_models()) else []
    assert exports or "failed its parity gates" in proc.stdout + proc.stderr
    for export in exports:
        assert export.tags[RC.TAG_PARENT_VERSION] == str(champion.version)

    model = mlflow.pyfunc.load_model(f"models:/tiny-pipeline@{RC.CHAMPION}")
    out = model.predict(pd.DataFrame({"text": ["Is VAT due on our 2023 consulting invoices?"]}))
    assert list(out.columns) == ["labels", "top_label", "scores"]
