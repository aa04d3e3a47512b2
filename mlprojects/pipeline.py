"""Stage `pipeline`: the whole lifecycle in one command, each step the real MLflow Project entry point.

The data is cut into three pools: an initial pool the first champion is trained on (SFT with a small PBT), a
production pool it never sees (its documents arrive in rounds, as traffic), and a test split that nothing trains
or selects on (every candidate is judged there). Then the loop runs `rounds` times:
serve the champion → users rate its answers on the round's production documents (simulated, through /feedback)
→ GRPO trains a challenger from all feedback so far → the controller judges it against the champion on the test
split and promotes or rejects it. Re-running is safe: every run adds versions; the controller decides.

    mlflow run . -e pipeline --env-manager local
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from mlprojects import config as C
from mlprojects.data import prepare, split_pools
from registry import conventions as RC
from registry.aliases import aliases
from registry.cli import ArgumentParser, cli_entry, db_url_arg, int_arg, model_name_arg, non_negative, positive
from registry.conventions import DEFAULT_MODEL_NAME
from registry.documents import parse_columns, read_table
from registry.errors import PlatformError
from registry.lookup import versions_of
from registry.projects import start_entry_point
from registry.tracking import setup
from serving.feedback.simulate import rate_through_endpoint
from serving.local_server import local_endpoint

console = Console(width=160)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-name", type=model_name_arg, default=DEFAULT_MODEL_NAME)
    p.add_argument("--data", default=str(C.DEMO_DATA))
    p.add_argument("--labels", default=str(C.DEMO_LABELS))
    p.add_argument("--text-columns", default=C.DEMO_TEXT_COLUMNS)
    p.add_argument("--label-column", default=C.DEMO_LABEL_COLUMN)
    p.add_argument("--encoder", default=C.EMBEDDED_ENCODER)
    p.add_argument("--pbt-trials", type=positive(int_arg), default=C.PIPELINE.pbt_trials)
    p.add_argument("--max-epochs", type=positive(int_arg), default=C.PIPELINE.max_epochs)
    p.add_argument("--grpo-epochs", type=positive(int_arg), default=C.PIPELINE.grpo_epochs)
    p.add_argument("--rounds", type=positive(int_arg), default=C.PIPELINE.rounds, help="feedback → GRPO → judge loops")
    p.add_argument(
        "--seed", type=non_negative(int_arg), default=C.PIPELINE.seed, help="pools, splits, users, PBT, GRPO"
    )
    p.add_argument(
        "--feedback-db", type=db_url_arg, default="", help="SQLAlchemy URL of the feedback store (default: its own)"
    )
    return p


class Steps:
    """Runs entry points as MLflow child runs of the pipeline run and times them."""

    def __init__(self, parent_run_id: str, experiment_id: str):
        self.parent, self.experiment_id, self.timings = parent_run_id, experiment_id, {}

    def run(self, title: str, entry: str, required: bool = True, **params) -> str | None:
        """The entry point's run id; a failed optional step is reported and the pipeline goes on (None)."""
        console.rule(f"[bold]{title}")
        start = time.time()
        submitted = start_entry_point(entry, params, self.experiment_id, self.parent)
        if not submitted.wait():
            if required:
                raise PlatformError(f"step '{title}' ({entry}) failed; see run {submitted.run_id} in the MLflow UI")
            self.timings[title] = round(time.time() - start, 1)
            console.print(f"[yellow]✗[/yellow] {title} refused (see its message above); the pipeline goes on")
            return None
        self.done(title, start)
        return submitted.run_id

    def done(self, title: str, start: float) -> None:
        self.timings[title] = round(time.time() - start, 1)
        console.print(f"[green]✓[/green] {title} ({self.timings[title]} s)")


def rate_champion(model_name: str, frame: pd.DataFrame, feedback_db: str, seed: int) -> dict:
    """Serve the champion on 127.0.0.1 and let simulated users rate its answers on `frame` through HTTP."""
    store = ["--feedback-db", feedback_db] if feedback_db else []
    # no access log: nothing reads the server's stderr unless it fails to start
    with local_endpoint(f"models:/{model_name}@{RC.CHAMPION}", *store, log_level="WARNING", timeout=120) as (url, _):
        return rate_through_endpoint(url, frame, C.PIPELINE.corrected_fraction, seed, "pipeline-simulated-user")


def write_pools(args: argparse.Namespace, directory: Path) -> dict[str, Path]:
    """The data cut into test / production / initial pools (stratified), written as files the stages read."""
    shares = {"test": C.PIPELINE.test_share, "production": C.PIPELINE.production_share, "initial": 0.0}
    pools = split_pools(read_table(args.data), args.text_columns, args.label_column, shares, args.seed)
    paths = {}
    for name, frame in pools.items():
        paths[name] = directory / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
        mlflow.log_artifact(str(paths[name]), "pools")
    mlflow.log_metrics({f"pool_{name}_docs": len(frame) for name, frame in pools.items()})
    return paths


def summary(model_name: str) -> pd.DataFrame:
    """Every version of the model and its ONNX exports: aliases, stage, F1-macro, decision, lineage."""
    client = mlflow.MlflowClient()
    rows = []
    for name in (model_name, model_name + C.ONNX_MODEL_SUFFIX):
        try:
            held = aliases(client, name)
        except mlflow.exceptions.MlflowException:
            continue
        by_version: dict[str, list[str]] = {}
        for alias, version in held.items():
            by_version.setdefault(version, []).append(alias)
        for v in sorted(versions_of(client, name), key=lambda v: int(v.version)):
            tags = v.tags
            f1 = tags.get(RC.TAG_EVAL_F1_MACRO) or tags.get(RC.TAG_CANDIDATE_F1) or ""
            rows.append(
                {
                    "model": name,
                    "version": int(v.version),
                    "kind": tags.get(RC.TAG_KIND, ""),
                    "parent": tags.get(RC.TAG_PARENT_VERSION, ""),
                    "aliases": ",".join(sorted(by_version.get(str(v.version), []))),
                    "stage": v.current_stage,
                    "f1_macro": f1[:6],
                    "decision": tags.get(RC.TAG_DECISION, ""),
                    "reason": tags.get(RC.TAG_REASON, "")[:60],
                }
            )
    return pd.DataFrame(rows)


def print_summary(table: pd.DataFrame, timings: dict, rounds: dict, uri: str) -> None:
    view = Table(title="Registry after the pipeline")
    for column in table.columns:
        view.add_column(column, overflow="fold")
    for row in table.itertuples(index=False):
        view.add_row(*map(str, row))
    console.print(view)
    for number, r in rounds.items():
        console.print(
            f"Round {number}: champion v{r['champion']} served {r['scored']} new documents (exactly right "
            f"{r['served_exactly_right']:.0%}, mean score {r['mean_score']:.2f}); GRPO child v{r['challenger']} "
            f"{r['decision'] or 'undecided'}: {r['reason']}"
        )
    console.print("Step times (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    console.print(f"\nOpen the results: [bold]mlflow ui --backend-store-uri {uri}[/bold] (then http://127.0.0.1:5000)")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    uri = setup(args.model_name)
    name = args.model_name
    with mlflow.start_run(run_name="pipeline") as run, tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        steps = Steps(run.info.run_id, run.info.experiment_id)
        started = time.time()
        pools = write_pools(args, Path(tmp))
        text = {"text_columns": args.text_columns, "label_column": args.label_column}
        sft_run = steps.run(
            "1. validate + SFT with PBT on the initial pool",
            "sft",
            data=str(pools["initial"]),
            test_data=str(pools["test"]),
            val_fraction=C.PIPELINE.val_fraction,
            labels=args.labels,
            model_name=name,
            encoder=args.encoder,
            tune="pbt",
            pbt_trials=args.pbt_trials,
            max_epochs=args.max_epochs,
            storage_path=str(C.PIPELINE_RAY_RESULTS),
            seed=args.seed,
            **text,
        )
        steps.run("2. lifecycle: champion, its ONNX export, clones, deploy", "lifecycle", model_name=name)
        champion = aliases(mlflow.MlflowClient(), name).get(RC.CHAMPION)
        if champion is None:
            raise PlatformError(
                f"no champion after the first reconcile; see `python -m lifecycle history --model-name {name}`"
            )
        eval_data, eval_labels = f"runs:/{sft_run}/data/test.parquet", f"runs:/{sft_run}/labels.json"
        steps.run(
            "3. evaluate the champion on the test split",
            "evaluate",
            model_uri=f"models:/{name}/{champion}",
            data=eval_data,
            labels=eval_labels,
        )
        production = prepare(read_table(str(pools["production"])), parse_columns(args.text_columns), args.label_column)
        served = {}
        for number, rows in enumerate(np.array_split(np.arange(len(production)), args.rounds), start=1):
            served[number] = feedback_round(steps, args, number, production.iloc[rows], eval_data, eval_labels)

        table = summary(name)
        mlflow.log_table(table, "summary.json")
        mlflow.log_dict(
            {"timings_s": steps.timings, "total_s": round(time.time() - started, 1), "rounds": served}, "pipeline.json"
        )
        mlflow.log_metric("total_seconds", time.time() - started)
        print_summary(table, steps.timings, served, uri)
    return 0


def feedback_round(
    steps: Steps, args: argparse.Namespace, number: int, traffic: pd.DataFrame, eval_data: str, eval_labels: str
) -> dict:
    """One turn of the loop: users rate the champion on new documents, GRPO learns from all feedback so far, the
    controller judges the child on the test split."""
    name = args.model_name
    title = f"{number + 3}a. round {number}: champion serves {len(traffic)} new documents, users rate them"
    console.rule(f"[bold]{title}")
    start = time.time()
    champion = aliases(mlflow.MlflowClient(), name).get(RC.CHAMPION)
    served = {"champion": champion, **rate_champion(name, traffic, args.feedback_db, seed=args.seed + number)}
    mlflow.log_metrics({f"round{number}_{k}": float(v) for k, v in served.items()})
    steps.done(title, start)

    grpo_params = {"model_name": name, "num_train_epochs": args.grpo_epochs, "seed": args.seed}
    if args.feedback_db:
        grpo_params["feedback_uri"] = args.feedback_db
    steps.run(f"{number + 3}b. round {number}: GRPO on the feedback", "grpo", **grpo_params)
    challenger = aliases(mlflow.MlflowClient(), name).get(RC.CHALLENGER)
    steps.run(
        f"{number + 3}c. round {number}: evaluate the GRPO challenger on the test split",
        "evaluate",
        model_uri=f"models:/{name}/{challenger}",
        data=eval_data,
        labels=eval_labels,
    )
    steps.run(f"{number + 3}d. round {number}: lifecycle compares, promotes or rejects", "lifecycle", model_name=name)
    tags = mlflow.MlflowClient().get_model_version(name, challenger).tags
    served.update(challenger=challenger, decision=tags.get(RC.TAG_DECISION, ""), reason=tags.get(RC.TAG_REASON, ""))
    console.print(f"round {number}: challenger v{challenger} {served['decision'] or 'undecided'}: {served['reason']}")
    return served


if __name__ == "__main__":
    sys.exit(main())
