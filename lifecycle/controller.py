"""Reconcile one registered model: read the registry, plan, act, until nothing is left to do.

Holds the model's lease while acting; records every decision as version tags, in the version's model card and
in a controller MLflow run in the model's experiment.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import threading
from contextlib import ExitStack

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lifecycle import actions as A
from lifecycle import db, history
from lifecycle.config import (
    DEFAULT_DEPLOY_TARGET,
    LEASE_TTL_S,
    ONNX_ON_PROMOTION,
    RETRAIN_TIMEOUT_S,
    WATCH_INTERVAL_S,
)
from lifecycle.faults import checkpoint
from lifecycle.lock import Lease, LeaseLost
from lifecycle.planner import Action, decide, plan
from lifecycle.retrain import run_grpo, situation
from lifecycle.state import RegistryState, read_state
from lifecycle.triggers import retrain_trigger
from mlprojects.evaluation.bootstrap import paired_bootstrap
from mlprojects.evaluation.judging import (
    EvalData,
    Evaluation,
    ModelError,
    evaluate_model,
    load_eval_data,
    log_evaluation,
    log_model_metrics,
)
from registry import conventions as C
from registry.errors import ConfigError, PlatformError
from registry.locations import feedback_db_url
from registry.model_card import refresh_cards
from registry.settings import KEEP_ARCHIVED, ModelSettings, read_retrain_settings, read_settings
from registry.stages import client_stages_enabled
from registry.tracking import log_json, setup
from serving.targets import get_target

log = logging.getLogger(__name__)


def actor() -> str:
    return f"lifecycle-controller {getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"


class Controller:
    def __init__(self, model_name: str, lease_ttl: float = LEASE_TTL_S):
        setup(model_name)
        self.client = MlflowClient()
        client_stages_enabled(self.client)  # a bad stage setting stops here, before any write
        self.name = model_name
        try:
            tags = self.client.get_registered_model(model_name).tags
        except MlflowException as exc:
            raise ConfigError(f"no registered model named {model_name!r} in {mlflow.get_tracking_uri()}") from exc
        self.engine = db.engine()
        self.actor = actor()
        self.lease = Lease(self.engine, model_name, self.actor, lease_ttl)
        self.target = get_target(tags.get(C.TAG_DEPLOY_TARGET, DEFAULT_DEPLOY_TARGET))
        self.ctx = A.Context(self.client, model_name, self.engine, self.lease, self.actor, self.target)
        self.log: list[str] = []
        self._evaluations: dict[str, Evaluation] = {}
        self._data: EvalData | None = None

    # -- entry points -------------------------------------------------------------------------------------
    def reconcile(self) -> list[str] | None:
        """One pass; None when another controller holds the lease (it does the work)."""
        if not self.lease.try_acquire():
            return None
        self.log, self._evaluations, self._data = [], {}, None
        with ExitStack() as stack:
            stack.enter_context(self.lease)
            self.close_orphaned_runs()
            done: set[Action] = set()
            while actions := plan(self.state(), self.deployed(), self.keep_archived()) or self.retrain_plan(done):
                action = actions[0]
                if action in done:
                    raise PlatformError(f"{action.kind} of version {action.version} did not take effect; stopping")
                done.add(action)
                if not mlflow.active_run():
                    stack.enter_context(self._controller_run())
                self.execute(action)
            if mlflow.active_run():
                refresh_cards(self.client, self.name)
        return self.log

    def rollback(self) -> list[str]:
        if not self.lease.try_acquire():
            raise LeaseLost(f"another controller ({self.lease.holder_now()}) is acting on {self.name}; try again")
        self.log = []
        with self.lease, self._controller_run():
            self.close_orphaned_runs()
            state = self.state()
            if state.pending:
                self.execute(Action("resume", detail=state.pending))
                state = self.state()
            target = history.rollback_target(history.rows(self.engine, self.name))
            if target is None or target == state.champion:
                raise ConfigError(f"{self.name} has no previous champion to roll back to (see its history)")
            intent = A.new_intent("rollback", version=target, previous=state.champion, actor=self.actor)
            A.write_intent(self.ctx, intent)
            A.rollback(self.ctx, intent)
            self.note(f"rolled back: champion {state.champion} -> {target}")
            self.execute(Action("deploy", target))
            refresh_cards(self.client, self.name)
        return self.log

    # -- reading --------------------------------------------------------------------------------------------
    def state(self) -> RegistryState:
        return read_state(self.client, self.name)

    def deployed(self) -> str | None:
        current = self.target.current(self.name)
        return current.version if current and current.status == "deployed" else None

    def settings(self) -> ModelSettings | None:
        return read_settings(self.client, self.name)

    def onnx_on_promotion(self) -> str | None:
        """The quantisation of a new champion's ONNX export, or None when the model is configured without one."""
        mode = self.client.get_registered_model(self.name).tags.get(C.TAG_ONNX_ON_PROMOTION, ONNX_ON_PROMOTION)
        return None if mode == "off" else mode

    def keep_archived(self) -> int:
        settings = self.settings()
        return settings.keep_archived if settings else KEEP_ARCHIVED

    # -- acting ---------------------------------------------------------------------------------------------
    def execute(self, action: Action) -> None:
        if action.kind == "resume":
            A.resume(self.ctx, action.detail)
            self.note(f"completed the interrupted {action.detail['action']} of version {action.detail.get('version')}")
        elif action.kind == "deploy":
            deployment = A.deploy(self.ctx, action.version)
            self.note(f"deployed version {action.version} to {deployment.target}")
        elif action.kind == "evaluate":
            self.evaluate(action.version, action.detail["requested_by"])
        elif action.kind == "clone":
            intent = A.new_intent("clone", version=action.version, actor=self.actor)
            A.write_intent(self.ctx, intent)
            checkpoint("clone.intent")
            A.clone(self.ctx, intent)
            refs = {a: v for a, v in self.state().aliases.items() if a in (C.REFERENCE, C.POLICY)}
            self.note(f"cloned champion {action.version} as reference {refs[C.REFERENCE]} and policy {refs[C.POLICY]}")
        elif action.kind == "retrain":
            self.retrain(action.detail)
        elif action.kind == "retire":
            retired = A.retire(self.ctx, self.keep_archived())
            self.note(f"retired archived versions {', '.join(retired)} (keeping the last {self.keep_archived()})")

    def retrain_plan(self, done: set[Action]) -> list[Action]:
        """Once the registry is in the wanted state: a GRPO run when a trigger fires (at most one per pass)."""
        settings = read_retrain_settings(self.client, self.name)
        if not settings.auto or Action("retrain") in done or not self.state().champion:
            return []
        trigger = retrain_trigger(settings, situation(self.client, self.name, self.engine, feedback_db_url()))
        if trigger is None:
            return []
        return [
            Action("retrain", detail={"kind": trigger.kind, "reason": trigger.reason, "epochs": settings.grpo_epochs})
        ]

    def retrain(self, trigger: dict) -> None:
        """Record the trigger, run `grpo` (the lease held throughout); the next plan judges its challenger."""
        self.lease.ensure()
        trigger_id = history.record_trigger(self.engine, self.name, trigger["kind"], trigger["reason"], self.actor)
        self.note(f"retraining with GRPO: {trigger['reason']}")
        before = set(self.state().versions)
        run_id, ok = run_grpo(
            self.name, trigger["epochs"], trigger["reason"], mlflow.active_run().info.run_id, RETRAIN_TIMEOUT_S
        )
        new = sorted(set(self.state().versions) - before, key=int)
        outcome = f"registered version {new[-1]}" if ok and new else "failed (see the run's output)"
        history.finish_trigger(self.engine, trigger_id, run_id, outcome)
        mlflow.set_tag(C.TAG_RETRAIN_RUN, run_id)
        self.note(f"retraining run {run_id}: {outcome}")

    def evaluate(self, version: str, requested_by: str) -> None:
        """Judge one candidate against the champion on the configured dataset; promote or reject it."""
        settings = self.settings()
        if settings is None:
            reason = (
                "no evaluation configuration for this model: run `python -m lifecycle configure "
                f"--model-name {self.name} --eval-data URI --eval-labels URI`"
            )
            A.block(self.ctx, version, reason)
            raise ConfigError(f"version {version} waits: {reason}")
        try:
            data = self.eval_data(settings)
        except PlatformError as exc:
            A.block(self.ctx, version, f"evaluation dataset unusable: {exc}")
            raise
        champion = self.state().champion
        champ_ev = self.evaluation(champion, data, settings) if champion else None
        tags = {
            C.TAG_REQUESTED_BY: requested_by,
            C.TAG_ACTOR: self.actor,
            C.TAG_DECIDED_AT: A._now(),
            C.TAG_MARGIN: str(settings.margin),
            C.TAG_CONTROLLER_RUN: mlflow.active_run().info.run_id,
        }
        try:
            cand_ev = self.evaluation(version, data, settings)
        except ModelError as exc:
            reason = f"artifact does not load or predict: {exc}"[:4000]
            A.reject(self.ctx, version, {**tags, C.TAG_REASON: reason})
            log_json({"version": version, "decision": "rejected", "reason": reason}, f"decisions/v{version}.json")
            self.note(f"rejected version {version}: {reason}")
            return
        paired = None
        if champ_ev is not None:
            paired = paired_bootstrap(
                data.y_true, cand_ev.y_pred, champ_ev.y_pred, settings.bootstrap, confidence=settings.confidence
            )
            tags.update(
                {
                    C.TAG_COMPARED_WITH: champion,
                    C.TAG_CHAMPION_F1: f"{champ_ev.report['f1_macro']:.4f}",
                    C.TAG_GAIN_CI: f"[{paired['low']:+.4f}, {paired['high']:+.4f}]",
                }
            )
        decision = decide(
            cand_ev.report["f1_macro"],
            champ_ev.report["f1_macro"] if champ_ev else None,
            paired,
            settings.margin,
            settings.min_f1_macro,
            settings.confidence,
        )
        tags.update(
            {
                **cand_ev.version_tags(),
                C.TAG_CANDIDATE_F1: f"{cand_ev.report['f1_macro']:.4f}",
                C.TAG_REASON: decision.reason,
            }
        )
        self._log_decision(version, champion, cand_ev, champ_ev, paired, decision)
        if decision.promote:
            intent = A.new_intent(
                "promote",
                version=version,
                previous=champion,
                actor=self.actor,
                tags={**tags, C.TAG_DECISION: "promoted"},
                onnx=self.onnx_on_promotion(),
            )
            A.write_intent(self.ctx, intent)
            checkpoint("promote.intent")
            exported = A.promote(self.ctx, intent)
            mlflow.set_tag(C.TAG_PROMOTED, version)
            self.note(f"promoted version {version} to champion: {decision.reason}")
            if exported:
                self.note(exported)
        else:
            A.reject(self.ctx, version, tags)
            self.note(f"rejected version {version}: {decision.reason}")

    def eval_data(self, settings: ModelSettings) -> EvalData:
        if self._data is None:
            self._data = load_eval_data(settings.data, settings.labels, settings.text_columns, settings.label_column)
        return self._data

    def evaluation(self, version: str, data: EvalData, settings: ModelSettings) -> Evaluation:
        if version not in self._evaluations:
            self._evaluations[version] = evaluate_model(
                f"models:/{self.name}/{version}", data, settings.bootstrap, confidence=settings.confidence
            )
        return self._evaluations[version]

    # -- records --------------------------------------------------------------------------------------------
    def close_orphaned_runs(self) -> None:
        """Mark FAILED the RUNNING controller runs of this model that no process will end: a controller killed
        mid-pass (SIGKILL, power loss) leaves its run open, and while we hold the lease no other one is acting."""
        experiments = {os.environ.get("MLFLOW_EXPERIMENT_ID")} - {None}
        if named := self.client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.name):
            experiments.add(named.experiment_id)
        ours = mlflow.active_run().info.run_id if mlflow.active_run() else None
        for run in self.client.search_runs(sorted(experiments), "attributes.status = 'RUNNING'") if experiments else []:
            if run.data.tags.get(C.TAG_CONTROLLER_MODEL) == self.name and run.info.run_id != ours:
                self.client.set_tag(
                    run.info.run_id,
                    C.TAG_ORPHANED,
                    f"its controller ended without closing it; marked failed by {self.actor}",
                )
                self.client.set_terminated(run.info.run_id, "FAILED")
                self.note(f"marked the controller run {run.info.run_id} of a killed controller as failed")

    def _controller_run(self):
        run = mlflow.start_run(run_name=f"lifecycle {self.name}")
        mlflow.set_tags({C.TAG_CONTROLLER_MODEL: self.name, C.TAG_ACTOR: self.actor})
        return run

    def _log_decision(self, version, champion, cand_ev, champ_ev, paired, decision) -> None:
        log_evaluation(cand_ev, prefix=f"v{version}/")
        log_model_metrics(cand_ev, f"models:/{self.name}/{version}")
        metrics = {f"v{version}_candidate_f1_macro": cand_ev.report["f1_macro"]}
        if champ_ev is not None:
            metrics.update(
                {
                    f"v{version}_champion_f1_macro": champ_ev.report["f1_macro"],
                    f"v{version}_gain": paired["gain"],
                    f"v{version}_gain_low": paired["low"],
                    f"v{version}_gain_high": paired["high"],
                }
            )
        mlflow.log_metrics({k: float(np.round(v, 6)) for k, v in metrics.items()})
        log_json(
            {
                "version": version,
                "champion": champion,
                "decision": "promoted" if decision.promote else "rejected",
                "reason": decision.reason,
                "metrics": metrics,
                "paired_bootstrap": paired,
                "actor": self.actor,
                "at": A._now(),
            },
            f"decisions/v{version}.json",
        )

    def note(self, line: str) -> None:
        self.log.append(line)
        log.info("[%s] %s", self.name, line)


def run_pass(controller: Controller) -> bool:
    """One pass for a loop that retries: an error is reported, not raised (the registry is never half-done).
    False when another controller holds the lease."""
    try:
        if controller.reconcile() is None:
            log.info("[%s] another controller holds the lease", controller.name)
            return False
    except PlatformError as exc:
        log.error("[%s] %s (retried on the next pass)", controller.name, exc)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    return True


def watch(model_name: str, interval: float = WATCH_INTERVAL_S) -> None:
    """Reconcile a pass every `interval` seconds until SIGTERM, which lets the pass in progress finish (and give
    the lease back) first."""
    controller = Controller(model_name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        run_pass(controller)
        stop.wait(interval)
