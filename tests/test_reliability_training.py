"""Reliability: a diverging run stops with a clear error, and nothing reaches the registry."""

import mlflow

from mlprojects.sft import main


def test_nan_loss_stops_training_and_registers_nothing(mlflow_env, tiny_encoder, small_dataset, capsys):
    rc = main(
        [
            "--data",
            small_dataset["data"],
            "--labels",
            small_dataset["labels"],
            "--encoder",
            tiny_encoder,
            "--min-examples",
            "2",
            "--max-epochs",
            "2",
            "--learning-rate",
            "1e30",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: loss became nan" in err and "lower the learning rate" in err
    assert mlflow.MlflowClient().search_registered_models() == []
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.info.status == "FAILED"
