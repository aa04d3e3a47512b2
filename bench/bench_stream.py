"""SFT training throughput (documents/s), the fit split streamed (ray.data over Parquet files) against shipped
whole to the workers (pandas), side by side on the same documents, worker counts and global batch.

    python -m bench.bench_stream                         # MiniLM, 128 Made With ML documents, 1 and 2 workers
    python -m bench.bench_stream --encoder /path/to/tiny --repeats 3 --out bench/results/stream_tiny.json

Both run the same trial loop on Ray Train with the same CPUs per worker; the streamed run reads a folder of
`--files` Parquet files through Ray Data, its read tasks on the CPUs `reader_cpus` keeps free. documents/s = fit
documents / training seconds of epoch 2 (reading the stream included; validation, model loading and Ray start-up
excluded). Modes alternate within each repeat; the load is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_scale import MEASURED_EPOCH, ray_workers, summarise, timed_run
from bench.machine import new_results, write_results
from bench.madewithml import load_split
from mlprojects.config import EMBEDDED_ENCODER, RayConfig, ScaleConfig, TrainConfig
from mlprojects.streaming import StreamSpec, open_stream, stream_source
from mlprojects.training.ray_cluster import check_local, start_ray
from mlprojects.training.trial import TrialData
from registry.cli import ArgumentParser, cli_entry

RESULTS = Path(__file__).resolve().parent / "results"


def write_parquet_folder(fit, folder: Path, files: int) -> None:
    """The fit documents as `files` Parquet files, labels joined by '|' (how a data lake would hold them)."""
    folder.mkdir(parents=True)
    flat = fit.assign(labels=fit["labels"].map("|".join))[["text", "labels"]]
    for i, part in enumerate(np.array_split(np.arange(len(flat)), files)):
        flat.iloc[part].to_parquet(folder / f"part-{i:03d}.parquet")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="bench_stream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=EMBEDDED_ENCODER)
    p.add_argument("--docs", type=int, default=128, help="fit documents (Made With ML train split)")
    p.add_argument("--files", type=int, default=4, help="Parquet files the streamed fit split is written as")
    p.add_argument("--workers", default="1,2", help="comma list of worker counts")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5, help="both modes; leaves the reader's CPU free")
    p.add_argument("--out", default=str(RESULTS / "stream.json"))
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train, test, descriptions = load_split()
    cfg = TrainConfig(encoder=args.encoder, max_epochs=MEASURED_EPOCH)
    fit, val = train.head(args.docs), test.head(16)  # validation only completes the loop; not measured
    base = cfg.to_params() | {"lora_target_modules": None}
    results = new_results(encoder=args.encoder, fit_docs=len(fit), files=args.files, batch_size=cfg.batch_size)
    runs: dict[str, list[dict]] = {}
    cluster = RayConfig(local_num_cpus=2)
    start_ray(cluster)
    with tempfile.TemporaryDirectory() as tmp:
        write_parquet_folder(fit, Path(tmp) / "fit", args.files)
        source = stream_source(str(Path(tmp) / "fit"), "val", "test")  # held-out files: not read here
        spec = StreamSpec(len(fit), True, ["text"], "labels", list(descriptions), seed=cfg.seed)
        for repeat in range(args.repeats):
            for workers in (int(w) for w in args.workers.split(",")):
                for mode in ("in memory", "streamed"):
                    streamed = mode == "streamed"
                    scale = ScaleConfig(num_workers=workers, cpus_per_worker=args.cpus_per_worker, stream=streamed)
                    check_local(scale, cluster)  # Ray would wait forever for CPUs it lacks
                    datasets = (
                        {"train": open_stream(source, ["text", "labels"], scale.reader_cpus)} if streamed else None
                    )
                    data = TrialData(base, spec if streamed else fit, val, descriptions, 1)
                    load_before = os.getloadavg()
                    seconds = ray_workers(data, workers, Path(tmp) / "ray", scale, datasets)
                    name = f"{mode}, {workers} worker{'s' if workers > 1 else ''}"
                    runs.setdefault(name, []).append(timed_run(name, repeat, len(fit), seconds, load_before))
    summary = summarise(runs)
    ratios = {}
    for workers in args.workers.split(","):
        w = f"{workers} worker{'s' if int(workers) > 1 else ''}"
        pairs = zip(runs[f"streamed, {w}"], runs[f"in memory, {w}"])
        ratios[w] = [s["docs_per_s"] / m["docs_per_s"] for s, m in pairs]  # per repeat, side by side
    results.update(summary=summary, streamed_over_in_memory=ratios, runs=runs)
    write_results(results, args.out)
    print({w: [round(r, 2) for r in rs] for w, rs in ratios.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
