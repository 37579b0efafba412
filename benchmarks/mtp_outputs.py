"""What a Gemma 4 target's drafter outputs (`ovchat convert --mtp-outputs`) cost plain greedy decoding: the
same weights converted with and without them, in one process, alternating, random prompts of a given length.

    python benchmarks/mtp_outputs.py PLAIN_DIR MTP_DIR [--prompt-tokens 32] [--new-tokens 32] [--reps 6]

Prints each run's TPOT, the medians, and how many attention layers the CPU plugin fused with their KV cache
in each (the outputs read two layers' whole keys and values, which that fusion does not allow).
"""

from __future__ import annotations

import argparse
import collections
import statistics

import numpy as np

# ovchat's `fast` properties without AMX (engine.FAST_WITHOUT_AMX) on its SDPA backend
PROPERTIES = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ATTENTION_BACKEND": "SDPA",
              "INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}


def fused_attention_layers(core, model_dir: str) -> int:
    compiled = core.compile_model(f"{model_dir}/openvino_model.xml", "CPU",
                                  {k: v for k, v in PROPERTIES.items() if k != "ATTENTION_BACKEND"})
    kinds = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
    return kinds["ScaledDotProductAttention"]


def main() -> None:
    import openvino as ov
    import openvino_genai

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plain")
    parser.add_argument("mtp")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    dirs = {"plain": args.plain, "mtp": args.mtp}
    core = ov.Core()
    for name, model_dir in dirs.items():
        print(f"{name}: {fused_attention_layers(core, model_dir)} attention layers fused with their KV cache")
    pipes = {name: openvino_genai.LLMPipeline(model_dir, "CPU", **PROPERTIES) for name, model_dir in dirs.items()}
    rng = np.random.default_rng(0)
    vocab = core.read_model(f"{args.plain}/openvino_model.xml").output("logits").get_partial_shape()[2].get_length()

    def prompt(length: int) -> ov.Tensor:
        return ov.Tensor(rng.integers(3, vocab, (1, length)))

    for pipe in pipes.values():  # the first inference prepares the weights: out of the timings
        pipe.generate(prompt(16), openvino_genai.GenerationConfig(max_new_tokens=4))
    config = openvino_genai.GenerationConfig(max_new_tokens=args.new_tokens, ignore_eos=True)
    tpot = {name: [] for name in pipes}
    for rep in range(args.reps):
        for name in ("plain", "mtp") if rep % 2 == 0 else ("mtp", "plain"):
            tpot[name].append(pipes[name].generate(prompt(args.prompt_tokens), config).perf_metrics.get_tpot().mean)
        print(rep, {name: f"{times[-1]:.1f} ms" for name, times in tpot.items()}, flush=True)
    print("median TPOT:", {name: f"{statistics.median(times):.1f} ms" for name, times in tpot.items()})


if __name__ == "__main__":
    main()
