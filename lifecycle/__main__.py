"""python -m lifecycle reconcile [--once | --watch | --mode once|watch] | listen | rollback | history | configure
--model-name NAME"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

import mlflow

from lifecycle import db, history
from lifecycle.config import (
    DEFAULT_DEPLOY_TARGET,
    LISTEN_LEASE_RETRY_S,
    LISTEN_POLL_INTERVAL_S,
    LISTEN_PORT,
    ONNX_ON_PROMOTION,
    WATCH_INTERVAL_S,
    WEBHOOK_SECRET_ENV,
    WEBHOOK_TOLERANCE_S,
)
from lifecycle.controller import Controller, watch
from lifecycle.listener import register_webhook, serve
from mlprojects.onnx_model.quantize import MODES
from registry import conventions as C
from registry.cli import ArgumentParser, cli_entry, model_name_arg, positive
from registry.errors import ConfigError
from registry.settings import (
    RETRAIN_MIN_FEEDBACK,
    RETRAIN_MIN_INTERVAL_S,
    read_retrain_settings,
    read_settings,
    shown,
    write_retrain_settings,
    write_settings,
)
from registry.tracking import setup
from serving.__main__ import port_arg
from serving.config import SERVE_HOST
from serving.targets import get_target


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m lifecycle", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconcile", help="evaluate candidates, promote or reject, clone, deploy, retire")
    mode = rec.add_mutually_exclusive_group()
    mode.add_argument("--mode", choices=["once", "watch"], default="once", help="once (default) or watch")
    mode.add_argument("--once", dest="mode", action="store_const", const="once", help="one pass, then exit")
    mode.add_argument("--watch", dest="mode", action="store_const", const="watch", help="every --interval seconds")
    rec.add_argument("--interval", type=positive(), default=WATCH_INTERVAL_S)
    lis = sub.add_parser(
        "listen", help="reconcile on MLflow registry webhooks (needs `mlflow server`), polling as the fallback"
    )
    lis.add_argument(
        "--model-name",
        dest="models",
        action="append",
        type=model_name_arg,
        metavar="NAME",
        help=f"a model to manage (repeat for several; default {C.DEFAULT_MODEL_NAME})",
    )
    lis.add_argument("--host", default=SERVE_HOST)
    lis.add_argument("--port", type=port_arg, default=LISTEN_PORT)
    lis.add_argument(
        "--secret-env", default=WEBHOOK_SECRET_ENV, help="name of the environment variable holding the HMAC secret"
    )
    lis.add_argument(
        "--poll-interval",
        type=positive(),
        default=LISTEN_POLL_INTERVAL_S,
        help="seconds between passes over every model without any event",
    )
    lis.add_argument(
        "--tolerance",
        type=positive(),
        default=WEBHOOK_TOLERANCE_S,
        help="refuse deliveries signed longer ago than this many seconds",
    )
    lis.add_argument(
        "--register-webhook", action="store_true", help="create (or update) the registry webhook that calls it"
    )
    sub.add_parser("rollback", help="point champion back to the previous champion and redeploy")
    sub.add_parser("history", help="which version was champion when")
    conf = sub.add_parser("configure", help="show or change the model's evaluation and lifecycle settings")
    conf.add_argument("--eval-data", dest="data", help="labelled evaluation set (path or URI)")
    conf.add_argument("--eval-labels", dest="labels", help="label -> description file")
    conf.add_argument("--text-columns")
    conf.add_argument("--label-column")
    conf.add_argument("--margin", help="F1-macro gain a challenger needs over the champion")
    conf.add_argument("--min-f1-macro", help="gate: minimum F1-macro of any champion")
    conf.add_argument("--bootstrap", help="bootstrap resamples")
    conf.add_argument("--confidence", help="interval level, e.g. 0.95")
    conf.add_argument("--keep-archived", help="previous champions kept in the Archived stage")
    conf.add_argument("--deploy-target", help="deployment target for the champion (default local)")
    conf.add_argument(
        "--onnx-export",
        choices=[*MODES, "none", "off"],
        help=f"ONNX export of each new champion (default {ONNX_ON_PROMOTION}; none = fp32, off = no export)",
    )
    conf.add_argument(
        "--auto-retrain",
        choices=["on", "off"],
        help="the controller starts `grpo` when enough feedback arrived or the monitor says degraded (default off)",
    )
    conf.add_argument(
        "--retrain-min-feedback", help=f"new feedback records that start a run (default {RETRAIN_MIN_FEEDBACK})"
    )
    conf.add_argument(
        "--retrain-min-interval",
        help=f"seconds between two runs the controller starts (default {RETRAIN_MIN_INTERVAL_S:g})",
    )
    conf.add_argument(
        "--retrain-on-degraded", choices=["on", "off"], help="a degraded verdict starts a run (default on)"
    )
    conf.add_argument("--retrain-epochs", help="GRPO epochs of a run the controller starts (default: the stage's)")
    for sp in (rec, conf, *[sub.choices[n] for n in ("rollback", "history")]):
        sp.add_argument("--model-name", type=model_name_arg, default=C.DEFAULT_MODEL_NAME)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "configure":
        return configure(args)
    if args.command == "listen":
        return listen(args)
    if args.command == "history":
        setup(args.model_name)
        entries = history.rows(db.engine(), args.model_name)
        if not entries:
            _registered(args.model_name)
        print(history.format_table(entries) if entries else f"{args.model_name} has had no champion yet")
        if triggered := history.trigger_rows(db.engine(), args.model_name):
            print("\n" + history.format_triggers(triggered))
        return 0
    if args.command == "rollback":
        Controller(args.model_name).rollback()
        return 0
    if args.mode == "watch":
        watch(args.model_name, args.interval)
        return 0
    log = Controller(args.model_name).reconcile()
    if log is None:
        print(f"[{args.model_name}] another controller holds the lease; it does the work. Nothing done.")
    elif not log:
        print(f"[{args.model_name}] nothing to do: the registry is in the wanted state")
    return 0


def listen(args) -> int:
    secret = os.environ.get(args.secret_env, "")
    if not secret.strip():
        raise ConfigError(
            f"--secret-env {args.secret_env}: that environment variable is empty or not set; the listener refuses "
            "to run without the webhook's secret"
        )
    models = list(dict.fromkeys(args.models or [C.DEFAULT_MODEL_NAME]))
    uri = setup(models[0])
    if args.register_webhook:
        url = f"http://{args.host}:{args.port}/webhook"
        print(f"registry webhook {register_webhook(mlflow.MlflowClient(), url, secret)} calls {url}", flush=True)
    if not uri.startswith(("http://", "https://")):
        print(
            f"note: {uri} is not an MLflow server, and only `mlflow server` sends webhooks: until one does, the "
            f"models are reconciled every {args.poll_interval:g} s only",
            flush=True,
        )
    serve(models, args.host, args.port, secret, args.poll_interval, LISTEN_LEASE_RETRY_S, args.tolerance)
    return 0


def _registered(name: str) -> None:
    """A ConfigError (exit 2) unless `name` is a registered model."""
    try:
        mlflow.MlflowClient().get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"no registered model named {name!r} in {mlflow.get_tracking_uri()}") from exc


def configure(args) -> int:
    setup(args.model_name)
    client = mlflow.MlflowClient()
    _registered(args.model_name)
    retrain = {
        "auto": args.auto_retrain,
        "min_feedback": args.retrain_min_feedback,
        "min_interval_s": args.retrain_min_interval,
        "on_degraded": args.retrain_on_degraded,
        "grpo_epochs": args.retrain_epochs,
    }
    if any(v is not None for v in retrain.values()):
        retraining = write_retrain_settings(client, args.model_name, **retrain)
    else:
        retraining = read_retrain_settings(client, args.model_name)
    keys = (
        "data",
        "labels",
        "text_columns",
        "label_column",
        "margin",
        "min_f1_macro",
        "bootstrap",
        "confidence",
        "keep_archived",
    )
    changes = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.deploy_target:
        get_target(args.deploy_target)  # fails early on an unknown name
        client.set_registered_model_tag(args.model_name, C.TAG_DEPLOY_TARGET, args.deploy_target)
    if args.onnx_export:
        client.set_registered_model_tag(args.model_name, C.TAG_ONNX_ON_PROMOTION, args.onnx_export)
    settings = write_settings(client, args.model_name, **changes) if changes else read_settings(client, args.model_name)
    tags = client.get_registered_model(args.model_name).tags
    for key, value in (asdict(settings) if settings else {}).items():
        print(f"{key:>14}: {value}")
    print(f"{'deploy_target':>14}: {tags.get(C.TAG_DEPLOY_TARGET, DEFAULT_DEPLOY_TARGET)}")
    print(f"{'onnx_export':>14}: {tags.get(C.TAG_ONNX_ON_PROMOTION, ONNX_ON_PROMOTION)}")
    print("retraining (GRPO started by the controller):")
    for key, value in asdict(retraining).items():
        print(f"{key:>14}: {shown(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
