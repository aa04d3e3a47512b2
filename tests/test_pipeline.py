"""The whole lifecycle through `mlflow run . -e pipeline` (tiny encoder): every stage, one command."""

import mlflow
import pandas as pd
import pytest

from registry import conventions as RC
from registry.contract import OUTPUT_COLUMNS
from serving.feedback import FeedbackStore
from tests.test_sft_stage import mlflow_run


@pytest.mark.timeout(1500)  # every stage as a real `mlflow run`, two feedback rounds: minutes on 2 busy cores
def test_pipeline_runs_every_stage_and_leaves_a_consistent_registry(mlflow_env, tiny_encoder, tmp_path, monkeypatch):
    feedback_db = f"sqlite:///{tmp_path / 'feedback.db'}"
    monkeypatch.setenv("LOCAL_DEPLOY_DIR", str(tmp_path / "deployments"))
    proc = mlflow_run(
        "pipeline",
        {
            "encoder": tiny_encoder,
            "model_name": "tiny-pipeline",
            "pbt_trials": 2,
            "max_epochs": 1,
            "grpo_epochs": 1,
            "feedback_db": feedback_db,
        },
        mlflow_env,
        timeout=1400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in (
        "1. validate + SFT with PBT on the initial pool",
        "2. lifecycle",
        "3. evaluate the champion on the test",
        "4a. round 1: champion serves",
        "4b. round 1: GRPO",
        "4c. round 1: evaluate the GRPO challenger",
        "4d. round 1: lifecycle compares",
        "5a. round 2",
        "5b. round 2: GRPO",
        "5d. round 2: lifecycle",
    ):
        assert f"✓ {step}" in proc.stdout, step
    assert "Registry after the pipeline" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout

    client = mlflow.MlflowClient()
    aliases = client.get_registered_model("tiny-pipeline").aliases
    assert {RC.CHAMPION, RC.REFERENCE, RC.POLICY} <= set(aliases)
    champion = client.get_model_version("tiny-pipeline", str(aliases[RC.CHAMPION]))
    assert champion.current_stage == "Production"
    versions = client.search_model_versions("name='tiny-pipeline'")
    grpo = [v for v in versions if v.tags.get(RC.TAG_KIND) == "grpo"]
    assert len(grpo) == 2  # one challenger per round, each decided by the controller with its reason
    for child in grpo:
        assert child.tags[RC.TAG_PARENT_VERSION] == str(aliases[RC.REFERENCE])
        assert child.tags.get(RC.TAG_DECISION) in ("promoted", "rejected") and child.tags.get(RC.TAG_REASON)
        assert f"challenger v{child.version} {child.tags[RC.TAG_DECISION]}" in proc.stdout
    # the clones are made once per champion lineage and re-used by the second round
    assert len([v for v in versions if v.tags.get(RC.TAG_ROLE)]) == 2
    feedback = FeedbackStore(feedback_db).query(model_name="tiny-pipeline")
    pools = {
        name: pd.read_csv(mlflow.artifacts.download_artifacts(f"{pipeline_run(client)}/pools/{name}.csv"))
        for name in ("initial", "production", "test")
    }
    assert len(feedback) == len(pools["production"])  # every production document rated once, none lost
    texts = set(feedback["text"])
    joined = lambda frame: set(frame["title"].str.strip() + ". " + frame["body"].str.strip())  # noqa: E731
    assert texts == joined(pools["production"]) and texts.isdisjoint(joined(pools["test"]) | joined(pools["initial"]))

    # The controller exported each new champion to ONNX, or recorded on it why the parity gates refused that.
    exports = (
        client.search_model_versions("name='tiny-pipeline-onnx'")
        if any(m.name == "tiny-pipeline-onnx" for m in client.search_registered_models())
        else []
    )
    assert exports or champion.tags.get(RC.TAG_ONNX_STATUS, "").startswith("refused")
    for export in exports:
        assert (
            client.get_model_version("tiny-pipeline", export.tags[RC.TAG_PARENT_VERSION]).tags.get(RC.TAG_DECISION)
            == "promoted"
        )

    model = mlflow.pyfunc.load_model(f"models:/tiny-pipeline@{RC.CHAMPION}")
    out = model.predict(pd.DataFrame({"text": ["Is VAT due on our 2023 consulting invoices?"]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)


def pipeline_run(client: mlflow.MlflowClient) -> str:
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.mlflow.runName = 'pipeline'", output_format="list"
    )
    return f"runs:/{runs[0].info.run_id}"
