"""Every entry point, given bad values: one line `error: ...` on stderr and exit 2, before any model loads or any
training starts. Run in-process through each CLI's main (argparse + cli_entry, as `python -m` runs them)."""

import importlib
import json
from pathlib import Path

import pytest

from registry.contract import LIMITS
from tests.conftest import use_mlflow_store

MISSING = "/nonexistent-dir-for-test/out"
DEMO = str(Path(__file__).resolve().parent.parent / "data" / "demo")
HELD_OUT = ["--val-data", f"{DEMO}/tax_documents.csv", "--test-data", f"{DEMO}/tax_documents.csv"]


def naming_the_flag(cases: str) -> list[tuple[list[str], str]]:
    """'--flag value; ...': bad values whose one-line error names the flag."""
    return [(case.split(), case.split()[0]) for case in cases.split(";") if case.strip()]


SFT = naming_the_flag(
    "--max-epochs 0; --max-epochs -1; --max-epochs inf; --learning-rate nan; --learning-rate -1; --batch-size 0; "
    "--val-fraction 0; --val-fraction 1.5; --lora-r 0; --max-length 0; --patience -1; --grad-accum-steps 0; "
    "--pos-weight -2; --focal-gamma -1; --seed -3; --min-examples x; --contrastive-weight nan; --cpus-per-trial 0; "
    "--pbt-trials 0; --new-label-adapter-scale 1.5; --new-label-adapter-scale -0.1; --new-label-adapter-scale nan; "
    "--lora-alpha 0; --lora-dropout 1.5; --weight-decay -1; --warmup-ratio 2; --margin -0.1; --init-scale 0; "
    "--init-bias nan; --softmax-weight -1; --description-dropout 1.5; --anchor-weight nan; --cloze-weight -1; "
    "--lora-b-lr-ratio 0; --lora-target-modules query,,value; --lora-target-modules ,"
) + [
    (["--model-name", "a/b"], "'/'"),
    (["--model-name", "tab\tname"], "'\\t'"),
    (["--model-name", "x' AND name='y"], '"\'"'),
    (["--model-name", ""], "empty"),
    (["--num-workers", "0"], "--num-workers"),
    (["--use-gpu", "maybe"], "--use-gpu"),
    (["--num-workers", "3"], "3 workers × 1 CPUs need 3 CPUs, the local Ray has 2"),
    (["--num-workers", "2", "--tune", "pbt", "--cpus-per-worker", "1.5"], "need 3 CPUs, the local Ray has 2"),
    (["--num-workers", "64", "--cpus-per-worker", "0.01", "--use-gpu", "true"], "64 GPU workers need 64 GPUs"),
    (["--num-workers", "2", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--num-workers", "2", "--data", f"{MISSING}/docs.csv"], "data file not found"),
    (["--lora-r", "385"], "lora_r 385 exceeds the encoder's hidden size 384"),
    (["--lora-target-modules", "query,qkv"], "lora_target_modules ['qkv'] name no layer of the encoder"),
    (["--max-length", "1024"], "max_length 1024 exceeds the encoder's 512 position embeddings"),
    (["--encoder", f"{MISSING}/encoder"], "cannot load encoder"),
    (["--stream", "true", "--data", f"{MISSING}/docs.csv"], "--stream needs --val-data and --test-data files"),
    (["--stream", "true", *HELD_OUT, "--data", f"{MISSING}/docs.csv"], "data path not found"),
    (["--stream", "true", *HELD_OUT, "--data", f"{MISSING}/*.parquet"], "data path matches no files"),
    (["--stream", "true", *HELD_OUT, "--data", f"{DEMO}/labels.yaml"], "reads Parquet or CSV files"),
    (["--stream", "true", "--num-workers", "2"], "2 workers × 1 CPUs + 1 reading the stream need 3 CPUs"),
    (["--stream", "true", "--reader-cpus", "0.5"], "reader_cpus must be >= 1"),
    (["--stream", "true", "--tune", "pbt"], "PBT over a stream is not supported"),
    (["--stream", "yes please"], "--stream"),
    (["--gate-sample", "0"], "--gate-sample"),
]
BAD_LABEL_SETS = [
    ({"a": "Apples.", "b": " "}, "labels without a text description: ['b']"),
    ({"": "No name."}, "labels without a text description"),
    ({"Fruit": "Apples.", "fruit ": "Pears."}, "names one label twice: 'Fruit' and 'fruit'"),
    ({"a": "x" * (LIMITS.max_description_chars + 1)}, f"longer than {LIMITS.max_description_chars} characters"),
    ({f"l{i}": "d" for i in range(LIMITS.max_labels + 1)}, f"at most {LIMITS.max_labels} are allowed"),
]
EVALUATE = (
    naming_the_flag("--bootstrap 0; --bootstrap -1; --confidence 1.5; --confidence nan; --seed -1")
    + [
        (["--output", f"{MISSING}/metrics.json"], "does not exist"),
        (["--label-descriptions", '{"a": "Apples.", "a": "Again."}'], "repeats the label(s) ['a']"),
    ]
    + [(["--label-descriptions", json.dumps(value)], why) for value, why in BAD_LABEL_SETS]
)
EXPORT = naming_the_flag("--threads -1; --max-f1-drop nan; --min-fp32-cosine nan") + [
    (["--model-uri", "nope"], "models:/"),
    (["--model-uri", "models:/a'b/1"], '"\'"'),
    (["--model-name", "a:b"], "':'"),
]
GRPO = naming_the_flag(
    "--learning-rate nan; --num-generations 0; --beta -1; --epsilon-high -1; --num-train-epochs 0; --loss-type nope"
) + [(["--model-name", "a/b"], "'/'")]
PIPELINE = naming_the_flag("--pbt-trials 0; --max-epochs 0; --grpo-epochs -1") + [
    (["--model-name", "a:b"], "':'"),
    (["--feedback-db", "bogus://x"], "database URL"),
]
BATCH = [(["--model-uri", "models:/nope/latest"], "models:/"), (["--model-uri", "models:/nope/1"], "cannot resolve")]
SERVE = naming_the_flag(
    "--port -1; --port 99999; --port http; --max-body-bytes 0; --max-rows 0; --max-labels -5; --request-timeout nan; "
    "--log-text all; --log-retention-days 0; --http h2"
) + [
    (["--feedback-db", "bogus://x"], "database URL"),
    (["--api-key-env", "BLANK_KEY"], "empty or not set"),
    (["--inference-log", "bogus://x"], "database URL"),
]
MONITOR = naming_the_flag("--window-hours 0; --feedback-uri bogus://x") + [
    (["--end", "yesterday"], "ISO 8601"),
    (["--model-name", "a/b"], "'/'"),
    (["--inference-log", "bogus://x"], "database URL"),
    (["--model-name", "never-registered"], "no champion"),
]
LISTEN = naming_the_flag("--port 0; --poll-interval 0; --tolerance nan") + [
    (["--model-name", "a/b"], "'/'"),
    (["--secret-env", "BLANK_KEY"], "empty or not set"),
]
FEEDBACK_ADD = [
    "add",
    "--prediction-id",
    "p",
    "--model-name",
    "m",
    "--model-version",
    "1",
    "--text",
    "t",
    "--score",
    "3",
]

CASES = (
    [("mlprojects.sft", argv, why) for argv, why in SFT]
    + [("mlprojects.evaluate", ["--model-uri", "models:/m/1", "--data", "d.csv", *argv], why) for argv, why in EVALUATE]
    + [("mlprojects.export_onnx", ["--model-uri", "models:/m/1", *argv], why) for argv, why in EXPORT]
    + [("mlprojects.grpo", argv, why) for argv, why in GRPO]
    + [("mlprojects.pipeline", argv, why) for argv, why in PIPELINE]
    + [("serving.batch_score", ["--input", "in.csv", "--output", "out", *argv], why) for argv, why in BATCH]
    + [("serving.__main__", ["serve", "--model", "models:/m@champion", *argv], why) for argv, why in SERVE]
    + [("mlprojects.monitor", argv, why) for argv, why in MONITOR]
    + [("lifecycle.__main__", ["listen", *argv], why) for argv, why in LISTEN]
    + [
        ("serving.__main__", ["deploy", "--model", "not-a-uri"], "models:/"),
        ("serving.__main__", ["deploy", "--target", "nowhere", "--model", "models:/m/1"], "--target"),
        ("serving.feedback.__main__", ["--db", "bogus://x", *FEEDBACK_ADD], "database URL"),
        ("serving.feedback.__main__", ["export", f"{MISSING}/feedback.csv"], "does not exist"),
        ("lifecycle.__main__", ["reconcile", "--model-name", "a/b"], "'/'"),
        ("lifecycle.__main__", ["reconcile", "--watch", "--interval", "0"], "--interval"),
        ("lifecycle.__main__", ["history", "--model-name", "never-registered"], "no registered model"),
        ("lifecycle.__main__", ["rollback", "--model-name", "never-registered"], "no registered model"),
        ("lifecycle.__main__", ["configure", "--model-name", "never-registered"], "no registered model"),
        ("mlprojects.sft", ["--log-level", "LOUD"], "--log-level"),
        ("lifecycle.__main__", ["--log-level", "chatty", "history"], "--log-level"),
    ]
)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """One empty SQLite registry for the whole table (creating a store costs seconds)."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_registered_models()
    return root


@pytest.fixture()
def nothing_heavy(monkeypatch, empty_store):
    """Any model load, training, evaluation, Spark session or server start fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the bad value was refused")

    import mlflow

    use_mlflow_store(empty_store, monkeypatch)
    monkeypatch.setattr(mlflow.pyfunc, "load_model", forbidden)
    monkeypatch.setenv("BLANK_KEY", "\n")
    for module, attribute in [
        ("mlprojects.sft", "train_classifier"),
        ("mlprojects.sft", "train_distributed"),
        ("mlprojects.grpo", "load_classifier"),
        ("mlprojects.export_onnx", "source_classifier"),
        ("mlprojects.evaluate", "evaluate_model"),
        ("serving.batch_score", "spark_session"),
        ("serving.endpoint", "load_model"),
        ("mlprojects.pipeline", "Steps"),
        ("mlprojects.monitor", "read_window"),
        ("lifecycle.listener", "serve"),
    ]:
        monkeypatch.setattr(importlib.import_module(module), attribute, forbidden)


@pytest.mark.parametrize("module,argv,why", CASES, ids=[f"{m.split('.')[-1]} {' '.join(a)[-60:]}" for m, a, _ in CASES])
def test_a_bad_value_is_one_line_and_exit_2(nothing_heavy, capsys, module, argv, why):
    main = importlib.import_module(module).main
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert why in lines[0], lines[0]


@pytest.mark.parametrize("value,why", BAD_LABEL_SETS, ids=[why[:40] for _, why in BAD_LABEL_SETS])
@pytest.mark.parametrize(
    "module,argv",
    [
        ("mlprojects.sft", ["--data", "data/demo/tax_documents.csv", "--labels"]),
        ("mlprojects.evaluate", ["--model-uri", "models:/m/1", "--data", "d.csv", "--labels"]),
        ("mlprojects.evaluate", ["--model-uri", "models:/m/1", "--data", "d.csv", "--label-descriptions"]),
    ],
    ids=["sft --labels", "evaluate --labels", "evaluate --label-descriptions"],
)
def test_a_bad_label_file_is_one_line_and_exit_2(nothing_heavy, capsys, tmp_path, module, argv, value, why):
    path = tmp_path / "labels.yaml"
    path.write_text(json.dumps(value))
    test_a_bad_value_is_one_line_and_exit_2(nothing_heavy, capsys, module, [*argv, str(path)], why)
