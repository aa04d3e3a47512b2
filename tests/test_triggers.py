"""When the controller retrains by itself: the trigger rules on hand-made situations, and the settings' checks."""

from __future__ import annotations

import pytest

from lifecycle.triggers import Situation, retrain_trigger
from registry.errors import ConfigError
from registry.settings import RetrainSettings

ON = RetrainSettings(auto=True, min_feedback=20, min_interval_s=3600, on_degraded=True, grpo_epochs=1)
HOUR = 3600.0
NOW = 1_800_000_000.0


def situation(**changes) -> Situation:
    base = dict(
        new_feedback=0, since=NOW - 5 * HOUR, last_trigger=NOW - 5 * HOUR, verdict=None, verdict_at=None, now=NOW
    )
    return Situation(**{**base, **changes})


@pytest.mark.parametrize(
    "settings,changes,kind,reason",
    [
        (ON, {"new_feedback": 25}, "feedback", "25 new feedback records since the last GRPO run (2027-01-15T03:00:00"),
        (
            ON,
            {"new_feedback": 25, "since": None, "last_trigger": None},
            "feedback",
            "and no GRPO run yet (threshold 20)",
        ),
        (ON, {"new_feedback": 19}, None, None),
        (RetrainSettings(auto=False), {"new_feedback": 10_000}, None, None),  # not opted in
        (ON, {"new_feedback": 25, "last_trigger": NOW - 0.5 * HOUR}, None, None),  # too soon after the last run
        (ON, {"verdict": "degraded", "verdict_at": NOW - HOUR}, "degraded", "judged the champion degraded"),
        (ON, {"verdict": "degraded", "verdict_at": NOW - 6 * HOUR}, None, None),  # the last run already answered it
        (ON, {"verdict": "drift", "verdict_at": NOW - HOUR}, None, None),  # drift alone starts nothing
        (
            RetrainSettings(auto=True, min_feedback=20, on_degraded=False),
            {"verdict": "degraded", "verdict_at": NOW - HOUR},
            None,
            None,
        ),
        (ON, {"verdict": "degraded", "verdict_at": NOW - HOUR, "new_feedback": 50}, "degraded", "degraded"),
    ],
)
def test_retrain_trigger(settings, changes, kind, reason):
    trigger = retrain_trigger(settings, situation(**changes))
    assert (trigger.kind if trigger else None) == kind
    if reason:
        assert reason in trigger.reason, trigger.reason


@pytest.mark.parametrize(
    "values,message",
    [
        ({"auto": "maybe"}, "must be on or off"),
        ({"min_feedback": "0"}, "min_feedback >= 1"),
        ({"min_interval_s": "-1"}, "min_interval_s >= 0"),
        ({"grpo_epochs": "nan"}, "not a finite number"),
    ],
)
def test_bad_retrain_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        RetrainSettings.parse(values)


def test_retrain_settings_round_trip_through_tags():
    settings = RetrainSettings.parse({"auto": "on", "min_feedback": "20", "on_degraded": "off"})
    assert RetrainSettings.parse({k.split(".", 1)[1]: v for k, v in settings.to_tags().items()}) == settings
