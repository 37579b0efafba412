"""Which fused kernels the CPU plugin made of each model: node counts of the compiled runtime graph, per
layer type, side by side — say, `ovchat convert` beside optimum-cli's export of the same checkpoint.

    python benchmarks/fusions.py MODEL_DIR [MODEL_DIR ...]

A graph that misses a fusion (RMS, RoPE, ScaledDotProductAttention with its KV cache, FullyConnected
with compressed weights, gated MLP) shows it here as fewer fused nodes and more Eltwise/Multiply ones.
"""

from __future__ import annotations

import collections
import sys

import openvino as ov

FUSED = ("RMS", "RoPE", "ScaledDotProductAttention", "FullyConnected", "LLMMLP", "QKVProjection", "Eltwise",
         "MemoryInput", "Reorder", "Transpose", "Reshape", "Concatenation", "Gather")


def runtime_counts(core: ov.Core, model_dir: str) -> collections.Counter:
    compiled = core.compile_model(f"{model_dir}/openvino_model.xml", "CPU")
    return collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    core = ov.Core()
    counts = {model_dir: runtime_counts(core, model_dir) for model_dir in sys.argv[1:]}
    kinds = [kind for kind in FUSED if any(c[kind] for c in counts.values())]
    kinds += sorted({kind for c in counts.values() for kind in c} - set(kinds) - {"Const", "Input", "Output"})
    print("| layer type | " + " | ".join(counts) + " |")
    print("|---|" + "---|" * len(counts))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(str(c[kind]) for c in counts.values()) + " |")


if __name__ == "__main__":
    main()
