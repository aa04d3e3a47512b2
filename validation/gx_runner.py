"""Shared plumbing for data-quality gates: run GX expectations on a DataFrame, get readable lines.

Every gate (training data now; feedback data and scoring input later) builds a list of
:class:`Check` objects and calls :func:`run_checks`.  GX does the validating; this module turns
its result into one human-readable line per failed expectation plus a JSON-safe copy of the
raw GX result for MLflow.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

# No network here, and no usage statistics wanted anywhere: opt out before GX is imported.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _import_gx() -> Any:
    """Import GX without letting pyspark kill the process.

    GX imports ``pyspark.sql.connect``, which calls ``sys.exit(0)`` when ``__main__`` has neither
    ``__spec__`` nor ``__file__`` (it assumes doctests), i.e. under ``python -c``.  A gate that
    silently exits 0 would look like a pass, so give ``__main__`` a ``__file__`` for the import.
    """
    main = sys.modules.get("__main__")
    shim = main is not None and getattr(main, "__spec__", None) is None and not hasattr(main, "__file__")
    if shim:
        main.__file__ = "<string>"  # type: ignore[union-attr]
    try:
        with warnings.catch_warnings():  # pyspark's "pandas>=3 not fully supported" noise
            warnings.simplefilter("ignore", FutureWarning)
            import great_expectations as gx
    finally:
        if shim:
            del main.__file__  # type: ignore[union-attr]
    return gx


gx = _import_gx()
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

MAX_EXAMPLES = 5  # examples per failure line; the full GX result keeps up to 20
MAX_VALUE_SET = 1000  # longer value sets are cut in the JSON details (the check itself uses all)


class DataValidationError(ValueError):
    """Raised when a data gate fails; the message lists every failed expectation, one per line."""


@dataclass
class GateResult:
    """Outcome of a data gate: pass/fail, readable failure lines, raw GX results (JSON-safe)."""

    success: bool
    failures: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def raise_for_failures(self) -> None:
        """Stop the pipeline with all problems at once, so they can be fixed in one go."""
        if not self.success:
            n = len(self.failures)
            lines = "\n".join(f"- {f}" for f in self.failures) or "- (no details)"
            raise DataValidationError(f"data validation failed ({n} problem{'' if n == 1 else 's'}):\n{lines}")

    @classmethod
    def combine(cls, results: Iterable[GateResult]) -> GateResult:
        """Merge the results of several suites (one per frame shape) into one gate result."""
        merged = cls(success=True)
        for r in results:
            merged.success &= r.success
            merged.failures += r.failures
            merged.details.update(r.details)
        return merged


@dataclass(frozen=True)
class Check:
    """One GX expectation plus how to phrase its failure.

    In ``describe``, ``{n}`` becomes GX's unexpected_count (observed_value for table-level
    expectations) and ``{s}`` a plural "s".  ``show`` picks the examples: distinct failing
    ``values``, failing ``rows`` (DataFrame index), ``ids`` ({id column value: failing value} for
    up to 20 entries; needs ``id_columns``) or ``none``.
    """

    expectation: Any  # a gx.expectations.Expectation
    describe: str
    subject: str | None = None  # defaults to the expectation's column
    show: Literal["values", "rows", "ids", "none"] = "values"


@functools.lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """One ephemeral context per process: building it costs far more than a validation does."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("gates").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


_lock = threading.Lock()  # the cached context/execution engine is shared; validate one batch at a time


def run_checks(name: str, df: pd.DataFrame, checks: Sequence[Check], *, id_columns: Sequence[str] = ()) -> GateResult:
    """Validate ``df`` against ``checks`` as one GX suite called ``name``."""
    suite = gx.ExpectationSuite(name=name, expectations=[_tagged(c.expectation, i) for i, c in enumerate(checks)])
    result_format: dict[str, Any] = {"result_format": "SUMMARY"}
    if id_columns:
        result_format["unexpected_index_column_names"] = list(id_columns)
    with _lock:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        raw = batch.validate(suite, result_format=result_format)
    details = _json_safe(raw.to_json_dict())
    # GX does not keep suite order in its results; the meta tag maps each result to its Check.
    failed = [r for r in details["results"] if not r["success"]]
    failed.sort(key=lambda r: r["expectation_config"]["meta"]["gate_check"])
    failures = [_describe(checks[r["expectation_config"]["meta"]["gate_check"]], r) for r in failed]
    return GateResult(success=bool(raw.success), failures=failures, details={name: details})


def _tagged(expectation: Any, index: int) -> Any:
    """Copy (a suite binds its expectations) and tag with the Check's position."""
    tagged = copy.copy(expectation)
    tagged.meta = {**(expectation.meta or {}), "gate_check": index}
    return tagged


def _describe(check: Check, result: dict) -> str:
    """Turn one failed GX expectation result into '<column>: <n> <problem>: <examples>'."""
    kwargs = result["expectation_config"]["kwargs"]
    subject = check.subject or kwargs.get("column") or result["expectation_config"]["type"]
    exc = result.get("exception_info") or {}
    if exc.get("raised_exception"):
        return f"{subject}: {result['expectation_config']['type']} could not run: {exc.get('exception_message')}"
    res = result.get("result") or {}
    n = res.get("unexpected_count", res.get("observed_value"))
    line = f"{subject}: " + check.describe.replace("{n}", str(n)).replace("{s}", "" if n == 1 else "s")
    examples = _examples(check.show, res, kwargs.get("column"))
    return f"{line}: {examples}" if examples else line


def _examples(show: str, res: dict, column: str | None) -> str:
    """A few failing examples, so the line is actionable without opening the full result."""
    if show == "values":
        values = [c["value"] for c in res.get("partial_unexpected_counts", [])]
        more = ", ..." if len(values) > MAX_EXAMPLES else ""
        return "[" + ", ".join(_short(v) for v in values[:MAX_EXAMPLES]) + more + "]" if values else ""
    index = res.get("partial_unexpected_index_list") or []
    if show == "rows" and index:
        return f"rows {index[:MAX_EXAMPLES]}" + (" ..." if len(index) > MAX_EXAMPLES else "")
    if show == "ids" and index:
        (id_column, *_) = res["unexpected_index_column_names"]
        return str({entry[id_column]: entry.get(column) for entry in index})
    return ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _json_safe(obj: Any, _key: str = "") -> Any:
    """NaN -> None (strict JSON); huge value sets summarised so validation_result.json stays small."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if _key == "value_set" and len(obj) > MAX_VALUE_SET:
            return [_json_safe(v) for v in list(obj)[:MAX_VALUE_SET]] + [f"... {len(obj) - MAX_VALUE_SET} more"]
        return [_json_safe(v) for v in obj]
    return obj


def failing_rows(name: str, df: pd.DataFrame, checks: Sequence[Check]) -> dict[Any, list[str]]:
    """Per failing row (``df``'s index), the ``describe`` of every check it fails.

    For gates that keep the good rows and reject the bad ones with their reasons (feedback imports), rather
    than stopping on the first bad row.  Uses GX's COMPLETE result format, so every failing row is listed.
    """
    suite = gx.ExpectationSuite(name=name, expectations=[_tagged(c.expectation, i) for i, c in enumerate(checks)])
    with _lock:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        raw = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    rows: dict[Any, list[str]] = {}
    for result in raw.to_json_dict()["results"]:
        if result["success"]:
            continue
        check = checks[result["expectation_config"]["meta"]["gate_check"]]
        exc = result.get("exception_info") or {}
        if exc.get("raised_exception"):
            raise DataValidationError(f"{check.subject or name}: check could not run: {exc.get('exception_message')}")
        for index in result["result"].get("unexpected_index_list") or []:
            reasons = rows.setdefault(index, [])
            if check.describe not in reasons:
                reasons.append(check.describe)
    return rows
