"""Where one decode step of a model goes on this CPU: the compiled model run directly (no GenAI loop)
with PERF_COUNT on, after a 20-token prefill; the wall time of a step, the nodes it executed, the time
per node type and the time outside the nodes (the infer request's own work); then, per weight format
of the matrix layers (int4, int8, …), the bytes each token reads from them, their time and the rate
they read at, which says whether a format's kernel keeps up with the memory. Routed experts are
GatherMatmul nodes, listed apart ("experts int4_sym_g128", …): a token reads k/E of their stacked
weights (bench.py's routed_share). --prefill N also profiles one prefill of N tokens by node type.

PERF_COUNT times each node on its own; nodes of a few µs come out slower than they run without it
(removing Qwen3.5-0.8B's 36 state Gathers, 0.5–1.2 ms here, changed the wall time by under 0.3 ms),
so trust the large nodes and the wall time.

    python benchmarks/decode_profile.py MODEL_DIR [--precision accurate|fast|defaults] [--steps 40] [--top 8]
                                        [--prefill N]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import routed_share  # noqa: E402
from convert.compress import weight_bytes, weight_layers, weight_precision  # noqa: E402
from ovgenai_chat.engine import Precision, choose_precision  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--precision", choices=("accurate", "fast", "defaults"), default="accurate")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--top", type=int, default=8, help="how many node types and nodes to list")
    parser.add_argument("--prefill", type=int, default=0, help="also profile one prefill of this many tokens")
    args = parser.parse_args()

    precision = choose_precision(args.precision, "CPU", 0) if args.precision != "defaults" else Precision("defaults", {}, "the CPU plugin's")
    core = ov.Core()
    model = core.read_model(args.model_dir / "openvino_model.xml")
    compiled = core.compile_model(model, "CPU", {
        "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, **precision.properties})
    request = compiled.create_infer_request()

    def step(ids: np.ndarray, past: int) -> float:
        n = ids.shape[1]
        inputs = {"input_ids": ids, "attention_mask": np.ones((1, past + n), np.int64),
                  "position_ids": np.arange(past, past + n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
        start = time.perf_counter()
        request.infer(inputs)
        return (time.perf_counter() - start) * 1000

    def by_node_type(what: str, wall: float) -> list:
        executed = [p for p in request.profiling_info if p.status == ov.ProfilingInfo.Status.EXECUTED]
        by_type = collections.defaultdict(lambda: [0, 0.0])
        for p in executed:
            by_type[p.node_type][0] += 1
            by_type[p.node_type][1] += p.real_time.total_seconds() * 1000
        in_nodes = sum(ms for _, ms in by_type.values())
        print(f"{what}: {wall:.2f} ms; it ran {len(executed)} nodes in {in_nodes:.2f} ms, {wall - in_nodes:.2f} ms outside them")
        for node_type, (count, ms) in sorted(by_type.items(), key=lambda item: -item[1][1])[:args.top]:
            print(f"  {node_type:36} {count:4} nodes {ms:8.2f} ms ({ms / count * 1000:7.1f} µs each)")
        return executed

    print(f"{args.model_dir}, {precision.describe()}")
    if args.prefill:
        step(np.full((1, 20), 100, np.int64), 0)  # the first inference prepares the weights
        request.reset_state()
        by_node_type(f"one prefill of {args.prefill} tokens", step(np.arange(args.prefill, dtype=np.int64)[None] % 1000 + 100, 0))
        request.reset_state()
    step(np.full((1, 20), 100, np.int64), 0)
    walls = [step(np.array([[200 + i]], np.int64), 20 + i) for i in range(args.steps)]
    executed = by_node_type(f"one decode step (median of {args.steps}, nodes of the last)", statistics.median(walls))
    weights = {name: (weight_precision(weight), weight)
               for name, weight in weight_layers(model).items()}
    share = routed_share(model)
    by_format = collections.defaultdict(lambda: [0, 0, 0.0])
    for p in executed:
        kind, weight = weights.get(p.node_name, ("other", None))
        experts = p.node_type.startswith("GatherMatmul")
        if kind != "other" and (p.node_type.startswith("FullyConnected") or experts):  # not the embedding's row lookup
            kind = f"experts {kind}" if experts else kind
            by_format[kind][0] += 1
            by_format[kind][1] += weight_bytes(weight) * (share(weight) if experts else 1)
            by_format[kind][2] += p.real_time.total_seconds()
    print("matrix layers by weight format:")
    for kind, (count, size, seconds) in sorted(by_format.items(), key=lambda item: -item[1][2]):
        print(f"  {kind:24} {count:4} layers {size / 1e6:8.1f} MB {seconds * 1000:7.2f} ms  {size / seconds / 1e9:5.1f} GB/s")
    print("slowest nodes:")
    for p in sorted(executed, key=lambda p: -p.real_time.total_seconds())[:args.top]:
        print(f"  {p.node_name[:60]:60} {p.exec_type:24} {p.real_time.total_seconds() * 1e6:6.0f} µs")


if __name__ == "__main__":
    main()
