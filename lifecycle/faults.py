"""TEST HOOK for crash-safety tests: `LIFECYCLE_FAULT_AT=<step>` SIGKILLs the controller right after that step.

Unset in normal use (then `checkpoint` does nothing). The tests kill the controller at every step listed in
STEPS and check that the next reconcile completes or undoes what was interrupted.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "LIFECYCLE_FAULT_AT"

STEPS = (
    "promote.intent",
    "promote.export",
    "promote.champion",
    "promote.challenger",
    "promote.archive",
    "promote.history",
    "promote.tags",
    "deploy.done",
    "clone.intent",
    "clone.reference.created",
    "clone.reference.claimed",
    "clone.reference.copied",
    "clone.reference.alias",
    "clone.policy.created",
    "clone.policy.claimed",
    "clone.policy.copied",
    "clone.policy.alias",
)


def checkpoint(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
