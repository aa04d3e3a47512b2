"""The reference route a user would take instead of `export_onnx`: optimum-onnx export of the same merged
encoder + ONNX Runtime's quantiser presets (through optimum's ORTQuantizer). Runs in its own environment,
because optimum-onnx pins transformers < 4.58:

    python -m venv /tmp/optimum-venv && /tmp/optimum-venv/bin/pip install optimum-onnx onnxruntime torch
    /tmp/optimum-venv/bin/python bench/optimum_route.py ENCODER_DIR OUT_DIR

Writes OUT_DIR/<preset>/model*.onnx (inputs: input_ids, attention_mask, token_type_ids; output:
last_hidden_state) and OUT_DIR/route.json; bench_onnx.py times them beside ours.
"""

import json
import sys
import time
from pathlib import Path

from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig


def main(encoder_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    started = time.perf_counter()
    model = ORTModelForFeatureExtraction.from_pretrained(encoder_dir, export=True)
    model.save_pretrained(out / "fp32")
    graphs = {"optimum_fp32": str(out / "fp32" / "model.onnx")}
    presets = {
        "optimum_int8_avx512_vnni": AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True),
        "optimum_int8_avx2": AutoQuantizationConfig.avx2(is_static=False, per_channel=True),
    }
    for name, qconfig in presets.items():
        quantizer = ORTQuantizer.from_pretrained(out / "fp32")
        path = quantizer.quantize(save_dir=out / name, quantization_config=qconfig)
        graphs[name] = str(next(Path(path).glob("*.onnx")))
    (out / "route.json").write_text(json.dumps({"graphs": graphs, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
