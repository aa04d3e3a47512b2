"""What every command line shares: a bad value is one line and exit 2, `--log-level`, and argparse types that
check a value where it is parsed, before any work."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from pathlib import Path
from typing import Callable

from registry.errors import PlatformError
from registry.lookup import parse_models_uri
from registry.names import InvalidModelName, check_model_name

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (as logging's last-resort handler does), so a redirected
    or captured stderr is honoured."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    """Library code logs; entry points decide how much of it reaches stderr (one handler, however often called)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a bad value reported as one line, `error: <prog>: <message> (see --help)`, and exit 2, and
    `--log-level` on every command (before a sub-command's name); parsing it configures logging.

    Options are also read in MLflow's spelling: `mlflow run . -e <stage> -P max_epochs=3` passes a parameter the
    MLproject file does not declare as `--max_epochs 3`. So the MLproject file declares only what has no default,
    and every default lives here, in the command line (and is what the stage logs)."""

    def __init__(self, *args, log_level: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if log_level:
            self.add_argument(
                "--log-level",
                default="INFO",
                type=str.upper,
                choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                help="how much the libraries log",
            )

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", _SubcommandParser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = [self._dashed(a) for a in (sys.argv[1:] if args is None else args)]
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "log_level", None):
            configure_logging(parsed.log_level)
        return parsed, extras

    def _dashed(self, arg: str) -> str:
        """`--max_epochs` (or `--max_epochs=3`) as `--max-epochs` when that is one of this parser's options."""
        option, equals, value = arg.partition("=")
        dashed = option.replace("_", "-")
        if (
            option.startswith("--")
            and option not in self._option_string_actions
            and dashed in self._option_string_actions
        ):
            return dashed + equals + value
        return arg

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class _SubcommandParser(ArgumentParser):
    """A sub-command's parser: the command's own `--log-level` applies (a sub-parser's default would override it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, log_level=False, **kwargs)


def finite_float(value: str) -> float:
    """A number that is not nan or ±inf (nan would silently switch a comparison off; inf has no int)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def int_arg(value: str) -> int:
    """argparse type for integers: MLproject passes numbers as text, possibly '8.0'."""
    return int(finite_float(value))


# argparse types that check a value where it is parsed, before any work; a bad value is one line and exit 2.
def _typed(kind: Callable[[str], float], value: str) -> float:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a finite {'integer' if kind is int_arg else 'number'}"
        ) from None


def number(value: str) -> float:
    """Any finite number (a bias, which may be negative)."""
    return _typed(finite_float, value)


def positive(kind: Callable[[str], float] = finite_float) -> Callable[[str], float]:
    """A number > 0 of `kind` (int_arg or finite_float)."""

    def check(value: str) -> float:
        number = _typed(kind, value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
        return number

    return check


def non_negative(kind: Callable[[str], float] = finite_float) -> Callable[[str], float]:
    """A number >= 0 of `kind` (int_arg or finite_float)."""

    def check(value: str) -> float:
        number = _typed(kind, value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
        return number

    return check


def fraction(value: str) -> float:
    """A number strictly between 0 and 1 (a split fraction, a confidence level)."""
    number = _typed(finite_float, value)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return number


def unit_interval(value: str) -> float:
    """A number from 0 to 1, both included (a blend weight)."""
    number = _typed(finite_float, value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (inclusive), got {value}")
    return number


def boolean(value: str) -> bool:
    """true or false (also yes/no, on/off, 1/0): a switch an MLproject parameter can set."""
    word = value.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def optional(kind: Callable[[str], object]) -> Callable[[str], object]:
    """`kind`, except that '' (an MLproject parameter left empty) stays '' (use the default)."""

    def check(value: str) -> object:
        return value if value == "" else kind(value)

    return check


def model_name_arg(value: str) -> str:
    """A registered-model name the registry accepts and can resolve again (checked before any training)."""
    try:
        return check_model_name(value)
    except InvalidModelName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def registered_uri_arg(value: str) -> str:
    """`models:/<name>/<version>` or `models:/<name>@<alias>` with a valid name (existence is checked later)."""
    parsed = parse_models_uri(value)
    if parsed is None or (parsed[1] == "/" and not parsed[2].isdigit()):
        raise argparse.ArgumentTypeError(f"expected models:/<name>/<version> or models:/<name>@<alias>, got {value!r}")
    try:
        check_model_name(parsed[0])
    except InvalidModelName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def output_path_arg(value: str) -> str:
    """A file to write later: its directory must exist now, not after the work that produces it."""
    if value and not Path(value).expanduser().resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {value!r} does not exist")
    return value


def db_url_arg(value: str) -> str:
    """A SQLAlchemy database URL whose driver is installed ('' = the default store)."""
    if not value:
        return value
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(value).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a usable database URL: {exc}") from None
    return value
