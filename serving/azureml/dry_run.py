"""`deploy --target azureml --dry-run`: write what a deployment is made of, and the plan, without calling Azure."""

from __future__ import annotations

import json
from pathlib import Path

from serving.azureml.bundle import build_bundle
from serving.azureml.entities import deployment_entity, endpoint_entity, write_yaml
from serving.config import AzureMLConfig


def write_dry_run(model_name: str, version: str, cfg: AzureMLConfig, out: str | Path) -> dict:
    """endpoint.yml + deployment.yml (for `az ml online-endpoint|online-deployment create -f`), the model,
    code and environment they reference, and plan.json. A fresh endpoint is assumed: the first deployment
    takes all traffic; a live rollout (`AzureMLTarget.deploy`) picks whichever of blue/green is idle."""
    out = Path(out)
    bundle = build_bundle(model_name, version, out)
    first = cfg.deployment_names[0]
    write_yaml(endpoint_entity(cfg), out / "endpoint.yml")
    write_yaml(deployment_entity(cfg, bundle, first), out / "deployment.yml")
    plan = {
        "model": f"models:/{model_name}/{version}",
        "serves": bundle.artifact,
        "workspace": {k: getattr(cfg, k) or "(not set)" for k in ("subscription_id", "resource_group", "workspace")},
        "steps": [
            f"register Azure ML model {model_name}:{version} (custom_model: the MLflow files of {bundle.artifact})",
            f"create or update endpoint {cfg.endpoint_name} (auth_mode key)",
            f"create deployment on the idle one of {cfg.deployment_names} ({cfg.instance_type} x{cfg.instance_count})",
            "smoke-test it through a direct deployment call",
            f"shift traffic in steps {cfg.traffic_steps} (% to the new deployment), checking the endpoint after each",
            "delete the old deployment; on any failure traffic returns to it",
        ],
        "commands": [
            f"az ml online-endpoint create -f {out / 'endpoint.yml'}",
            f"az ml online-deployment create -f {out / 'deployment.yml'} --all-traffic",
        ],
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent == out)
        + ["model/", "code/", "environment/"],
    }
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan
