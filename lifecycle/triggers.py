"""Pure decision: should the controller start a GRPO run by itself now, and why. No I/O: unit-tested on hand-made
situations; `lifecycle.retrain` reads what it needs and starts the run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from registry.settings import RetrainSettings


@dataclass(frozen=True)
class Situation:
    """What the rules look at, as the controller read it (times in Unix seconds)."""

    new_feedback: int  # feedback records on the model since `since`
    since: float | None  # the last GRPO run: the newest GRPO version or the last triggered run, None if never
    last_trigger: float | None  # the last run the controller itself started
    verdict: str | None  # the monitor's verdict on the champion
    verdict_at: float | None
    now: float


@dataclass(frozen=True)
class Trigger:
    kind: str  # feedback | degraded
    reason: str


def retrain_trigger(settings: RetrainSettings, s: Situation) -> Trigger | None:
    """A trigger when the model opted in, the minimum interval since the last triggered run has passed, and
    either the monitor said `degraded` after the last GRPO run (if enabled) or enough feedback arrived since."""
    if not settings.auto:
        return None
    if s.last_trigger is not None and s.now - s.last_trigger < settings.min_interval_s:
        return None
    after = f"since the last GRPO run ({_iso(s.since)})" if s.since is not None else "and no GRPO run yet"
    if (
        settings.on_degraded
        and s.verdict == "degraded"
        and s.verdict_at is not None
        and (s.since is None or s.verdict_at > s.since)
    ):
        return Trigger("degraded", f"the monitor judged the champion degraded at {_iso(s.verdict_at)}, {after}")
    if s.new_feedback >= settings.min_feedback:
        return Trigger("feedback", f"{s.new_feedback} new feedback records {after} (threshold {settings.min_feedback})")
    return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
