"""What each CPU precision setting keeps and costs: greedy replies identical to a reference, TTFT on
everyday prompts and on long ones, TPOT and the process's first inference, for one model directory,
on this CPU and on the CPUs the plugin's ISA caps stand in for.

    python benchmarks/precision.py MODEL_DIR [--reference REF_DIR] [--prompts 20] [--new-tokens 32]
                                   [--long 1024] [--long-reps 3] [--settings accurate,fast,...]
                                   [--isa native,AVX512_CORE_VNNI,AVX2] [--json FILE]

--isa runs every setting again with the CPU plugin and oneDNN capped to that instruction set
(OV_CPU_MAX_ISA, ONEDNN_MAX_CPU_ISA): AVX512_CORE_VNNI stands in for an AVX512 CPU without bf16 (Ice
Lake, Zen 3 has none: use AVX2), AVX2 for most laptops' CPUs. Settings in bf16 are skipped where the
capped CPU has no bf16. Each setting runs in a process of its own, so "first" is that process's first
inference (the plugin prepares its kernels' weights then).

The reference is REF_DIR (say, an fp32 conversion of the same checkpoint; default: MODEL_DIR itself)
run with f32 activations, an f32 KV cache and no int8 activation quantization — the setting whose
logits equal transformers' (tests/test_parity.py). A reply counts as agreeing when its NEW_TOKENS
greedy tokens are the reference's, token for token. Every setting runs with the runtime's pipeline
properties (LATENCY hint, one stream, the SDPA backend), after one warm-up request, so the one-time
kernel preparation of a process is not in the figures. The last line says which setting
`ovchat run --precision auto` picks for this model.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench import prompt_text  # noqa: E402
from ovgenai_chat.engine import ACCURATE, PIPELINE_PROPERTIES, model_precision, parameter_count  # noqa: E402

# Short everyday questions, the kind a chat model gets first. tests/test_fidelity.py asks them too.
EVERYDAY_PROMPTS = [
    "What is the capital of France?",
    "How many days are there in a leap year?",
    "Give me three tips for better sleep.",
    "What is the boiling point of water in Fahrenheit?",
    "Write a haiku about autumn leaves.",
    "Who wrote Romeo and Juliet?",
    "Explain what a noun is in one sentence.",
    "What is 12 times 8?",
    "Suggest a name for a friendly golden retriever.",
    "Why is the sky blue?",
    "What should I pack for a weekend at the beach?",
    "Translate 'good morning' into Spanish.",
    "What is photosynthesis?",
    "Name three primary colors.",
    "How do I boil an egg?",
    "What is the largest planet in our solar system?",
    "Write a short thank-you note to a teacher.",
    "What does a thermometer measure?",
    "Give me a simple recipe for pancakes.",
    "What is the difference between weather and climate?",
]

# name → CPU properties, from the most faithful to the CPU plugin's defaults (bf16 activations where the
# CPU has bf16, a u8 KV cache, int8 activations with compressed weights: "fast"). In the names, act is
# the activations' precision and dq the int8 dynamic quantization of activations.
SETTINGS = {
    "accurate": ACCURATE,
    "f32-act/f16-kv": {**ACCURATE, "KV_CACHE_PRECISION": "f16"},
    "f32-act/u8-kv": {**ACCURATE, "KV_CACHE_PRECISION": "u8"},
    "f32-act/dq/u8-kv": {"INFERENCE_PRECISION_HINT": "f32"},
    "f32-act/dq128/u8-kv": {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128},
    "f32-act/dq128/f16-kv": {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128,
                             "KV_CACHE_PRECISION": "f16"},
    "bf16-act/f32-kv": {**ACCURATE, "INFERENCE_PRECISION_HINT": "bf16"},
    "bf16-act/u8-kv": {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0},
    "defaults": {},
    "fast": None,  # what `ovchat run --precision fast` picks for this model on this CPU (engine.model_precision)
}
ISA_CAPS = ("native", "AVX512_CORE_AMX", "AVX512_CORE_BF16", "AVX512_CORE_VNNI", "AVX512_CORE", "AVX2")


def templated(tokenizer, text: str) -> ov.Tensor:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False).input_ids


def greedy(n: int, ignore_eos: bool = False) -> openvino_genai.GenerationConfig:
    return openvino_genai.GenerationConfig(max_new_tokens=n, do_sample=False, ignore_eos=ignore_eos)


def setting_properties(name: str, model_dir: str) -> dict:
    if SETTINGS[name] is not None:
        return SETTINGS[name]
    return model_precision("fast", "CPU", Path(model_dir)).properties


def run_setting(model_dir: str, properties: dict, prompts: list[ov.Tensor], new_tokens: int,
                long_prompts: list[ov.Tensor]) -> dict:
    pipe = openvino_genai.LLMPipeline(model_dir, "CPU", **PIPELINE_PROPERTIES, **properties)
    started = time.perf_counter()
    pipe.generate(prompts[0], greedy(1))  # the first request of a process prepares kernels
    row = {"first_inference_s": time.perf_counter() - started}
    replies, ttfts, tpots = [], [], []
    for ids in prompts:
        result = pipe.generate(ids, greedy(new_tokens))
        replies.append(list(result.tokens[0]))
        ttfts.append(result.perf_metrics.get_ttft().mean)
        tpots.append(result.perf_metrics.get_tpot().mean)
    row.update(replies=replies, ttft_ms=statistics.median(ttfts), tpot_ms=statistics.median(tpots),
               prompt_tokens=statistics.median(ids.get_shape()[1] for ids in prompts))
    if long_prompts:
        row["long_ttft_ms"] = statistics.median(pipe.generate(ids, greedy(2, ignore_eos=True)).perf_metrics.get_ttft().mean
                                                for ids in long_prompts)
    del pipe
    gc.collect()
    return row


def capped(isa: str) -> dict:
    """The environment of a process whose CPU plugin and oneDNN use at most `isa`."""
    env = dict(os.environ)
    env.pop("OV_CPU_MAX_ISA", None), env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "native":
        env["OV_CPU_MAX_ISA"] = env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def in_process_of_its_own(args, setting: str, isa: str, model_dir: str) -> dict:
    """run_setting in a fresh process under the ISA cap `isa` (the caps are read when the plugin loads)."""
    command = [sys.executable, __file__, model_dir, "--one", setting, "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens), "--long", str(args.long), "--long-reps", str(args.long_reps)]
    done = subprocess.run(command, env=capped(isa), capture_output=True, text=True)
    if done.returncode:
        return {"failed": (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--reference", help="model directory whose exact replies are the reference [default: MODEL_DIR]")
    parser.add_argument("--prompts", type=int, default=len(EVERYDAY_PROMPTS), help="how many everyday prompts")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--long", type=int, default=1024, help="tokens of the long prompts (0: none)")
    parser.add_argument("--long-reps", type=int, default=3, help="long prompts (distinct) whose median TTFT is reported")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from: " + ", ".join(SETTINGS))
    parser.add_argument("--isa", default="native", help="comma-separated ISA caps from: " + ", ".join(ISA_CAPS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run this one setting here and print its row as JSON
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    names, caps = args.settings.split(","), args.isa.split(",")
    if unknown := [name for name in names if name not in SETTINGS] + [isa for isa in caps if isa not in ISA_CAPS]:
        parser.error(f"unknown settings or ISA caps: {', '.join(unknown)}")

    tokenizer = openvino_genai.Tokenizer(args.model_dir)
    prompts = [templated(tokenizer, text) for text in EVERYDAY_PROMPTS[:args.prompts]]
    long_prompts = []
    for seed in range(args.long_reps if args.long else 0):
        ids = tokenizer.encode(prompt_text(args.long, seed), add_special_tokens=False).input_ids.data[:, :args.long]
        long_prompts.append(ov.Tensor(np.ascontiguousarray(ids)))
    if args.one:
        properties = setting_properties(args.one, args.model_dir)  # under this process's ISA cap
        print(json.dumps({"properties": properties, **run_setting(args.model_dir, properties, prompts, args.new_tokens,
                                                                   long_prompts)}))
        return

    started = time.perf_counter()
    reference = run_setting(args.reference or args.model_dir, ACCURATE, prompts, args.new_tokens, [])["replies"]
    print(f"reference: {args.reference or args.model_dir}, accurate ({time.perf_counter() - started:.0f} s)",
          file=sys.stderr)
    rows = []
    for isa in caps:
        kind = cpu_kind(isa)
        print(f"{isa}: {kind}", flush=True)
        for name in names:
            if "bf16" in name and kind == "f32":  # the plugin would emulate bf16
                continue
            row = in_process_of_its_own(args, name, isa, args.model_dir)
            if "failed" in row:
                print(f"  {name:22} failed: {row['failed']}", flush=True)
                continue
            same = sum(got == expected for got, expected in zip(row.pop("replies"), reference))
            rows.append({"isa": isa, "cpu_kind": kind, "setting": name, "agreement": same, "prompts": len(prompts), **row})
            long = f" · TTFT {row['long_ttft_ms']:.0f} ms at {args.long} tokens" if "long_ttft_ms" in row else ""
            print(f"  {name:22} {same:2}/{len(prompts)} identical · TTFT {row['ttft_ms']:.0f} ms at "
                  f"{row['prompt_tokens']:.0f} tokens{long} · TPOT {row['tpot_ms']:.1f} ms · first inference "
                  f"{row['first_inference_s']:.1f} s", flush=True)

    parameters = parameter_count(Path(args.model_dir) / "openvino_model.xml")
    auto = model_precision("auto", "CPU", Path(args.model_dir))
    print(f"auto on this model's CPU run: {auto.describe()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model_dir, "reference": args.reference or args.model_dir,
                                               "parameters": parameters, "auto": auto.name, "rows": rows}, indent=2))


def cpu_kind(isa: str) -> str:
    """engine.cpu_kind as a process under this ISA cap sees it."""
    done = subprocess.run([sys.executable, "-c", "from ovgenai_chat.engine import cpu_kind; print(cpu_kind())"],
                          env=capped(isa), capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return done.stdout.strip() or f"unknown ({done.stderr.strip().splitlines()[-1:]})"


if __name__ == "__main__":
    main()
