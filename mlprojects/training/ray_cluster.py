"""The Ray cluster a training run uses: a small local Ray, or a running cluster joined by address."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import torch

import mlprojects
import registry
from mlprojects.config import RayConfig, ScaleConfig
from mlprojects.training.faults import FAULT_ENV
from registry.errors import ConfigError

# Ray Train's V1 API: the one whose trainers a Tune Tuner accepts (PBT over multi-worker trials); set for Ray's
# worker processes too, which import ray.train before our code.
RAY_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "0"}


def worker_env() -> dict[str, str]:
    """What every Ray worker (Tune trial or Ray Train worker) gets: RAY_ENV and a test hook's setting, if set."""
    return {**RAY_ENV, **({FAULT_ENV: os.environ[FAULT_ENV]} if FAULT_ENV in os.environ else {})}


def check_reachable(address: str) -> None:
    """A host:port that does not answer fails in seconds here instead of Ray's long connection retries."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray_address must be 'auto' or host:port, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def start_ray(cluster: RayConfig) -> bool:
    """Join `ray_address` or start a small local Ray; True when we started it (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if cluster.ray_address:
        check_reachable(cluster.ray_address)
        try:  # ship our code to the cluster's workers; nothing else differs from a local run
            ray.init(
                address=cluster.ray_address,
                runtime_env={"py_modules": [mlprojects, registry], "env_vars": worker_env()},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {cluster.ray_address}: {exc}") from exc
        return True
    repo = str(Path(mlprojects.__file__).resolve().parent.parent)
    ray.init(
        num_cpus=cluster.local_num_cpus,
        num_gpus=int(torch.cuda.is_available()),
        include_dashboard=False,
        object_store_memory=cluster.object_store_bytes,
        configure_logging=False,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
                **worker_env(),
            }
        },
    )
    return True


@contextlib.contextmanager
def ray_session(cluster: RayConfig):
    """Ray running for a block (started here, or joined); shut down after it only if started here."""
    import ray

    started = start_ray(cluster)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def storage_root(cluster: RayConfig) -> str:
    """Where Ray keeps trial checkpoints and the experiment state that `--resume` restores."""
    return str(Path(cluster.storage_path or "~/ray_results").expanduser().resolve())


def reader_cpus(scale: ScaleConfig) -> float:
    """CPUs kept free for Ray Data's read tasks while the workers train (a stream only): with none left, the
    read would wait for the workers, which wait for its data."""
    if scale.stream and scale.reader_cpus < 1:
        raise ConfigError(f"reader_cpus must be >= 1 (Ray Data lists the files on one CPU), got {scale.reader_cpus:g}")
    return scale.reader_cpus if scale.stream else 0.0


def check_local(scale: ScaleConfig, cluster: RayConfig) -> None:
    """Workers that a local Ray could never place, refused before it starts (Ray would wait for them forever)."""
    if scale.num_workers < 1 or scale.cpus_per_worker <= 0:
        raise ConfigError(
            f"num_workers must be >= 1 and cpus_per_worker > 0, got {scale.num_workers}, {scale.cpus_per_worker}"
        )
    if cluster.ray_address:
        return
    cpus = scale.num_workers * scale.cpus_per_worker + reader_cpus(scale)
    if cpus > cluster.local_num_cpus:
        reading = f" + {scale.reader_cpus:g} reading the stream" if scale.stream else ""
        raise ConfigError(
            f"{scale.num_workers} workers × {scale.cpus_per_worker:g} CPUs{reading} need {cpus:g} CPUs, "
            f"the local Ray has {cluster.local_num_cpus}"
        )
    if scale.use_gpu and scale.num_workers > torch.cuda.device_count():
        raise ConfigError(
            f"{scale.num_workers} GPU workers need {scale.num_workers} GPUs, this machine has "
            f"{torch.cuda.device_count()}"
        )


def check_cluster(scale: ScaleConfig) -> None:
    """The same check against the running cluster's resources (a joined cluster is only known once joined)."""
    import ray

    have = ray.cluster_resources()
    need = {
        "CPU": scale.num_workers * scale.cpus_per_worker + reader_cpus(scale),
        "GPU": scale.num_workers if scale.use_gpu else 0,
    }
    for kind, amount in need.items():
        if amount > have.get(kind, 0):
            raise ConfigError(
                f"{scale.num_workers} workers need {amount:g} {kind}s, the Ray cluster has {have.get(kind, 0):g}"
            )
