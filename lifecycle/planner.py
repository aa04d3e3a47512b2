"""Pure decisions: registry state -> the next actions, and evaluation results -> promote or reject.

No MLflow here, so every rule is unit-tested on hand-made states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lifecycle.state import RegistryState
from registry import conventions as C


@dataclass(frozen=True)
class Action:
    kind: str  # resume | deploy | evaluate | clone | retire | retrain
    version: str | None = None
    detail: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def candidates(state: RegistryState) -> list[tuple[str, str]]:
    """(version, who asked): the challenger, and any version a person moved to Staging (a request)."""
    challenger = state.aliases.get(C.CHALLENGER)
    found = {}
    for version, info in state.versions.items():
        if version == state.champion or C.TAG_ROLE in info.tags:
            continue
        if version == challenger:
            found[version] = "challenger alias"
        elif info.stage == C.REQUEST_STAGE:
            found[version] = "stage transition to Staging"
    return sorted(found.items(), key=lambda item: int(item[0]))


def clones_in_sync(state: RegistryState) -> bool:
    """The frozen reference and the policy descend from the champion's lineage: the reference is a clone of the
    champion, or the champion is a GRPO child of the reference."""
    champion, reference = state.champion, state.aliases.get(C.REFERENCE)
    if reference is None or state.aliases.get(C.POLICY) is None or reference not in state.versions:
        return False
    champ_tags = state.versions[champion].tags if champion in state.versions else {}
    return state.versions[reference].tags.get(C.TAG_PARENT_VERSION) == champion or (
        champ_tags.get(C.TAG_KIND) == "grpo" and champ_tags.get(C.TAG_PARENT_VERSION) == reference
    )


def plan(state: RegistryState, deployed: str | None, keep_archived: int) -> list[Action]:
    """Ordered actions; the controller does the first, reads the registry again and re-plans."""
    if state.pending:
        return [Action("resume", detail=state.pending)]
    actions = []
    champion = state.champion
    if champion and deployed != champion:
        actions.append(Action("deploy", champion))
    actions += [Action("evaluate", v, {"requested_by": who}) for v, who in candidates(state)]
    if champion and not clones_in_sync(state):
        actions.append(Action("clone", champion))
    if len(state.archived()) > keep_archived:
        actions.append(Action("retire"))
    return actions


def decide(
    candidate_f1: float, champion_f1: float | None, paired: dict | None, margin: float, min_f1: float, confidence: float
) -> Decision:
    """Promote only a model that passes the gates and, against a champion, is better by `margin` with a
    paired-bootstrap interval of the gain above 0."""
    if candidate_f1 < min_f1:
        return Decision(False, f"gate failed: F1-macro {candidate_f1:.4f} below the minimum {min_f1:.4f}")
    if champion_f1 is None:
        return Decision(True, f"first model passing the gates (F1-macro {candidate_f1:.4f})")
    gain = candidate_f1 - champion_f1
    versus = f"F1-macro {candidate_f1:.4f} vs champion {champion_f1:.4f}"
    if gain <= margin:
        return Decision(False, f"not better by the margin: {versus}, gain {gain:+.4f} <= margin {margin:.4f}")
    interval = f"paired bootstrap {confidence:.0%} interval of the gain [{paired['low']:+.4f}, {paired['high']:+.4f}]"
    if paired["low"] <= 0.0:
        return Decision(False, f"gain may be noise: {versus}, {interval} includes 0")
    return Decision(True, f"better: {versus}, gain {gain:+.4f} > margin {margin:.4f}, {interval}")
