"""Feedback store CLI.

    python -m serving.feedback add --prediction-id P --model-name M --model-version 3 --text "..." \
        --predicted-labels "vat|payroll" --score 4 [--corrected-labels vat] [--labels labels.yaml]
    python -m serving.feedback import feedback.csv [--labels labels.yaml]
    python -m serving.feedback export feedback.jsonl [--model-name M] [--model-version 3]

`--db URL` (or FEEDBACK_DB_URL) selects the store; default: ./feedback.db (SQLite). Labels are checked
against `--labels` (a label file as for `sft`) or, without it, against each model version's own label set
read from the MLflow registry. `import` stores the good rows, prints every rejected row with its reasons,
and exits 0 when at least one row was stored (2 when none could be).
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache

from registry.cli import ArgumentParser, cli_entry, db_url_arg, output_path_arg
from registry.documents import load_label_descriptions
from registry.errors import ConfigError, DataError
from registry.locations import feedback_db_url
from registry.lookup import label_names
from serving.feedback.io import FeedbackFileError, parse_labels, read_feedback_file, write_feedback_file
from serving.feedback.store import FeedbackStore, ImportReport


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m serving.feedback", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--db",
        type=db_url_arg,
        default=None,
        help="SQLAlchemy URL of the store (default: $FEEDBACK_DB_URL or ./feedback.db)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="store one piece of feedback")
    add.add_argument("--prediction-id", required=True)
    add.add_argument("--model-name", required=True)
    add.add_argument("--model-version", required=True)
    add.add_argument("--text", required=True)
    add.add_argument("--predicted-labels", default="", help="JSON array or '|'-separated")
    add.add_argument("--score", required=True, help="1 (wrong) .. 5 (right)")
    add.add_argument("--corrected-labels", default=None, help="JSON array or '|'-separated; '[]' = no label applies")
    add.add_argument("--source", default="cli")
    imp = sub.add_parser("import", help="store the good rows of a CSV/JSONL file, report the bad ones")
    imp.add_argument("path")
    exp = sub.add_parser("export", help="write the store (or one model's feedback) to CSV/JSONL")
    exp.add_argument("path", type=output_path_arg)
    exp.add_argument("--model-name", default=None)
    exp.add_argument("--model-version", default=None)
    for command in (add, imp):
        command.add_argument("--labels", default=None, help="label file (YAML/JSON label -> description)")
    return p


class LabelSets:
    """Label names per (model, version): the --labels file for all, else each version's own, from the registry."""

    def __init__(self, labels_file: str | None):
        self.fixed = list(load_label_descriptions(labels_file)) if labels_file else None

    def __call__(self, model_name, model_version) -> list[str] | None:
        return self.fixed if self.fixed is not None else _registry_labels(str(model_name), str(model_version))


@lru_cache(maxsize=None)
def _registry_labels(model_name: str, model_version: str) -> list[str] | None:
    try:
        return label_names(model_name, model_version)
    except Exception as exc:  # noqa: BLE001 - any registry failure means: this version cannot be checked
        raise DataError(
            f"cannot read the label set of {model_name} version {model_version} from the registry "
            f"({exc}); pass --labels"
        ) from exc


def store_grouped(store: FeedbackStore, records: list[dict], labels: LabelSets, first_row: int) -> ImportReport:
    """Validate each model version's records against that version's labels; one report for the file."""
    report = ImportReport()
    groups: dict[tuple, list[int]] = {}
    for pos, r in enumerate(records):
        groups.setdefault((r.get("model_name"), r.get("model_version")), []).append(pos)
    for (name, version), positions in groups.items():
        try:
            names = labels(name, version) if name and version else None
        except DataError as exc:  # this version's rows cannot be checked; the other versions' rows still can
            report.rejected += [(first_row + p, records[p], [str(exc)]) for p in positions]
            continue
        part = store.add_many([records[p] for p in positions], names)
        report.accepted += part.accepted
        numbered = dict(enumerate(positions))
        report.rejected += [(first_row + numbered[row - 1], rec, why) for row, rec, why in part.rejected]
    report.rejected.sort(key=lambda item: item[0])
    return report


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = FeedbackStore(args.db or feedback_db_url())
    if args.command == "export":
        frame = store.query(args.model_name, args.model_version)
        try:
            n = write_feedback_file(frame, args.path)
        except FeedbackFileError as exc:
            raise ConfigError(str(exc)) from exc
        print(f"exported {n} feedback record(s) to {args.path}")
        return 0
    if args.command == "add":
        records = [
            {
                "prediction_id": args.prediction_id,
                "model_name": args.model_name,
                "model_version": args.model_version,
                "text": args.text,
                "predicted_labels": parse_labels(args.predicted_labels or None, empty=[]),
                "score": args.score,
                "corrected_labels": parse_labels(args.corrected_labels, empty=None),
                "source": args.source,
            }
        ]
        first_row = 1
    else:
        try:
            records, first_row = read_feedback_file(args.path)
        except FeedbackFileError as exc:
            raise DataError(str(exc)) from exc
    report = store_grouped(store, records, LabelSets(args.labels), first_row)
    for line in report.lines():
        print(f"rejected {line}", file=sys.stderr)
    print(f"stored {report.accepted} of {len(records)} feedback record(s) in {store.url}")
    if records and not report.accepted:
        raise DataError("nothing was stored: every record was rejected (reasons above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
