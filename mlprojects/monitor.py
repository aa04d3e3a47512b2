"""Stage `monitor`: watch the champion over a window of its traffic and feedback; write a verdict on it.

    mlflow run . -e monitor --env-manager local -P model_name=tax-doc-classifier [-P window_hours=24]

Compares the documents the champion served in the window (the inference log) and the feedback on them (the
feedback store) with its own data (`mlprojects.evaluation.monitoring`): label-distribution shift (PSI,
chi-square), top-score shift (PSI, KS), document-embedding drift (MMD, permutation test), the feedback score's
mean and trend, and the F1-macro estimated from corrected feedback (`mlprojects.evaluation.drift`). Logs them and
their figures to a `monitor` run in the model's experiment and writes the verdict, ok | drift | degraded, on the
champion version (tag `monitor.verdict` with `monitor.reason`, `monitor.window`, `monitor.at`, `monitor.run_id`),
where the controller reads it. A window without traffic, or with too little for any statistic, says so and
writes no verdict.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone

import mlflow

from mlprojects.config import MONITOR
from mlprojects.evaluation.drift import traffic_problem, verdict
from mlprojects.evaluation.monitoring import figures, load_reference, measure, window
from mlprojects.model.registered import load_classifier
from registry import conventions as C
from registry.aliases import set_tags
from registry.cli import ArgumentParser, cli_entry, db_url_arg, model_name_arg, optional, positive
from registry.errors import ConfigError
from registry.locations import feedback_db_url, inference_log_url
from registry.lookup import label_names
from registry.tracking import log_json, log_params_once, setup
from serving.feedback import FeedbackStore
from serving.inference_log import read_window


def iso_time(value: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-05-01T12:00:00Z, got {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="monitor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-name", type=model_name_arg, default=C.DEFAULT_MODEL_NAME)
    p.add_argument(
        "--window-hours",
        type=optional(positive()),
        default="",
        help=f"the window ends at --end (default {MONITOR.window_hours:g})",
    )
    p.add_argument("--end", type=optional(iso_time), default="", help="end of the window (default: now)")
    p.add_argument("--inference-log", type=db_url_arg, default="", help="SQLAlchemy URL (default: the endpoint's)")
    p.add_argument("--feedback-uri", type=db_url_arg, default="", help="SQLAlchemy URL of the feedback store")
    p.add_argument("--seed", type=int, default=0)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = replace(MONITOR, window_hours=args.window_hours or MONITOR.window_hours)
    end = args.end or datetime.now(timezone.utc)
    start = end - timedelta(hours=cfg.window_hours)
    span = f"{start.isoformat(timespec='seconds')} .. {end.isoformat(timespec='seconds')}"
    setup(args.model_name)
    client = mlflow.MlflowClient()
    try:
        version = str(client.get_model_version_by_alias(args.model_name, C.CHAMPION).version)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"{args.model_name} has no champion to monitor") from exc
    served = read_window(args.inference_log or inference_log_url(), args.model_name, start, end)
    rated = FeedbackStore(args.feedback_uri or feedback_db_url()).query(
        model_name=args.model_name, model_version=version
    )
    traffic = window(served, rated, version, start, end, label_names(args.model_name, version))
    with mlflow.start_run(run_name="monitor") as run:
        log_params_once({"model_name": args.model_name, "champion_version": version, "window": span, **asdict(cfg)})
        counts = {
            "served_docs": len(traffic.served),
            "feedback": len(traffic.feedback),
            "corrected": len(traffic.corrected),
        }
        if problem := traffic_problem(*counts.values(), cfg):
            mlflow.log_metrics(counts)
            mlflow.set_tags({C.TAG_MONITOR_VERDICT: "none", C.TAG_MONITOR_REASON: problem})
            print(f"{args.model_name} version {version}, {span}: {problem}. No verdict written.")
            return 0
        classifier = load_classifier(f"models:/{args.model_name}/{version}")
        metrics, series = measure(traffic, load_reference(client, args.model_name, version), classifier, cfg, args.seed)
        test_f1 = client.get_model_version(args.model_name, version).tags.get(C.TAG_EVAL_F1_MACRO)
        result = verdict(metrics, float(test_f1) if test_f1 else None, cfg)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(v)})
        for path, fig in figures(series, classifier.labels).items():
            mlflow.log_figure(fig, path)
        reason = "; ".join(result.reasons)
        log_json(
            {
                "verdict": result.verdict,
                "reasons": result.reasons,
                "metrics": metrics,
                "window": span,
                "champion_version": version,
                "champion_test_f1_macro": test_f1,
            },
            "monitor/verdict.json",
        )
        mlflow.set_tags({C.TAG_MONITOR_VERDICT: result.verdict or "none", C.TAG_MONITOR_REASON: reason[:4000]})
        if result.verdict:  # the verdict last: a webhook on it finds the rest already there
            set_tags(
                client,
                args.model_name,
                version,
                {
                    C.TAG_MONITOR_REASON: reason[:4000],
                    C.TAG_MONITOR_WINDOW: span,
                    C.TAG_MONITOR_RUN: run.info.run_id,
                    C.TAG_MONITOR_AT: datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    C.TAG_MONITOR_VERDICT: result.verdict,
                },
            )
    shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if math.isfinite(v))
    print(f"{args.model_name} version {version}, {span}: {result.verdict or 'no verdict'} ({reason}).\n{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
