"""What this device's OpenVINO CPU kernel for routed experts (GatherMatmul) costs per expert-weight layout:
one mixture-of-experts block of a real model's shape, built by the converter's own convert/experts.py with
random weights in one layout at a time, timed for a decoded token and for a prefill of `--prefill` tokens
(best of several passes, one process), beside the dense FullyConnected that computes the same active
weights (a SwiGLU MLP of k·I: what the block would cost if gathering experts were free).

    python benchmarks/expert_kernels.py [--shape qwen3-30b-a3b] [--precision fast] [--prefill 512]

Why: a mixture's prefill on CPUs without AMX was 2× llama.cpp's (benchmarks/README.md, "Experts in int4, and
the AVX-512 kind"), its time mostly in GatherMatmul. This shows, per layout and precision, what the kernel
does with them (its `exec_type` from the profiler: the oneDNN/brgemm kernel it picked) and what it costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convert.experts import routed_experts, softmax_top_k  # noqa: E402
from ovgenai_chat.engine import choose_precision, describe_cpu_properties  # noqa: E402
from weight_formats import compressed_weight  # noqa: E402

# name → (hidden H, expert width I, experts E, experts per token k)
SHAPES = {"qwen3-30b-a3b": (2048, 768, 128, 8), "lfm2-8b-a1b": (2048, 1792, 32, 4),
          "granite-4.0-h-tiny": (1536, 512, 64, 6), "gpt-oss-20b": (2880, 2880, 32, 4)}
# name → (values, zero point, weights per group (0: per output channel), what it is)
LAYOUTS = {
    "i4 g128": ("i4", None, 128, "NNCF int4_sym g128 (ovchat's experts)"),
    "i4 per channel": ("i4", None, 0, "NNCF int4_sym, group_size -1"),
    "u4 u4-zp g128": ("u4", "u4", 128, "NNCF int4_asym g128"),
    "i8 per channel": ("i8", None, 0, "NNCF int8_sym"),
    "u8 u8-zp per channel": ("u8", "u8", 0, "NNCF int8_asym (--ratio 0)"),
    "f16": ("f16", None, 0, "uncompressed (--weight-format fp16)"),
}
PROPERTIES = {"fast": None, "accurate": None,
              "bf16": {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}}


def compressed(rng, shape: tuple, values: str, zero_point: str | None, group: int) -> tuple[ov.Output, int]:
    """A [.., N, K] weight as NNCF writes it (weight_formats.compressed_weight with f16 scales per group of `group`, 0:
    per output channel), or uncompressed f16; converted to f32; and its bytes."""
    if values == "f16":
        w = rng.standard_normal(shape, dtype=np.float32).astype(np.float16) * np.float16(0.02)
        return ops.convert(ops.constant(w), ov.Type.f32).output(0), w.nbytes
    return compressed_weight(rng, values, zero_point, "f16", group or shape[-1], shape)


class _Weights:
    """What routed_experts asks of the converter's LayerWeights, over the layout's random constants."""

    def __init__(self, made: dict, router: np.ndarray):
        self.made, self.router = made, router

    def key(self, name: str) -> str:
        return name

    def experts(self, name: str) -> ov.Output:
        return self.made[name]


def moe_block(shape: tuple, layout: tuple, rng) -> tuple[ov.Model, int]:
    hidden, width, experts, per_token = shape
    made, size = {}, 0
    for name, dims in (("gate_proj", (experts, width, hidden)), ("up_proj", (experts, width, hidden)),
                       ("down_proj", (experts, hidden, width))):
        made[f"moe.{name}"], nbytes = compressed(rng, dims, *layout[:3])
        size += nbytes
    w = _Weights(made, rng.standard_normal((experts, hidden), dtype=np.float32) * 0.02)
    x = ops.parameter([1, -1, hidden], np.float32, name="x")
    route = lambda x2d: softmax_top_k(ops.matmul(x2d, ops.constant(w.router), False, True), per_token)  # noqa: E731
    out = routed_experts(x, w, "moe", experts, route)
    return ov.Model([ops.result(out)], [x]), size


def dense_mlp(shape: tuple, layout: tuple, rng) -> ov.Model:
    """A SwiGLU MLP of the k experts' width: the same active weights, computed by FullyConnected."""
    hidden, width, _, per_token = shape
    x = ops.parameter([1, -1, hidden], np.float32, name="x")
    w = {name: compressed(rng, dims, *layout[:3])[0] for name, dims in
         (("gate", (per_token * width, hidden)), ("up", (per_token * width, hidden)), ("down", (hidden, per_token * width)))}
    h = ops.multiply(ops.swish(ops.matmul(x, w["gate"], False, True)), ops.matmul(x, w["up"], False, True))
    return ov.Model([ops.result(ops.matmul(h, w["down"], False, True))], [x])


def timed(core: ov.Core, model: ov.Model, properties: dict, tokens: list[int], hidden: int) -> tuple[dict, str]:
    """({tokens: best ms per pass}, the kernels of the expert/FC nodes by the profiler)."""
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "PERF_COUNT": True,
                                                 **properties})
    request, ms, rng = compiled.create_infer_request(), {}, np.random.default_rng(1)
    for count in tokens:
        rows = rng.standard_normal((1, count, hidden), dtype=np.float32)
        passes = max(3, min(30, 3000 // count))
        for _ in range(2):
            request.infer([rows])
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(passes):
                request.infer([rows])
            best = min(best, (time.perf_counter() - start) / passes)
        ms[count] = best * 1000
    kernels = sorted({f"{info.node_type}:{info.exec_type}" for info in request.profiling_info
                      if info.node_type.startswith("GatherMatmul")})
    return ms, " ".join(kernels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="qwen3-30b-a3b")
    parser.add_argument("--precision", default="fast", help=f"comma-separated, of {', '.join(PROPERTIES)}")
    parser.add_argument("--prefill", type=int, default=512, help="tokens in the prefill pass")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated, of: " + ", ".join(LAYOUTS))
    args = parser.parse_args()
    shape, tokens = SHAPES[args.shape], [1, args.prefill]
    hidden, width, experts, per_token = shape
    core = ov.Core()
    print(f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}, OpenVINO {ov.__version__}; {args.shape}: hidden {hidden}, "
          f"{experts} experts of {width}, {per_token} per token")
    print(f"| precision | layout | MB per token | decode ms: experts / dense | prefill {args.prefill} ms: experts / dense "
          "| experts' kernels |")
    print("|---|---|---|---|---|---|")
    for precision in args.precision.split(","):
        properties = PROPERTIES[precision] or choose_precision(precision, "CPU", 10**10).properties
        for name in args.layouts.split(","):
            layout = LAYOUTS[name]
            rng = np.random.default_rng(0)
            block, size = moe_block(shape, layout, rng)
            moe, kernels = timed(core, block, properties, tokens, hidden)
            dense, _ = timed(core, dense_mlp(shape, layout, rng), properties, tokens, hidden)
            print(f"| {precision} ({describe_cpu_properties(properties)}) | {name} | {size * per_token / experts / 1e6:.1f} "
                  f"| {moe[1]:.2f} / {dense[1]:.2f} | {moe[args.prefill]:.1f} / {dense[args.prefill]:.1f} | {kernels} |",
                  flush=True)


if __name__ == "__main__":
    main()
