"""Errors users can act on, and the wrapper that turns them into one readable line and an exit code."""
from __future__ import annotations

import functools
import math
import sys
from typing import Callable


class PlatformError(Exception):
    """Base class of every error whose message is meant for the person running a command."""


class DataError(PlatformError):
    """Input data or a label file cannot be used (missing columns, empty file, malformed YAML...)."""


class ConfigError(PlatformError):
    """A parameter or configuration value is invalid."""


class TrainingError(PlatformError):
    """Training cannot continue (e.g. the loss became NaN); nothing is registered."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run `main`; a PlatformError becomes `error: <message>` on stderr and exit code 2, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except PlatformError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def finite_float(value: str) -> float:
    """A number that is not nan or ±inf (nan would silently switch a comparison off; inf has no int)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def int_arg(value: str) -> int:
    """argparse type for integers: MLproject passes numbers as text, possibly '8.0'."""
    return int(finite_float(value))
