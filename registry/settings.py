"""Per-model evaluation and lifecycle settings, kept as registered-model tags so the controller needs only a name.

The first `sft` run of a model writes them from its held-out split; `python -m lifecycle configure` changes them.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

from mlflow import MlflowClient

from registry import conventions as C
from registry.cli import boolean, finite_float
from registry.errors import ConfigError

EVAL_MARGIN = 0.0  # F1-macro gain a challenger needs, on top of a paired bootstrap that excludes 0
EVAL_MIN_F1_MACRO = 0.0  # gate for any champion
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
KEEP_ARCHIVED = 3  # previous champions kept in the Archived stage for rollback
RETRAIN_MIN_FEEDBACK = 200  # new feedback records since the last GRPO run that start one (when opted in)
RETRAIN_MIN_INTERVAL_S = 6 * 3600.0  # between two GRPO runs the controller starts


@dataclass
class ModelSettings:
    data: str
    labels: str
    text_columns: str = "text"
    label_column: str = "labels"
    margin: float = EVAL_MARGIN
    min_f1_macro: float = EVAL_MIN_F1_MACRO
    bootstrap: int = BOOTSTRAP_RESAMPLES
    confidence: float = CONFIDENCE
    keep_archived: int = KEEP_ARCHIVED

    def to_tags(self) -> dict[str, str]:
        return {C.TAG_EVAL_CONFIG[k]: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "ModelSettings | None":
        """None when the evaluation dataset is not configured; a ConfigError when a value is malformed."""
        values = {f.name: tags[C.TAG_EVAL_CONFIG[f.name]] for f in fields(cls) if C.TAG_EVAL_CONFIG[f.name] in tags}
        if not values.get("data") or not values.get("labels"):
            return None
        return cls.parse(values)

    @classmethod
    def parse(cls, values: dict) -> "ModelSettings":
        """Typed and range-checked settings from strings (tags, command-line values)."""
        settings = cls(**typed(cls, values))
        if not 0.0 < settings.confidence < 1.0:
            raise ConfigError(f"confidence must be in (0, 1), got {settings.confidence}")
        if settings.bootstrap < 100 or settings.keep_archived < 1:
            raise ConfigError("bootstrap needs at least 100 resamples and keep_archived at least 1")
        return settings


def read_settings(client: MlflowClient, name: str) -> ModelSettings | None:
    return ModelSettings.from_tags(client.get_registered_model(name).tags)


def write_settings(client: MlflowClient, name: str, **changes) -> ModelSettings:
    """Change some settings (the rest keep their values or defaults); data and labels are needed at least once."""
    current = read_settings(client, name)
    values = {**(asdict(current) if current else {}), **{k: v for k, v in changes.items() if v is not None}}
    if not values.get("data") or not values.get("labels"):
        raise ConfigError(f"model {name} has no evaluation dataset yet: give --eval-data and --eval-labels")
    settings = ModelSettings.parse(values)
    for key, value in settings.to_tags().items():
        client.set_registered_model_tag(name, key, value)
    return settings


def init_from_sft_run(client: MlflowClient, name: str, run_id: str) -> ModelSettings | None:
    """On a model's first sft run: judge every future candidate on that run's test split (which nothing trains or
    selects on) and label set."""
    if read_settings(client, name) is not None:
        return None
    return write_settings(
        client,
        name,
        data=f"runs:/{run_id}/data/test.parquet",
        labels=f"runs:/{run_id}/labels.json",
        text_columns="text",
        label_column="labels",
    )


@dataclass
class RetrainSettings:
    """Continuous training, opt in per model: when the controller starts the `grpo` entry point by itself."""

    auto: bool = False
    min_feedback: int = RETRAIN_MIN_FEEDBACK  # new feedback records since the last GRPO run
    min_interval_s: float = RETRAIN_MIN_INTERVAL_S  # between two runs the controller starts
    on_degraded: bool = True  # a `degraded` monitor verdict on the champion starts one too
    grpo_epochs: float | None = None  # num_train_epochs of the run; None: the grpo stage's default

    def to_tags(self) -> dict[str, str]:
        return {C.TAG_RETRAIN_CONFIG[k]: shown(v) for k, v in asdict(self).items()}

    @classmethod
    def parse(cls, values: dict) -> "RetrainSettings":
        """Typed and range-checked settings from strings (tags, command-line values)."""
        settings = cls(**typed(cls, values))
        if settings.min_feedback < 1 or settings.min_interval_s < 0 or (settings.grpo_epochs or 1) <= 0:
            raise ConfigError("retraining needs min_feedback >= 1, min_interval_s >= 0 and grpo_epochs > 0")
        return settings


def read_retrain_settings(client: MlflowClient, name: str) -> RetrainSettings:
    tags = client.get_registered_model(name).tags
    return RetrainSettings.parse({k: tags[t] for k, t in C.TAG_RETRAIN_CONFIG.items() if t in tags})


def write_retrain_settings(client: MlflowClient, name: str, **changes) -> RetrainSettings:
    """Change some retraining settings; the rest keep their values (or defaults). Nothing is written if one is bad."""
    current = asdict(read_retrain_settings(client, name))
    settings = RetrainSettings.parse({**current, **{k: v for k, v in changes.items() if v is not None}})
    for key, value in settings.to_tags().items():
        client.set_registered_model_tag(name, key, value)
    return settings


def typed(cls, values: dict) -> dict:
    """A settings dataclass's values from strings (tags, command-line values), each by its field's type."""
    kinds, out = {f.name: f.type for f in fields(cls)}, {}
    for key, value in values.items():
        if kinds[key] == "str":
            out[key] = str(value)
        elif kinds[key] == "bool":
            try:
                out[key] = value if isinstance(value, bool) else boolean(str(value))
            except argparse.ArgumentTypeError:
                raise ConfigError(f"setting {key}={value!r} must be on or off") from None
        elif kinds[key].endswith("| None") and value in (None, "", "None", "default"):
            out[key] = None
        else:
            try:
                number = finite_float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"setting {key}={value!r} is not a finite number") from exc
            out[key] = int(number) if kinds[key] == "int" else number
    return out


def shown(value) -> str:
    """A setting as a tag value (and as `configure` prints it): on/off, a number, or `default`."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "default" if value is None else str(value)
