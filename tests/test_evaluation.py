"""The evaluation maths (local `evaluate` module vs scikit-learn, bootstrap), the pure lifecycle rules, the lease.
(The `evaluate` entry point runs through `mlflow run` in test_lifecycle.py, on the model trained there.)"""

from __future__ import annotations

import json
import time

import evaluate
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from lifecycle.db import engine
from lifecycle.history import champion_stack, rollback_target
from lifecycle.lock import Lease, LeaseLost
from lifecycle.planner import Action, candidates, clones_in_sync, decide, plan
from lifecycle.state import RegistryState, VersionInfo
from mlprojects.evaluation.bootstrap import bootstrap_intervals, paired_bootstrap
from mlprojects.evaluation.judging import MULTILABEL_F1


def random_multi_hot(seed: int, n: int = 80, labels: int = 5):
    rng = np.random.default_rng(seed)
    y_true = rng.random((n, labels)) < 0.3
    y_pred = np.where(rng.random((n, labels)) < 0.75, y_true, ~y_true)
    y_pred[:, -1] = False  # a label never predicted: precision undefined -> 0, as sklearn's zero_division=0
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_evaluate_module_matches_scikit_learn(seed):
    y_true, y_pred = random_multi_hot(seed)
    names = [f"l{j}" for j in range(y_true.shape[1])]
    report = evaluate.load(MULTILABEL_F1).compute(
        predictions=y_pred.astype(int).tolist(), references=y_true.astype(int).tolist(), label_names=names
    )
    for average in ("macro", "micro", "weighted"):
        assert report[f"f1_{average}"] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0))
    assert report["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for j, name in enumerate(names):
        assert report["per_label"][name] == pytest.approx(
            {"precision": p[j], "recall": r[j], "f1": f[j], "support": s[j]}
        )


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    y_true, y_pred = random_multi_hot(3, n=120)
    first = bootstrap_intervals(y_true, y_pred, n=300, seed=7, label_names=list("abcde"))
    assert first == bootstrap_intervals(y_true, y_pred, n=300, seed=7, label_names=list("abcde"))
    point = f1_score(y_true, y_pred, average="macro", zero_division=0)
    low, high = first["f1_macro"]
    assert low < point < high and high - low < 0.3
    assert "per_label.a.f1" in first and not any(k.endswith("support") for k in first)


def test_paired_bootstrap():
    y_true, good = random_multi_hot(4, n=150)
    same = paired_bootstrap(y_true, good, good.copy(), n=200)
    assert same == {"gain": 0.0, "low": 0.0, "high": 0.0, "p_not_better": 1.0}
    nothing = np.zeros_like(good)
    better = paired_bootstrap(y_true, good, nothing, n=200)
    assert better["gain"] == pytest.approx(f1_score(y_true, good, average="macro", zero_division=0))
    assert 0 < better["low"] <= better["gain"] <= better["high"] and better["p_not_better"] == 0.0
    # a one-document difference is noise
    slightly = good.copy()
    slightly[0] = y_true[0]
    noise = paired_bootstrap(y_true, slightly, good, n=300)
    assert noise["low"] <= 0.0 <= noise["high"]


# --- pure lifecycle rules -----------------------------------------------------------------------------------------


def state(versions: dict, aliases: dict, tags: dict | None = None) -> RegistryState:
    return RegistryState(
        "m", {v: VersionInfo(v, stage, vt) for v, (stage, vt) in versions.items()}, aliases, tags or {}
    )


def test_candidates_are_the_challenger_and_versions_people_moved_to_staging():
    s = state(
        {
            "1": ("Production", {}),
            "2": ("Staging", {}),
            "3": ("Staging", {}),
            "4": ("None", {}),
            "5": ("None", {"lifecycle.role": "reference"}),
        },
        {"champion": "1", "challenger": "3", "reference": "5"},
    )
    assert candidates(s) == [("2", "stage transition to Staging"), ("3", "challenger alias")]


def test_plan_order_resume_first_then_deploy_evaluate_clone_retire():
    pending = state(
        {"1": ("Production", {})}, {"champion": "1"}, {"lifecycle.pending": json.dumps({"action": "promote"})}
    )
    assert [a.kind for a in plan(pending, None, 3)] == ["resume"]
    s = state(
        {"1": ("Archived", {}), "2": ("Archived", {}), "3": ("Production", {}), "4": ("Staging", {})},
        {"champion": "3", "challenger": "4"},
    )
    assert plan(s, "2", keep_archived=1) == [
        Action("deploy", "3"),
        Action("evaluate", "4"),
        Action("clone", "3"),
        Action("retire"),
    ]
    assert plan(state({}, {}), None, 3) == []


def test_clones_follow_the_champions_lineage():
    base = {
        "1": ("Production", {"lineage.kind": "sft"}),
        "2": ("None", {"lineage.parent_version": "1"}),
        "3": ("None", {"lineage.parent_version": "1"}),
    }
    assert clones_in_sync(state(base, {"champion": "1", "reference": "2", "policy": "3"}))
    assert not clones_in_sync(state(base, {"champion": "1", "reference": "2"}))
    grpo_child = {**base, "4": ("Production", {"lineage.kind": "grpo", "lineage.parent_version": "2"})}
    assert clones_in_sync(state(grpo_child, {"champion": "4", "reference": "2", "policy": "3"}))
    new_sft = {**base, "4": ("Production", {"lineage.kind": "sft"})}
    assert not clones_in_sync(state(new_sft, {"champion": "4", "reference": "2", "policy": "3"}))


@pytest.mark.parametrize(
    "cand,champ,low,margin,min_f1,promote,reason",
    [
        (0.50, None, None, 0.0, 0.0, True, "first model"),
        (0.10, None, None, 0.0, 0.2, False, "gate failed"),
        (0.60, 0.50, 0.02, 0.0, 0.0, True, "better"),
        (0.60, 0.50, 0.02, 0.2, 0.0, False, "not better by the margin"),
        (0.50, 0.50, 0.00, 0.0, 0.0, False, "not better by the margin"),
        (0.60, 0.50, -0.01, 0.0, 0.0, False, "may be noise"),
    ],
)
def test_decide(cand, champ, low, margin, min_f1, promote, reason):
    paired = None if low is None else {"gain": cand - champ, "low": low, "high": 0.2}
    decision = decide(cand, champ, paired, margin, min_f1, 0.95)
    assert decision.promote is promote and reason in decision.reason


def test_rollback_goes_to_the_champion_before_the_current_one():
    def e(action, version):
        return {"action": action, "version": version}

    entries = [e("promote", "1"), e("promote", "2"), e("promote", "5")]
    assert champion_stack(entries) == ["1", "2", "5"] and rollback_target(entries) == "2"
    entries.append(e("rollback", "2"))
    assert rollback_target(entries) == "1"
    entries.append(e("rollback", "1"))
    assert rollback_target(entries) is None
    assert rollback_target([e("promote", "1")]) is None


def test_lease_is_exclusive_until_it_expires(tmp_path):
    eng = engine(f"sqlite:///{tmp_path / 'lease.db'}")
    first, second = Lease(eng, "m", "first", ttl=1.0), Lease(eng, "m", "second", ttl=1.0)
    assert first.try_acquire() and not second.try_acquire()
    assert first.try_acquire()  # re-entrant for its holder
    assert Lease(eng, "other-model", "second", ttl=1.0).try_acquire()
    time.sleep(1.1)
    assert second.try_acquire()
    with pytest.raises(LeaseLost):
        first.ensure()
    second.release()
    assert first.try_acquire()
