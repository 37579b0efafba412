"""How fast this device's OpenVINO CPU kernel reads each compressed-weight layout the converter can
emit: a chain of decode-shaped (one token) matrix multiplications, 4096×4096 each, with random weights
in one layout at a time, timed in one process (best of 7 × 30 passes), under the CPU properties of one
of ovchat's precisions (`--precision`: accurate, fast, or the plugin's defaults).

    python benchmarks/weight_formats.py [--layers 8] [--precision defaults|fast|accurate] [--tokens 1,2,4,8]

`--tokens` also times passes of several tokens at once — what verifying k drafted tokens costs a speculative
decoder (k + 1 rows) against decoding one: a kernel bound by reading its weights verifies them almost free, one
bound by arithmetic (unpacking int4) pays nearly per token, and that bounds every speculative method's gain.

Layouts are written as values + zero point + scale per group, the way GGUF blocks (Q4_0, Q4_1, Q8_0:
groups of 32) and NNCF's modes (int4_sym in groups of 128, int8_asym per output channel) become
decompression chains in the IR.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ovgenai_chat.engine import choose_precision, describe_cpu_properties  # noqa: E402

SIZE = 4096
NUMPY = {"f16": np.float16, "f32": np.float32}
# name → (values, zero point, scale precision, weights per group, what it is)
LAYOUTS = {
    "i4, f16 scale, groups of 128": ("i4", None, "f16", 128, "NNCF int4_sym g128 (ovchat convert's default)"),
    "u8, u8 zero point, f16 scale per channel": ("u8", "u8", "f16", SIZE, "NNCF int8_asym (the default's other 40%)"),
    "i4, f16 scale": ("i4", None, "f16", 32, "GGUF Q4_0 (its scale is f16)"),
    "i4, f32 scale": ("i4", None, "f32", 32, "GGUF Q4_0 as the converter writes it"),
    "u4, u8 zero point, f16 scale": ("u4", "u8", "f16", 32, "NNCF int4_asym (integer zero point)"),
    "u4, f32 zero point, f32 scale": ("u4", "f32", "f32", 32, "GGUF Q4_1 kept exactly (fractional zero point −m/d)"),
    "u4, f16 zero point, f16 scale": ("u4", "f16", "f16", 32, "Q4_1 with a rounded zero point"),
    "i8, f32 scale": ("i8", None, "f32", 32, "GGUF Q8_0 as the converter writes it"),
}


def compressed_weight(rng, values: str, zero_point: str | None, precision: str, group: int,
                      shape: tuple = (SIZE, SIZE)) -> tuple[ov.Output, int]:
    """values · scale (− zero point) per group of `group` along the last axis, reshaped to `shape` (a matrix, or
    stacked experts [E, N, K]); and its bytes in the IR. Zero points: integers (u4, u8) or `precision`-like floats."""
    *outer, columns = shape
    grouped, compute = (*outer, columns // group, group), getattr(ov.Type, precision)
    if values in ("i8", "u8"):
        raw = rng.integers(0, 256, grouped, dtype=np.uint8).view(np.int8 if values == "i8" else np.uint8)
        stored = ov.op.Constant(raw)
    else:  # two 4-bit values per byte
        raw = rng.integers(0, 256, (*grouped[:-1], group // 2), dtype=np.uint8)
        stored = ov.op.Constant(ov.Tensor(raw, list(grouped), getattr(ov.Type, values)), shared_memory=False)
    size = raw.nbytes
    x = ops.convert(stored, compute)
    per_group = (*grouped[:-1], 1)
    if zero_point == "u8":
        zp = rng.integers(0, 16, per_group, dtype=np.uint8)
        x = ops.subtract(x, ops.convert(ov.op.Constant(zp), compute))
        size += zp.nbytes
    elif zero_point == "u4":  # two per byte, as NNCF's int4_asym stores them
        zp = rng.integers(0, 256, (math.prod(per_group) + 1) // 2, dtype=np.uint8)
        x = ops.subtract(x, ops.convert(ov.op.Constant(ov.Tensor(zp, list(per_group), ov.Type.u4),
                                                       shared_memory=False), compute))
        size += zp.nbytes
    elif zero_point:
        zp = rng.uniform(0, 15, per_group).astype(NUMPY[zero_point])
        x = ops.subtract(x, ops.constant(zp))
        size += zp.nbytes
    scale = rng.uniform(0.001, 0.01, per_group).astype(NUMPY[precision])
    x = ops.reshape(ops.multiply(x, ops.constant(scale)), ops.constant(np.array(shape)), False)
    if precision != "f32":
        x = ops.convert(x, ov.Type.f32)
    return x.output(0), size + scale.nbytes


def time_layout(core: ov.Core, layout: tuple, layers: int, properties: dict,
                tokens: list[int]) -> tuple[dict[int, float], int]:
    """({tokens in a pass: ms per pass}, IR bytes) for a chain of `layers` matrix multiplications in `layout`."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, -1, SIZE], np.float32, name="x")
    h, total = x.output(0), 0
    for _ in range(layers):
        w, size = compressed_weight(rng, *layout[:4])
        h, total = ops.matmul(h, w, False, True).output(0), total + size
    compiled = core.compile_model(ov.Model([ops.result(h)], [x]), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, **properties})
    request, ms = compiled.create_infer_request(), {}
    for count in tokens:
        rows = rng.random((1, count, SIZE), dtype=np.float32)
        for _ in range(20):
            request.infer([rows])
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(30):
                request.infer([rows])
            best = min(best, (time.perf_counter() - start) / 30)
        ms[count] = best * 1000
    return ms, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="matrices in the chain (8: 128 M weights, past any cache)")
    parser.add_argument("--precision", choices=("defaults", "fast", "accurate"), default="defaults",
                        help="the CPU properties of this ovchat precision (defaults: the plugin's own)")
    parser.add_argument("--tokens", default="1", help="tokens per pass, comma-separated; the first is the baseline "
                        "the others' cost is given against (1,2,4,8,9: decoding one against verifying 1, 3, 7, 8 drafts)")
    args = parser.parse_args()
    tokens = [int(count) for count in args.tokens.split(",")]
    properties = {} if args.precision == "defaults" else choose_precision(args.precision, "CPU", 0).properties
    core = ov.Core()
    print(f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}, OpenVINO {ov.__version__}, "
          f"{args.precision}: {describe_cpu_properties(properties)}")
    more = tokens[1:]
    print(f"| layout | bits per weight | ms per pass of {tokens[0]} | GB/s of IR bytes |"
          + "".join(f" {count} tokens: cost × |" for count in more) + " is |")
    print("|---|---|---|---|" + "---|" * len(more) + "---|")
    for name, layout in LAYOUTS.items():
        ms, size = time_layout(core, layout, args.layers, properties, tokens)
        weights, base = SIZE * SIZE * args.layers, ms[tokens[0]]
        print(f"| {name} | {size * 8 / weights:.2f} | {base:.2f} | {size / base / 1e6:.1f} |"
              + "".join(f" {ms[count] / base:.2f} |" for count in more) + f" {layout[4]} |", flush=True)


if __name__ == "__main__":
    main()
