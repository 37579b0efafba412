"""The smallest reproduction of the CPU plugin's slow first inference on int4 weights.

    python benchmarks/first_inference.py [--layers 24] [--formats i4_g128,u4_g128,i8,u8,f16]

A model of `--layers` compressed FullyConnected layers of Phi-3-mini's MLP shapes (8192×3072 and
3072×8192, alternating) in each weight format, built with OpenVINO's opset API as NNCF lays the
weights out ([out, groups, group] → Convert → (Subtract zero point) → Multiply f16 scale → MatMul with
transposed weights). Each format runs in a fresh process: compile, then the first inference (one token),
the second, and a 16-token one. The plugin prepares every weight matrix for its kernels on the first
inference, whatever its shape; the table shows what that costs per weight in each format.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SHAPES = ((8192, 3072), (3072, 8192))  # Phi-3-mini's gate/up and down projections
FORMATS = ("i4_g128", "u4_g128", "i8", "u8", "f16")


def build(fmt: str, layers: int):
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    kind, _, group = fmt.partition("_g")
    x = ops.parameter([-1, -1, SHAPES[0][1]], np.float32, name="x")
    y = x
    for layer in range(layers):
        rows, cols = SHAPES[layer % 2]
        if kind == "f16":
            weight = ops.constant(rng.standard_normal((rows, cols)).astype(np.float16))
            y = ops.matmul(y, ops.convert(weight, ov.Type.f32), False, True)
            continue
        element = getattr(ov.Type, kind)
        size = int(group) if group else cols
        packed = rng.integers(0, 256, rows * cols * element.bitwidth // 8, dtype=np.uint8)
        values = ov.op.Constant(ov.Tensor(packed, [rows, cols // size, size], element), shared_memory=False)
        weight = ops.convert(values, ov.Type.f16)
        if kind.startswith("u"):  # NNCF's asymmetric formats carry a zero point of the weights' type
            zero_points = rng.integers(0, 256, rows * (cols // size) * element.bitwidth // 8, dtype=np.uint8)
            zero_point = ov.op.Constant(ov.Tensor(zero_points, [rows, cols // size, 1], element), shared_memory=False)
            weight = ops.subtract(weight, ops.convert(zero_point, ov.Type.f16))
        scale = ops.constant((rng.random((rows, cols // size, 1)) * 0.01).astype(np.float16))
        weight = ops.reshape(ops.multiply(weight, scale), [rows, cols], False)
        y = ops.matmul(y, ops.convert(weight, ov.Type.f32), False, True)
    return ov.Model([y], [x]), layers * rows * cols


def measure(fmt: str, layers: int) -> dict:
    import numpy as np
    import openvino as ov

    model, weights = build(fmt, layers)
    started = time.perf_counter()
    request = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    times = {"weights": weights, "compile_s": time.perf_counter() - started}
    for label, tokens in (("first_s", 1), ("second_s", 1), ("sixteen_s", 16)):
        x = np.random.rand(1, tokens, SHAPES[0][1]).astype(np.float32)
        started = time.perf_counter()
        request.infer({0: x})
        times[label] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.layers)))
        return
    print("| format | weights | compile s | 1st inference s | ns per weight | 2nd inference s | 16 tokens s |")
    print("|---|---|---|---|---|---|---|")
    for fmt in args.formats.split(","):
        out = subprocess.run([sys.executable, __file__, "--layers", str(args.layers), "--worker", fmt],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"| {fmt} | failed: {(out.stderr.strip().splitlines() or ['?'])[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per_weight = (r["first_s"] - r["second_s"]) / r["weights"] * 1e9
        print(f"| {fmt} | {r['weights'] / 1e6:.0f} M | {r['compile_s']:.2f} | {r['first_s']:.2f} | {per_weight:.2f} | "
              f"{r['second_s']:.3f} | {r['sixteen_s']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
