"""Stage `export_onnx`: a registered torch model -> quantised ONNX pyfunc, registered as `<name>-onnx` after
its parity gates pass on the model's evaluation (test) data (nothing is registered otherwise). The lifecycle
controller runs the same export when it promotes a champion.

    mlflow run . -e export_onnx --env-manager local -P model_uri=models:/tax-doc-classifier@champion
"""

from __future__ import annotations

import argparse
import re
import sys

import mlflow

from mlprojects import config as C
from mlprojects.data import prepare
from mlprojects.onnx_model.publish import export_version, gate_data, labelled, source_classifier
from mlprojects.onnx_model.quantize import MODES
from registry import cli
from registry.cli import ArgumentParser, cli_entry
from registry.documents import parse_columns, read_table
from registry.lookup import model_name_of, registered_model_version
from registry.tracking import setup

GATES = {  # the parity gates an export must pass before it is registered (defaults: OnnxConfig)
    "min_fp32_cosine": "refused when an fp32 embedding's cosine to torch's falls below this",
    "min_int8_mean_cosine": "refused when the quantised embeddings' mean cosine to torch's falls below this",
    "max_f1_drop": "refused when the F1-macro drop's bootstrap interval lies above this",
    "min_agreement": "refused when fewer evaluation documents get torch's label set",
}


def fp32_matmuls_arg(value: str) -> str:
    """A regular expression over MatMul node names, or 'ffn-output' for the feed-forward output projections."""
    pattern = C.FFN_OUTPUT_MATMULS if value == "ffn-output" else value
    try:
        re.compile(pattern)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: '{value}' ({exc})") from None
    return pattern


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="export_onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = C.OnnxConfig()
    p.add_argument(
        "--model-uri",
        required=True,
        type=cli.registered_uri_arg,
        help="models:/<name>/<version> or models:/<name>@<alias>",
    )
    p.add_argument(
        "--eval-data",
        default="",
        help="labelled data the gates judge on; default: the model's eval.data setting (its test split)",
    )
    p.add_argument("--text-columns", default="", help="of --eval-data; default: the model's text columns")
    p.add_argument("--label-column", default=C.DEMO_LABEL_COLUMN)
    p.add_argument("--label-delimiter", default="|")
    p.add_argument("--quantization", default=d.quantization, choices=[*MODES, "none"])
    p.add_argument(
        "--fuse",
        type=cli.boolean,
        default=d.fuse,
        help="ONNX Runtime transformer fusion before quantisation, true or false (measured slower: bench/README.md)",
    )
    p.add_argument(
        "--fp32-matmuls",
        type=fp32_matmuls_arg,
        default=d.fp32_matmuls,
        help="int8: MatMul nodes (a regular expression over their names) whose weights stay fp32; 'ffn-output' "
        "names the feed-forward output projections, what the controller tries when plain int8 is refused",
    )
    p.add_argument(
        "--threads", type=cli.non_negative(cli.int_arg), default=d.threads, help="inference threads, 0 = all"
    )
    p.add_argument(
        "--thresholds",
        default=d.thresholds,
        choices=["torch", "validation"],
        help="the torch model's, or re-tuned on its validation split with the export's own scores",
    )
    p.add_argument(
        "--model-name",
        type=cli.optional(cli.model_name_arg),
        default="",
        help=f"default: <source name>{C.ONNX_MODEL_SUFFIX}",
    )
    for gate, why in GATES.items():
        p.add_argument(f"--{gate.replace('_', '-')}", type=cli.finite_float, default=getattr(d, gate), help=why)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = C.OnnxConfig.from_dict(vars(args))
    setup(model_name_of(args.model_uri))
    client = mlflow.MlflowClient()
    source = registered_model_version(args.model_uri, client)
    classifier = source_classifier(source)
    if args.eval_data:
        columns = parse_columns(args.text_columns) if args.text_columns else classifier.text_columns
        evaluation = labelled(
            prepare(read_table(args.eval_data), columns, args.label_column, args.label_delimiter), args.eval_data
        )
        where = args.eval_data
    else:
        evaluation, where = gate_data(client, source)
    published = export_version(
        client, source, classifier, cfg, args.model_name or f"{source.name}{C.ONNX_MODEL_SUFFIX}", evaluation, where
    )
    result = published.result
    print(
        f"\nRegistered {published.name} version {published.version} (models:/{published.name}/{published.version}) "
        f"from {source.name} version {source.version}.\nParity on {where}: {result.parity.summary()}.\n"
        f"Quantisation: {result.steps['quantization']}. Thresholds: {result.steps['thresholds']}.\n"
        f"Sizes (MB): {result.sizes_mb}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
