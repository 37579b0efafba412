"""What one decode step of Gated DeltaNet costs on this CPU: the fused GatedDeltaNet node the converter's Loop
becomes, against the same single-token update written as plain element-wise ops, for a stack of DeltaNet layers
whose state lives in the model (ReadValue/Assign, as in a converted Qwen3.5). The state is [Hv, Dk, Dv] f32 per
layer (1 MiB at Qwen3.5's 16 × 128 × 128), so memory alone would take ~0.1 ms per layer.

    python benchmarks/deltanet_step.py [--heads 16] [--dim 128] [--layers 18] [--tokens 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stack(heads: int, dim: int, layers: int, fused: bool):
    """`layers` DeltaNet updates of one token each, q/k/v/g/β inputs shared, each layer its own state."""
    import openvino as ov
    import openvino.opset13 as ops

    from convert.graph import Context, gated_delta_rule, read_state, vector, write_state

    q, k, v = (ops.parameter([1, -1, heads, dim], np.float32, name=n) for n in ("q", "k", "v"))
    g, beta = (ops.parameter([1, -1, heads], np.float32, name=n) for n in ("g", "beta"))
    ids = ops.parameter([-1, -1], np.int64, name="input_ids")  # gives the state's batch, as in a converted model
    ctx = Context(ids, ids, ids, ops.parameter([-1], np.int32, name="beam_idx"))
    outputs = []
    for layer in range(layers):
        state = read_state(f"state.{layer}", ctx, [heads, dim, dim])
        if fused:
            out, state = gated_delta_rule(q.output(0), k.output(0), v.output(0), g.output(0), beta.output(0), state)
        else:  # S ← S·e^g; S ← S + k ⊗ β(v − Sᵀk); o = Sᵀq, for one token (q, k normalised as the Loop does)
            def col(x):
                return ops.reshape(x, vector([1, heads, dim, 1]), special_zero=False)
            per_head = vector([1, heads, 1, 1])
            state = ops.multiply(state, ops.reshape(ops.exp(g), per_head, special_zero=False))
            recalled = ops.reduce_sum(ops.multiply(state, col(k)), vector([2]), keep_dims=True)
            delta = ops.multiply(ops.subtract(ops.reshape(v, vector([1, heads, 1, dim]), special_zero=False), recalled),
                                 ops.reshape(beta, per_head, special_zero=False))
            state = ops.add(state, ops.multiply(col(k), delta))
            out = ops.reduce_sum(ops.multiply(state, col(q)), vector([2]), keep_dims=True)
        write_state(state, f"state.{layer}", ctx)
        outputs.append(ops.result(out))
    return ov.Model(outputs, ctx.sinks, [q, k, v, g, beta, ids, ctx.beam_idx.get_node()])


def main() -> None:
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal(shape).astype(np.float32) * 0.1
              for name, shape in (("q", [1, 1, args.heads, args.dim]), ("k", [1, 1, args.heads, args.dim]),
                                  ("v", [1, 1, args.heads, args.dim]), ("g", [1, 1, args.heads]),
                                  ("beta", [1, 1, args.heads]))}
    inputs.update(beam_idx=np.zeros(1, np.int32), input_ids=np.zeros((1, 1), np.int64))
    for fused in (True, False):
        compiled = ov.Core().compile_model(stack(args.heads, args.dim, args.layers, fused), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        kinds = {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()}
        request = compiled.create_infer_request()
        for _ in range(10):
            request.infer(inputs)
        start = time.perf_counter()
        for _ in range(args.tokens):
            request.infer(inputs)
        step = (time.perf_counter() - start) / args.tokens * 1e3
        name = "fused GatedDeltaNet" if fused else "plain element-wise ops"
        print(f"{name}{' (fused node present)' if 'GatedDeltaNet' in kinds else ''}: {step:.2f} ms per token for "
              f"{args.layers} layers, {step / args.layers:.3f} ms per layer")


if __name__ == "__main__":
    main()
