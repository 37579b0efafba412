"""What a Mamba-2 prefill costs on this CPU outside paged attention: the converter's selective scan
(convert.graph.selective_scan, the Loop GenAI's paged conversion fuses into PagedSelectiveSSM) as the
stateful SDPA path runs it, a TensorIterator, against the same scan in chunks (SSD, below), for one layer
at Granite-4.0-H-Tiny's Mamba shapes; both checked equal on the first token count.

Assumed from the published Granite-4.0-H-Tiny config (not read from a file here): hidden 1536, mamba_expand 2,
mamba_n_heads 48 × mamba_d_head 64 (= 2 × 1536), mamba_d_state 128, mamba_n_groups 1. The Loop's inputs
hold dt·B ⊗ x for every token, [T, 48, 64, 128] f32: 1.5 MiB a token, 3 GiB at 2048 tokens.

    python benchmarks/mamba_scan.py [--tokens 512 2048] [--repeats 3] [--chunk 64]
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADS, HEAD_DIM, STATE, GROUPS = 48, 64, 128, 1


def chunked_selective_scan(x, dt, a, b, c, state, chunk: int = 64):
    """The same scan in chunks of `chunk` tokens (state space duality, Dao & Gu 2024; transformers' torch_forward
    and llama.cpp prefill this way): within a chunk a masked, decayed C·Bᵀ product, across chunks through the
    states at their ends. It is exact (the first count's y below), but the converter cannot emit it beside the
    Loop: a graph scanning one token (decoding, and every row of paged attention, which feeds tokens as batch
    rows of length 1) with the Loop and longer inputs with these chunks, the state passed from one to the other,
    matches transformers under SDPA, yet GenAI's PagedSelectiveSSMFusion rewires whatever reads the Loop's state
    output to the state's Gather(ReadValue, beam_idx), expecting only the Assign it then drops; the chunks keep
    beam_idx in use and the paged model fails validation ("Model references undeclared parameters: beam_idx").
    Running these chunks on the SDPA backend would take rewriting the IR as it is loaded."""
    import openvino.opset13 as ops

    from convert.graph import INT_MAX, scalar, vector

    heads, head_dim = (x.get_partial_shape()[i].get_length() for i in (2, 3))
    groups, state_size = (b.get_partial_shape()[i].get_length() for i in (2, 3))
    steps = ops.gather(ops.shape_of(x), vector([1]), scalar(0))
    pad = ops.mod(ops.subtract(scalar(chunk), ops.mod(steps, scalar(chunk))), scalar(chunk))

    def chunked(v, trailing):  # [B, T, H, *trailing] → [B, H, chunks, chunk, *trailing], zero-padded in time
        rank = 3 + len(trailing)
        pads_end = ops.concat([vector([0]), pad, vector([0] * (rank - 2))], 0)
        v = ops.pad(v, vector([0] * rank), pads_end, "constant", scalar(0.0, np.float32))
        v = ops.reshape(v, vector([0, -1, chunk, heads, *trailing]), special_zero=True)
        return ops.transpose(v, vector([0, 3, 1, 2, *range(4, 4 + len(trailing))]))

    def per_head(v):
        tiled = ops.tile(ops.unsqueeze(v, scalar(3)), vector([1, 1, 1, heads // groups, 1]))
        return ops.reshape(tiled, vector([0, 0, -1, state_size]), special_zero=True)

    dtc = chunked(dt, [])  # [B, H, K, L]
    xdt = ops.multiply(chunked(x, [head_dim]), ops.unsqueeze(dtc, scalar(-1)))  # [B, H, K, L, P]
    bc, cc = chunked(per_head(b), [state_size]), chunked(per_head(c), [state_size])  # [B, H, K, L, N]
    cum = ops.cumsum(ops.multiply(dtc, ops.constant(a.reshape(1, heads, 1, 1))), scalar(-1))  # [B, H, K, L]

    # Within a chunk: y_l = Σ_{s ≤ l} exp(cum_l − cum_s) (C_l·B_s) dt_s x_s
    lower = ops.constant(np.tril(np.ones((chunk, chunk), bool)))
    gaps = ops.subtract(ops.unsqueeze(cum, scalar(-1)), ops.unsqueeze(cum, scalar(-2)))
    decay = ops.exp(ops.select(lower, gaps, scalar(-np.inf, np.float32)))
    scores = ops.multiply(ops.matmul(cc, bc, False, True), decay)
    y = ops.matmul(scores, xdt, False, False)

    # Each chunk's own contribution to the state at its end, then the states at every chunk's start
    last = ops.slice(cum, vector([-1]), vector([INT_MAX]), vector([1]), vector([3]))  # [B, H, K, 1]
    to_end = ops.exp(ops.subtract(last, cum))
    own = ops.matmul(xdt, ops.multiply(bc, ops.unsqueeze(to_end, scalar(-1))), True, False)  # [B, H, K, P, N]
    own = ops.reshape(own, vector([0, 0, 0, head_dim * state_size]), special_zero=True)
    first = ops.reshape(state, vector([0, heads, 1, head_dim * state_size]), special_zero=True)
    states = ops.concat([first, own], 2)  # [B, H, K+1, P·N]
    zeros = ops.broadcast(scalar(0.0, np.float32), ops.concat([ops.gather(ops.shape_of(cum), vector([0, 1]), scalar(0)), vector([1])], 0))
    totals = ops.cumsum(ops.concat([zeros, ops.squeeze(last, scalar(-1))], 2), scalar(-1))  # [B, H, K+1]
    k1 = ops.gather(ops.shape_of(states), vector([2]), scalar(0))
    idx = ops.range(scalar(0), ops.squeeze(k1, scalar(0)), scalar(1), output_type="i64")
    earlier = ops.greater_equal(ops.unsqueeze(idx, scalar(1)), ops.unsqueeze(idx, scalar(0)))
    chunk_gaps = ops.subtract(ops.unsqueeze(totals, scalar(-1)), ops.unsqueeze(totals, scalar(-2)))
    carried = ops.matmul(ops.exp(ops.select(earlier, chunk_gaps, scalar(-np.inf, np.float32))), states, False, False)
    starts = ops.slice(carried, vector([0]), vector([-1]), vector([1]), vector([2]))
    final = ops.reshape(ops.gather(carried, ops.subtract(ops.squeeze(k1, scalar(0)), scalar(1)), scalar(2)),
                        vector([0, heads, head_dim, state_size]), special_zero=True)
    starts = ops.reshape(starts, vector([0, 0, 0, head_dim, state_size]), special_zero=True)  # [B, H, K, P, N]

    # What the chunk's start state gives each token: exp(cum_l) C_l·S
    from_start = ops.multiply(ops.matmul(cc, starts, False, True), ops.unsqueeze(ops.exp(cum), scalar(-1)))
    y = ops.transpose(ops.add(y, from_start), vector([0, 2, 3, 1, 4]))  # [B, K, L, H, P]
    y = ops.reshape(y, vector([0, -1, heads, head_dim]), special_zero=True)
    y = ops.slice(y, vector([0]), steps, vector([1]), vector([1]))
    return y.output(0), final.output(0)



def scan_model(scan):
    """One layer's scan: x, dt, B, C and the state in; y and the next state out."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, -1, HEADS, HEAD_DIM], np.float32, name="x")
    dt = ops.parameter([1, -1, HEADS], np.float32, name="dt")
    b, c = (ops.parameter([1, -1, GROUPS, STATE], np.float32, name=n) for n in ("b", "c"))
    state = ops.parameter([1, HEADS, HEAD_DIM, STATE], np.float32, name="state")
    a = -np.arange(1, HEADS + 1, dtype=np.float32) / HEADS
    y, state_out = scan(x.output(0), dt.output(0), a, b.output(0), c.output(0), state.output(0))
    return ov.Model([ops.result(y), ops.result(state_out)], [x, dt, b, c, state])


def main() -> None:
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args()
    from convert.graph import selective_scan

    forms = {"Loop (as converted)": selective_scan,
             f"chunks of {args.chunk}": functools.partial(chunked_selective_scan, chunk=args.chunk)}
    rng = np.random.default_rng(0)
    inputs = {tokens: {"x": rng.standard_normal((1, tokens, HEADS, HEAD_DIM), np.float32),
                       "dt": rng.uniform(0.001, 0.1, (1, tokens, HEADS)).astype(np.float32),
                       "b": rng.standard_normal((1, tokens, GROUPS, STATE), np.float32),
                       "c": rng.standard_normal((1, tokens, GROUPS, STATE), np.float32),
                       "state": np.zeros((1, HEADS, HEAD_DIM, STATE), np.float32)}
              for tokens in args.tokens}
    reference = None
    for form, scan in forms.items():
        compiled = ov.Core().compile_model(scan_model(scan), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                     "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        kinds = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
        print(f"{form}:", "runs as a TensorIterator" if kinds["TensorIterator"] else "no TensorIterator")
        for tokens in args.tokens:
            times = []
            for _ in range(args.repeats):
                request = compiled.create_infer_request()
                start = time.perf_counter()
                y = request.infer(inputs[tokens])[0]
                times.append(time.perf_counter() - start)
            if tokens == args.tokens[0]:
                if reference is None:
                    reference = y.copy()
                print(f"  max |y − Loop's y| = {float(np.abs(y - reference).max()):.1e} of {float(np.abs(reference).max()):.1f}")
            best = min(times) * 1e3
            print(f"  {tokens} tokens: {best:.0f} ms for one layer's scan (best of {args.repeats}), {best / tokens:.3f} ms a token")


if __name__ == "__main__":
    main()
