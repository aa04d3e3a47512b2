"""TEST HOOK for failure-handling tests with real Ray: `PBT_FAULT_TRIALS=once` crashes each tuning trial's first
attempt (Ray retries it), `always` every attempt, `kill` SIGKILLs the last worker of a multi-worker Ray Train job
after its first checkpoint (Ray Train restarts the group from it). Unset in normal use (then `crash_if_asked` and
`kill_if_asked` do nothing); the tests set it, as `LIFECYCLE_FAULT_AT` is set for the controller's crash tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from registry.errors import ConfigError

FAULT_ENV = "PBT_FAULT_TRIALS"
MODES = ("", "once", "always", "kill")
MARKER = "test_hook_crashed"  # in a trial's directory: its first attempt was crashed


def fault_mode() -> str:
    """The hook's setting; a ConfigError for one it does not know (before Ray or any trial starts)."""
    mode = os.environ.get(FAULT_ENV, "")
    if mode not in MODES:
        raise ConfigError(f"{FAULT_ENV} must be unset, 'once', 'always' or 'kill', got {mode!r}")
    return mode


def crash_if_asked(trial_dir: str | Path, restored: bool) -> None:
    """Raise in a trial when the hook asks for it: `always`, or `once` on a trial's first, unrestored attempt."""
    mode = fault_mode()
    if mode == "always":
        raise RuntimeError("test hook: trial crashed on purpose")
    marker = Path(trial_dir) / MARKER
    if mode == "once" and not restored and not marker.exists():
        marker.touch()
        raise RuntimeError("test hook: trial crashed once on purpose")


def kill_if_asked(restored: bool, iteration: int, rank: int, world: int) -> None:
    """`kill`: the last of several workers dies (SIGKILL, no clean-up) in the second iteration of a job's first,
    unrestored attempt, i.e. after the first checkpoint."""
    if fault_mode() == "kill" and not restored and iteration == 2 and rank == world - 1 > 0:
        os.kill(os.getpid(), signal.SIGKILL)
