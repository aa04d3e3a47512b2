"""`python -m serving serve | deploy`: the local endpoint, and deployments (local or Azure ML, with --dry-run).

python -m serving serve --model models:/tax-doc-classifier@champion --port 5001 [--api-key-env VAR]
    (a `@champion` endpoint follows the local deployment target: promotions and rollbacks swap its model)
python -m serving deploy --target azureml --model models:/tax-doc-classifier@champion --dry-run --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import uvicorn
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

from registry.cli import ArgumentParser, cli_entry, db_url_arg, finite_float, int_arg, positive, registered_uri_arg
from registry.conventions import CHAMPION
from registry.errors import ConfigError
from registry.locations import inference_log_url
from registry.lookup import resolve_version
from serving import endpoint
from serving.azureml.settings import load_settings
from serving.config import HTTP_STACKS, SERVE_HOST, SERVE_HTTP, SERVE_PORT, deploy_dir
from serving.connections import server_options
from serving.endpoint import EndpointSettings, create_app
from serving.follow import DeploymentFollower, ModelSlot, deployed_version
from serving.inference_log import TEXT_MODES
from serving.targets import get_target

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve one model over HTTP (MLflow-compatible /invocations)")
    limits = EndpointSettings()
    s.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version>, runs:/...")
    s.add_argument("--host", default=SERVE_HOST)
    s.add_argument("--port", type=port_arg, default=SERVE_PORT)
    s.add_argument(
        "--http",
        choices=list(HTTP_STACKS),
        default=SERVE_HTTP,
        help="HTTP stack: httptools (C parser on uvloop) or h11 (pure Python on asyncio)",
    )
    s.add_argument("--api-key-env", default="", help="name of the environment variable holding the API key")
    s.add_argument("--max-body-bytes", type=positive(int_arg), default=limits.max_body_bytes)
    s.add_argument("--max-rows", type=positive(int_arg), default=limits.max_rows, help="documents per request")
    s.add_argument(
        "--max-labels", type=positive(int_arg), default=limits.max_labels, help="label_descriptions per request"
    )
    s.add_argument(
        "--request-timeout",
        type=positive(finite_float),
        default=limits.request_timeout_s,
        help="seconds a prediction may take (503 after)",
    )
    s.add_argument(
        "--max-pending",
        type=positive(int_arg),
        default=limits.max_pending,
        help="predictions running or queued at once; more are answered 503 (Retry-After) at once",
    )
    s.add_argument(
        "--feedback-db", type=db_url_arg, default="", help="SQLAlchemy URL of the feedback store (default: its own)"
    )
    s.add_argument(
        "--inference-log",
        type=log_url_arg,
        default=None,
        help="SQLAlchemy URL of the inference log, or 'off' (default: INFERENCE_LOG_URL, else ./inference_log.db)",
    )
    s.add_argument(
        "--log-text",
        choices=TEXT_MODES,
        default=limits.log_text,
        help="keep each document's text in the inference log, or only its SHA-256",
    )
    s.add_argument("--log-retention-days", type=positive(finite_float), default=limits.log_retention_days)
    s.add_argument(
        "--no-follow",
        action="store_true",
        help="serve the version the URI names now, even when a local deployment of its champion changes",
    )
    d = sub.add_parser("deploy", help="deploy a registered version to a target")
    d.add_argument("--target", default="local", choices=["local", "azureml"])
    d.add_argument(
        "--model", required=True, type=registered_uri_arg, help="models:/<name>@<alias> or models:/<name>/<version>"
    )
    d.add_argument("--config", default="", help="YAML settings of the target (Azure ML: workspace, endpoint...)")
    d.add_argument("--dry-run", action="store_true", help="write the deployment files and print the plan only")
    d.add_argument("--out", default="azureml-deployment", help="where --dry-run writes its files")
    return p


def log_url_arg(value: str) -> str:
    """'off', or a usable database URL."""
    return value if value == "off" else db_url_arg(value)


def port_arg(value: str) -> int:
    port = int_arg(value) if value.strip().lstrip("-").replace(".", "", 1).isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {value!r}")
    return port


def serve(args: argparse.Namespace) -> int:
    api_key = read_api_key(args.api_key_env) if args.api_key_env else None
    model = _load(args.model)
    follows = not args.no_follow and args.model.rstrip("/").endswith(f"@{CHAMPION}")
    deployed = deployed_version(deploy_dir(), model.name) if follows else None
    if deployed and deployed != model.version:  # what the local target deployed, not an alias not yet deployed
        model = _load(f"models:/{model.name}/{deployed}")
    slot = ModelSlot(model)
    settings = EndpointSettings(
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        feedback_db=args.feedback_db or None,
        max_rows=args.max_rows,
        max_labels=args.max_labels,
        request_timeout_s=args.request_timeout,
        max_pending=args.max_pending,
        inference_log=None if args.inference_log == "off" else args.inference_log or inference_log_url(),
        log_text=args.log_text,
        log_retention_days=args.log_retention_days,
    )
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}"
    follower = DeploymentFollower(slot, model.name, deploy_dir(), _load).start(url) if follows else None
    log.info(
        "serving %s version %s on http://%s:%s (auth: %s; inference log: %s%s)",
        model.name,
        model.version,
        args.host,
        args.port,
        "API key" if api_key else "none",
        make_url(settings.inference_log).render_as_string(hide_password=True) if settings.inference_log else "off",
        "; follows local deployments" if follower else "",
    )
    try:
        uvicorn.run(  # uvicorn's own loggers propagate to ours (warnings only); requests are in serving.access
            create_app(slot, settings),
            host=args.host,
            port=args.port,
            log_config=None,
            log_level="warning",
            access_log=False,
            **server_options(args.http, settings.header_timeout_s),
        )
    finally:
        if follower:
            follower.stop()
    return 0


def read_api_key(variable: str) -> str:
    """The key in `variable`, without the surrounding whitespace a mounted secret file often ends with."""
    key = (os.environ.get(variable) or "").strip()
    if not key:
        raise ConfigError(f"--api-key-env {variable}: that environment variable is empty or not set")
    if any(c.isspace() for c in key):
        raise ConfigError(f"--api-key-env {variable}: the key contains whitespace; no client could send it in a header")
    return key


def _load(model_uri: str):
    try:
        return endpoint.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"cannot load {model_uri}: {getattr(exc, 'message', exc)}") from None


def deploy(args: argparse.Namespace) -> int:
    name, version = resolve_version(args.model)
    if args.dry_run:
        if args.target != "azureml":
            raise ConfigError("--dry-run is for --target azureml (the local target has nothing to plan)")
        from serving.azureml.dry_run import write_dry_run  # the Azure SDK is heavy: loaded for a dry run only

        plan = write_dry_run(name, version, load_settings(args.config or None), args.out)
        print(json.dumps(plan, indent=2))
        print(f"dry run: nothing was sent to Azure; files in {args.out}")
        return 0
    options = {"config": args.config} if args.config else {}
    deployment = get_target(args.target, **options).deploy(name, version)
    print(json.dumps(deployment.__dict__, indent=2, default=str))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve(args) if args.command == "serve" else deploy(args)


if __name__ == "__main__":
    sys.exit(main())
