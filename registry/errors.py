"""Errors users can act on: each message is meant for the person running a command (one line, no traceback)."""

from __future__ import annotations


class PlatformError(Exception):
    """Base class of every error whose message is meant for the person running a command."""


class DataError(PlatformError):
    """Input data or a label file cannot be used (missing columns, empty file, malformed YAML...)."""


class ConfigError(PlatformError):
    """A parameter or configuration value is invalid."""


class TrainingError(PlatformError):
    """Training cannot continue (e.g. the loss became NaN); nothing is registered."""
