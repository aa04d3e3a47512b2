"""Benchmark: how much faster int8 can be than fp32 on this CPU at all, measured on the encoder's matrix products.

    python -m bench.bench_int8_ceiling [--tokens 2048] [--threads 2] [--rounds 7]

The shipped int8 pyfunc is about 2x the torch fp32 pyfunc at batch 32; the goal is 3x. Every MatMul of a MiniLM
layer (Q, K, V and output projections 384x384, feed-forward 384x1536 and 1536x384) is run alone on `--tokens` rows
(32 documents of 64 tokens), three ways: torch fp32 (`F.linear`, what the torch pyfunc runs), ONNX Runtime fp32
MatMul, and ONNX Runtime int8 (the same one-node graph through `quantize_dynamic` with the export's settings:
per-channel int8 weights, dynamic uint8 activations, so ONNX Runtime runs DynamicQuantizeMatMul). The layer's six
products are summed per variant. Rounds alternate the variants (order rotated); x torch is the median of
per-round ratios with [min, max].

Then the whole model (untrained MiniLM, exported as `sft` exports it) on the Made With ML test documents in calls
of 32: ONNX Runtime fp32, the shipped int8 graph, and int8 with ONNX Runtime's transformer fusion and its
QAttention (the Q/K/V products int8 inside the fused attention), alternating; and ONNX Runtime's profile of the
shipped graph, time per operator type. In units of the int8 model's time: its products take p, the rest 1 − p
(the same fp32 operators in both graphs), and the fp32 model takes r (the measured ratio), so the fp32 products take
r − (1 − p): the products are now (r − 1 + p) / p times faster in int8 (`products_speedup_now`), and for the model
to reach `goal` x fp32 with the rest unchanged they must be (r − 1 + p) / (r/goal − 1 + p) times faster (Amdahl:
`products_speedup_needed`).
Writes bench/results/int8_ceiling.json with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench.bench_onnx import timed_batches, tokenizer_of, trained_classifier
from bench.machine import new_results, write_results
from bench.madewithml import load_split
from mlprojects.config import OnnxConfig, TrainConfig
from mlprojects.onnx_model.export import export_graph, fuse
from mlprojects.onnx_model.quantize import _EXTRA, quantize
from mlprojects.onnx_model.runtime import OnnxEncoder, session
from registry.cli import ArgumentParser

RESULTS = Path(__file__).with_name("results") / "int8_ceiling.json"
HIDDEN, FFN = 384, 1536  # all-MiniLM-L6-v2
LAYER = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN), "out": (HIDDEN, HIDDEN)}
LAYER |= {"ffn_up": (HIDDEN, FFN), "ffn_down": (FFN, HIDDEN)}
VARIANTS = ("torch_fp32", "ort_fp32", "ort_int8")
PRODUCTS = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeLinear"}


def matmul_graph(weight: np.ndarray, path: Path) -> Path:
    """One MatMul with a constant weight: x[tokens, k] @ w[k, n]."""
    k, n = weight.shape
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", n])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def runners(tokens: int, threads: int, workdir: Path, rng: np.random.Generator) -> dict[str, dict[str, callable]]:
    """Per variant, per product: a no-argument call that computes it once."""
    torch.set_num_threads(threads)
    out: dict[str, dict[str, callable]] = {v: {} for v in VARIANTS}
    for name, (k, n) in LAYER.items():
        x = rng.standard_normal((tokens, k)).astype(np.float32)
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        fp32 = matmul_graph(w, workdir / f"{name}.onnx")
        int8 = workdir / f"{name}.int8.onnx"
        quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        xt, wt = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
        sessions = {"ort_fp32": session(fp32, threads), "ort_int8": session(int8, threads)}

        def torch_call(xt=xt, wt=wt):
            with torch.inference_mode():
                torch.nn.functional.linear(xt, wt)

        out["torch_fp32"][name] = torch_call
        for variant, sess in sessions.items():
            out[variant][name] = lambda sess=sess, x=x: sess.run(None, {"x": x})
    return out


def model_graphs(workdir: Path) -> tuple[dict[str, Path], object]:
    """fp32, the shipped int8 (dynamic, per-channel MatMuls) and fused + QAttention int8 graphs; the tokenizer."""
    _, test, descriptions = load_split()
    classifier, _ = trained_classifier(TrainConfig(encoder="minilm", max_epochs=0, patience=1), test, descriptions)
    fp32, _ = export_graph(classifier.model, workdir / "fp32.onnx", OnnxConfig().opset)
    fuse(fp32, workdir / "fused.onnx", classifier.model.encoder.config)
    qattention = workdir / "qattention.onnx"
    quantize_dynamic(
        workdir / "fused.onnx",
        qattention,
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options=dict(_EXTRA),
    )
    graphs = {"ort_fp32": fp32, "ort_int8_shipped": quantize(fp32, workdir / "int8.onnx", "dynamic")}
    graphs["ort_int8_qattention"] = qattention
    return graphs, tokenizer_of(classifier, workdir)


def op_shares(graph: Path, tokenizer, texts: list[str], threads: int, workdir: Path) -> dict[str, float]:
    """Share of kernel time per operator type over calls of 32 documents (ONNX Runtime's profiler)."""
    encoder = OnnxEncoder(graph, tokenizer, threads=threads)
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(workdir / "profile")
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    encoder.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        timed_batches(encoder.embed, texts, 32)
    events = json.loads(Path(encoder.session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"]
    total = sum(per_op.values())
    return {op: round(d / total, 4) for op, d in sorted(per_op.items(), key=lambda kv: -kv[1])}


def model_suite(threads: int, rounds: int, workdir: Path) -> dict:
    graphs, tokenizer = model_graphs(workdir)
    _, test, _ = load_split()
    texts = list(test["text"])
    encoders = {name: OnnxEncoder(path, tokenizer, threads=threads) for name, path in graphs.items()}
    reference = encoders["ort_fp32"].embed(texts)
    cosine = {name: round(float((e.embed(texts) * reference).sum(1).mean()), 5) for name, e in encoders.items()}
    names = list(encoders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(len(texts) / timed_batches(encoders[name].embed, texts, 32)["wall"])
        print({name: f"{v[-1]:.1f} docs/s" for name, v in rates.items()}, f"load {os.getloadavg()[0]:.1f}", flush=True)
    summary = {
        name: {
            "docs_per_s_b32_median": round(float(np.median(v)), 1),
            "x_ort_fp32_median": round(float(np.median([a / b for a, b in zip(v, rates["ort_fp32"])])), 2),
            "mean_cosine_to_fp32": cosine[name],
        }
        for name, v in rates.items()
    }
    shares = op_shares(graphs["ort_int8_shipped"], tokenizer, texts, threads, workdir)
    p = sum(share for op, share in shares.items() if op in PRODUCTS)
    r = summary["ort_int8_shipped"]["x_ort_fp32_median"]
    fp32_products = r - (1 - p)
    needed = {str(g): round(fp32_products / (r / g - (1 - p)), 2) if r / g > 1 - p else None for g in (2.5, 3.0)}
    return {
        "b32": summary,
        "int8_op_shares": shares,
        "int8_products_share": round(p, 3),
        "products_speedup_now": round(fp32_products / p, 2),
        "products_speedup_needed": needed,
    }


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2048, help="rows per product (documents x tokens)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=20, help="calls per product per round (median taken)")
    p.add_argument("--model-rounds", type=int, default=5, help="rounds of the whole-model part (0: skip it)")
    p.add_argument("--output", default=str(RESULTS))
    args = p.parse_args(argv)
    results = new_results(
        tokens=args.tokens, threads=args.threads, rounds=args.rounds, onnxruntime=ort.__version__, layer=LAYER
    )
    with tempfile.TemporaryDirectory() as tmp:
        calls = runners(args.tokens, args.threads, Path(tmp), np.random.default_rng(0))
        rounds = []
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            seconds = {v: {name: timed(calls[v][name], args.repeats) for name in LAYER} for v in order}
            layer = {v: sum(seconds[v].values()) for v in VARIANTS}
            rounds.append({"loadavg_1m": os.getloadavg()[0], "seconds": seconds, "layer_s": layer})
            print({v: f"{layer[v] * 1e3:.2f} ms" for v in VARIANTS}, f"load {rounds[-1]['loadavg_1m']:.1f}", flush=True)
    summary = {}
    for v in VARIANTS:
        per_round = [rd["layer_s"]["torch_fp32"] / rd["layer_s"][v] for rd in rounds]
        flops = 2 * args.tokens * sum(k * n for k, n in LAYER.values())
        best = min(rd["layer_s"][v] for rd in rounds)
        summary[v] = {
            "layer_ms_median": round(1e3 * float(np.median([rd["layer_s"][v] for rd in rounds])), 3),
            "x_torch_median": round(float(np.median(per_round)), 2),
            "x_torch_range": [round(min(per_round), 2), round(max(per_round), 2)],
            "gops_best_round": round(flops / best / 1e9, 1),
        }
        for name in LAYER:
            ratios = [rd["seconds"]["torch_fp32"][name] / rd["seconds"][v][name] for rd in rounds]
            summary[v][f"x_torch_{name}"] = round(float(np.median(ratios)), 2)
    with tempfile.TemporaryDirectory() as tmp:
        model = model_suite(args.threads, args.model_rounds, Path(tmp)) if args.model_rounds else None
    results.update(rounds=rounds, summary=summary, model=model)
    write_results(results, args.output)
    for v, s in summary.items():
        print(v, s)
    print(json.dumps(model, indent=1))
    return results


if __name__ == "__main__":
    main()
