"""Latency of chat runtimes on this device, side by side: load (cold and warm), TTFT, TPOT,
throughput and peak RSS over a prompt-length × generation-length sweep and a multi-turn chat, with
the memory-bandwidth roofline.

    python benchmarks/bench.py [MODEL_DIR] [--reps 3] [--prompt-lengths 32,128,512,1024] [--gen-lengths 32,128]
                               [--json FILE] [--markdown FILE] [--plot FILE.png]
    python benchmarks/bench.py --synthetic phi-3-mini …   # a real model's shapes with random weights, offline
    python benchmarks/bench.py MODEL_DIR --draft NAME --prompt-lookup …  # ovchat with speculative decoding beside it

--synthetic SHAPE (benchmarks/synthetic.py's shapes) builds, once, into the user's cache directory: a
random-weight checkpoint of those shapes, its `ovchat convert` default int4 IR, and the same weights as an
F16 GGUF quantized to Q4_K_M by llama.cpp itself for the llama.cpp peer; then measures them. The F16
GGUF of a mixture of experts or a Mamba-2 hybrid is llama.cpp's convert_hf_to_gguf.py's (--convert-hf-to-gguf
SCRIPT). --llama-cpp PYTHON: an interpreter with llama-cpp-python (its own venv) that runs the llama.cpp peer
and the quantization.

Every measurement runs in a fresh process, the systems alternate within each repetition (so drift
hits all alike), and every request gets a prompt of its own (so prefix caching cannot flatter TTFT).
Systems:
  ovchat          this runtime's defaults (ovgenai_chat.engine.open_pipeline), in the precision of
                  --precision (default auto, as `ovchat run`)
  genai-default   openvino_genai.LLMPipeline with OpenVINO's defaults
  llama.cpp       llama-cpp-python on the model's GGUF, in --llama-cpp's interpreter
  optimum-intel   the notebook's path: OVModelForCausalLM.generate with the transformers tokenizer,
                  run by the interpreter of --optimum-python (benchmarks/install_peers.sh makes one)
  ovchat+draft    with --draft NAME|DIR: ovchat drafting with that draft model (docs/speculative.md)
  ovchat+prompt-lookup
                  with --prompt-lookup: ovchat drafting by prompt lookup; --draft-tokens K for either
Their records add draft_tokens, accepted_tokens and tokens_per_pass (GenAI's counts, as `ovchat run --json`). The
sweep's prompts are random words, which a reply rarely copies: prompt lookup's figures there are its cost where it
misses (benchmarks/prompt_lookup.py measures grounded tasks).
A system that is not installed is skipped with a one-line note; one whose process fails (say, llama.cpp
built for instructions this CPU lets it not use, which dies with SIGILL) is reported as `failed: <reason>`
and the others' results are kept. The JSON output follows
benchmarks/bench.schema.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "bench.schema.json"
DEFAULT_OPTIMUM_PYTHON = HERE / ".venv-optimum" / "bin" / "python"
WORDS = ("river mountain garden lantern violin harbor meadow thunder copper orchard canyon whisper "
         "glacier marble compass falcon ember prairie saddle tundra velvet willow").split()
QUESTIONS = [
    "What is the capital of France?",
    "What language do people speak there?",
    "Name a famous museum in that city.",
    "What is displayed in it?",
    "Suggest a day plan for a visit.",
    "And what should I eat for lunch?",
    "How do I get there from the airport?",
]
WARM_UP = (16, 8)  # the first request of a process compiles kernels; it is kept out of the figures


def prompt_text(length: int, seed: int) -> str:
    """Text of more than `length` tokens that no other request starts with."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return f"Request {seed}: " + " ".join(rng.choice(WORDS, size=length * 2))


def request_row(prompt_tokens: int, gen_tokens: int, ttft: float, tpot: float, wall_ms: float) -> dict:
    """One request's figures, in ms unless named."""
    return {
        "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "ttft_ms": ttft, "tpot_ms": tpot,
        "gen_tps": 1000 / tpot if tpot else None, "prompt_tps": prompt_tokens / ttft * 1000, "wall_ms": wall_ms,
        # the clock against the metrics: TTFT + (n-1)·TPOT should be the whole request
        "wall_vs_metrics": wall_ms / (ttft + (gen_tokens - 1) * tpot),
    }


def streamed_row(prompt_tokens: int, start: float, token_times: list[float]) -> dict:
    """A request timed on the wall clock, one time stamp per generated token."""
    ttft = (token_times[0] - start) * 1000
    tpot = (token_times[-1] - token_times[0]) * 1000 / max(1, len(token_times) - 1)
    return request_row(prompt_tokens, len(token_times), ttft, tpot, (token_times[-1] - start) * 1000)


class System:
    """What every system records beside its requests: when this process's first token came."""

    first_token_at: float | None = None  # time.time()

    def token_at(self, at: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = at


class GenAI(System):
    """LLMPipeline, with this runtime's settings (ovchat) or OpenVINO's (genai-default). Chat turns
    go in as a ChatHistory, as ovgenai_chat.Chat sends them: the pipeline reuses its KV cache."""

    def __init__(self, system: str, model_dir: str, gguf: str | None, plan: dict):
        import openvino_genai

        device = plan["device"]
        self.first_inference, self.drafter = None, None
        if system.startswith("ovchat"):
            from ovgenai_chat.engine import first_inference, open_pipeline
            from ovgenai_chat.speculative import choose

            # greedy, as every request here is
            self.drafter = choose(Path(model_dir), plan["draft"] if system == "ovchat+draft" else None,
                                  system == "ovchat+prompt-lookup", plan["draft_tokens"], no_draft=system == "ovchat",
                                  settings={"temperature": 0})
            self.pipe, _, _ = open_pipeline(model_dir, device, precision=plan["precision"], drafter=self.drafter)
            self.first_inference = first_inference  # as ovgenai_chat.Chat runs its first reply
        else:
            self.pipe = openvino_genai.LLMPipeline(model_dir, device)
        self.tokenizer = self.pipe.get_tokenizer()

    def _generate(self, inputs, gen: int):
        """generate(), with ovchat's handling of the process's first inference (engine.first_inference)
        around the first call, ended by the first streamed piece as ovgenai_chat.Chat ends it."""
        if self.first_inference is None:
            return self.pipe.generate(inputs, self._config(gen))
        with self.first_inference() as first_token:
            self.first_inference = None
            return self.pipe.generate(inputs, self._config(gen), lambda piece: first_token() or False)

    def _config(self, gen: int):
        config = self.pipe.get_generation_config()
        config.ignore_eos, config.max_new_tokens, config.do_sample = True, gen, False
        return self.drafter.configure(config) if self.drafter else config

    def _drafted(self, result) -> dict:
        """What a drafter did for `result`, for ovchat's drafted systems (the counts `ovchat run --json` gives)."""
        if self.drafter is None:
            return {}
        from ovgenai_chat.chat import speculation

        return dict(zip(("draft_tokens", "accepted_tokens", "tokens_per_pass"), speculation(result, self.drafter)))

    def request(self, length: int, gen: int, seed: int) -> dict:
        import numpy as np
        import openvino as ov

        ids = self.tokenizer.encode(prompt_text(length, seed), add_special_tokens=False).input_ids.data[:, :length]
        started_at, start = time.time(), time.perf_counter()
        result = self._generate(ov.Tensor(np.ascontiguousarray(ids)), gen)
        wall_ms = (time.perf_counter() - start) * 1000
        perf = result.perf_metrics
        self.token_at(started_at + perf.get_ttft().mean / 1000)
        return {**request_row(length, perf.get_num_generated_tokens(), perf.get_ttft().mean, perf.get_tpot().mean,
                              wall_ms), **self._drafted(result)}

    def chat(self, turns: int, gen: int) -> dict:
        import openvino_genai

        history = openvino_genai.ChatHistory()
        for question in QUESTIONS[:turns]:
            history.append({"role": "user", "content": question})
            started_at, start = time.time(), time.perf_counter()
            result = self._generate(history, gen)
            wall_ms = (time.perf_counter() - start) * 1000
            self.token_at(started_at + result.perf_metrics.get_ttft().mean / 1000)
            history.append({"role": "assistant", "content": result.texts[0]})
        perf = result.perf_metrics
        return {**request_row(perf.get_num_input_tokens(), perf.get_num_generated_tokens(), perf.get_ttft().mean,
                              perf.get_tpot().mean, wall_ms), **self._drafted(result)}


class LlamaCpp(System):
    """llama.cpp through llama-cpp-python, on the GGUF, with as many threads as OpenVINO uses."""

    def __init__(self, system: str, model_dir: str, gguf: str | None, plan: dict):
        from llama_cpp import Llama

        self.llm = Llama(model_path=gguf, n_ctx=4096, n_threads=os.cpu_count(), verbose=False)

    def _without_eos(self, input_ids, scores):
        scores[self.llm.token_eos()] = -float("inf")
        return scores

    def request(self, length: int, gen: int, seed: int) -> dict:
        # Timed by the sampled tokens themselves, not by streamed text: llama-cpp-python holds back text
        # that may be an incomplete UTF-8 character, and a random-weight model's bytes can keep every
        # token's text until the end (TPOT 0.01 ms, the whole reply in the TTFT).
        tokens = self.llm.tokenize(prompt_text(length, seed).encode(), add_bos=False)[:length]
        self.llm.reset()  # no prefix reuse between requests
        times, start = [], time.perf_counter()
        for _ in self.llm.generate(tokens, temp=0.0, logits_processor=[self._without_eos]):
            times.append(time.perf_counter())
            self.token_at(time.time())
            if len(times) == gen:
                break
        return streamed_row(length, start, times)

    def chat(self, turns: int, gen: int) -> dict:
        """llama-cpp-python keeps the KV cache of the longest prefix the next prompt shares."""
        self.llm.reset()
        messages = []
        for question in QUESTIONS[:turns]:
            messages.append({"role": "user", "content": question})
            times, pieces, start = [], [], time.perf_counter()
            for chunk in self.llm.create_chat_completion(messages, max_tokens=gen, temperature=0.0,
                                                         logits_processor=[self._without_eos], stream=True):
                if content := chunk["choices"][0]["delta"].get("content"):
                    times.append(time.perf_counter())
                    self.token_at(time.time())
                    pieces.append(content)
            messages.append({"role": "assistant", "content": "".join(pieces)})
        return streamed_row(self.llm.n_tokens - len(times), start, times)


class OptimumIntel(System):
    """The notebook's path: OVModelForCausalLM with its ov_config, generate() with torch tensors
    from the transformers tokenizer. Each chat turn sends the whole history, as the notebook does."""

    def __init__(self, system: str, model_dir: str, gguf: str | None, plan: dict):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        ov_config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "CACHE_DIR": ""}
        self.model = OVModelForCausalLM.from_pretrained(model_dir, device=plan["device"], ov_config=ov_config)

    def _generate(self, ids, gen: int) -> tuple[dict, list[int]]:
        class Clock:  # a streamer: generate() hands it the prompt first, then each new token
            def __init__(self):
                self.times, self.prompt_seen = [], False

            def put(self, value):
                if self.prompt_seen:
                    self.times.append(time.perf_counter())
                self.prompt_seen = True

            def end(self):
                pass

        clock, started_at, start = Clock(), time.time(), time.perf_counter()
        out = self.model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=gen,
                                  min_new_tokens=gen, do_sample=False, streamer=clock)
        self.token_at(started_at + (clock.times[0] - start))
        return streamed_row(ids.shape[1], start, clock.times), out[0, ids.shape[1]:].tolist()

    def request(self, length: int, gen: int, seed: int) -> dict:
        ids = self.tokenizer(prompt_text(length, seed), add_special_tokens=False, return_tensors="pt").input_ids
        return self._generate(ids[:, :length], gen)[0]

    def chat(self, turns: int, gen: int) -> dict:
        messages = []
        for question in QUESTIONS[:turns]:
            messages.append({"role": "user", "content": question})
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
            row, answer = self._generate(ids, gen)
            messages.append({"role": "assistant", "content": self.tokenizer.decode(answer, skip_special_tokens=True)})
        return row


SYSTEMS = {"ovchat": GenAI, "genai-default": GenAI, "llama.cpp": LlamaCpp, "optimum-intel": OptimumIntel}
DRAFTED = {"ovchat+draft": GenAI, "ovchat+prompt-lookup": GenAI}  # added by --draft / --prompt-lookup


def worker(system: str, mode: str, model_dir: str, gguf: str | None, plan: dict, seed: int) -> dict:
    """One process, one system. `chat`: start it (the cold start), then run the chat turns.
    `sweep`: start it (warm), warm it up, run the sweep. Load time counts the runtime's imports:
    a user waits for them too. The chat and the sweep need processes of their own: GenAI 2026.4's
    stateful pipeline crashes on a ChatHistory after a request of token ids, and after a chat it
    keeps every later request's tokens in its KV cache."""
    start = time.perf_counter()
    runtime = {**SYSTEMS, **DRAFTED}[system](system, model_dir, gguf, plan)
    result = {"load_s": time.perf_counter() - start, "requests": []}
    if mode == "chat" and plan["turns"]:
        result["requests"].append({"test": f"chat turn {plan['turns']}", **runtime.chat(plan["turns"], plan["chat_gen"])})
    if mode == "sweep":
        runtime.request(*WARM_UP, seed * 1000)
        result["requests"] = [{"test": f"pp{p}+tg{g}", **runtime.request(p, g, seed * 1000 + i + 1)}
                              for i, (p, g) in enumerate(plan["sweep"])]
    if runtime.first_token_at is not None:  # what a user waits for: the process's start to its first token
        result["first_token_s"] = runtime.first_token_at - plan["spawned_at"]
    return {**result, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over
    fork and exec, so a worker would report the benchmark parent's peak; psutil has no peak on Linux."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def weight_bytes_per_token(model_xml: Path) -> int:
    """Bytes of the constants a generated token reads: those feeding a MatMul's weight operand, through the
    decompression chain (Convert, Subtract, Multiply, Reshape; not the i64 shapes of its Reshapes). An
    untied embedding table is only gathered from, one row per token, so it does not count. Routed experts: a MatMul whose weight is
    stacked [E, N, K] computes only the k experts the router picks for the token (the CPU plugin's
    GatherMatmul), so its constants count k/E of their bytes, k the routers' TopK."""
    import openvino as ov

    chain = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose"}

    def weight_rank(node) -> int | None:
        """The rank of the MatMul operand `node` becomes through the decompression chain, or None."""
        for output in node.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                if consumer.get_type_name() == "MatMul" and target.get_index() == 1:  # the first operand: activations
                    return consumer.get_input_partial_shape(1).rank.get_length()
                if consumer.get_type_name() in chain and (rank := weight_rank(consumer)) is not None:
                    return rank
        return None

    model = ov.Core().read_model(model_xml)
    share = routed_share(model)
    total = 0.0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_output_element_type(0) == ov.Type.i64:
            continue
        if (rank := weight_rank(op)) is not None:
            count = 1
            for dim in op.get_output_shape(0):
                count *= dim
            total += count * op.get_output_element_type(0).bitwidth / 8 * (share(op) if rank == 3 else 1)
    return round(total)


def routed_share(model):
    """For a stacked expert constant [E, …]: the share of it one token reads, k/E, k the experts per token
    of the routers (the k of every TopK whose indices feed the ScatterElementsUpdate that spreads the
    routing weights over the experts)."""
    ks = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "TopK" and any(
                target.get_node().get_type_name() == "ScatterElementsUpdate" for target in op.output(1).get_target_inputs()):
            ks.add(int(op.input_value(1).get_node().get_data().item()))
    if len(ks) > 1:
        raise ValueError(f"routers pick different numbers of experts ({sorted(ks)}): no single k/E")

    def share(constant) -> float:
        if not ks:
            raise ValueError(f"{constant.get_friendly_name()} is a stacked expert weight but no router was found")
        return next(iter(ks)) / constant.get_output_shape(0)[0]
    return share


def gguf_bytes_per_token(path: str) -> int:
    """Bytes of the GGUF's tensors a generated token reads: all but the tables it only looks rows up in —
    Gemma 4's per-layer embeddings, and the token embedding when an output matrix of its own is there —,
    the routed experts' stacked tensors (`*_exps`) at k/E of their bytes (the file's expert_used_count /
    expert_count)."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    field = lambda key: reader.fields[f"{arch}.{key}"].contents() if f"{arch}.{key}" in reader.fields else None
    experts, used = field("expert_count"), field("expert_used_count")
    tensors = reader.tensors
    untied = any(t.name == "output.weight" for t in tensors)
    looked_up = {"per_layer_token_embd.weight", *(["token_embd.weight"] if untied else [])}
    return round(sum(int(t.n_bytes) * (used / experts if "_exps." in t.name else 1)
                     for t in tensors if t.name not in looked_up))


def lookup_bytes_per_token(model_xml: Path) -> dict[str, float]:
    """Per embedding table (the token embedding, Gemma 4's per-layer one): its bytes in the IR and the bytes
    one token's row of it reads (the table's constants over its rows)."""
    import openvino as ov

    from convert.compress import weight_bytes, weight_layers

    tables = {}
    for name, table in weight_layers(ov.Core().read_model(model_xml)).items():
        if name.startswith("model.embed_tokens"):
            table_bytes = weight_bytes(table)
            tables[name] = {"table_mb": table_bytes / 2**20, "bytes_per_token": table_bytes / table.get_output_shape(0)[0]}
    return tables


def header(model_dir: Path, gguf: str | None, optimum_python: Path, device: str) -> dict:
    import openvino as ov
    import openvino_genai

    from ovgenai_chat.engine import cpu_kind, cpu_name

    core = ov.Core()
    with open("/proc/meminfo") as f:
        memory_gb = int(f.readline().split()[1]) / 2**20
    return {
        "cpu": cpu_name(), "cpu_kind": cpu_kind(), "cores_used": os.cpu_count(),
        "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
        "openvino": ov.__version__, "openvino_genai": openvino_genai.__version__,
        "optimum_python": str(optimum_python), "devices": core.available_devices, "device": device,
        "inference_precision": core.get_property(device, "INFERENCE_PRECISION_HINT").to_string(),
        "kv_cache_precision": core.get_property(device, "KV_CACHE_PRECISION").to_string(),
        "attention_backend": {"ovchat": "SDPA (stateful)", "genai-default": "PA (paged)", "optimum-intel": "SDPA (stateful)",
                              **{system: "PA (paged), drafting" for system in DRAFTED}},
        "model": str(model_dir), "gguf": gguf,
        "weights_mb": (model_dir / "openvino_model.bin").stat().st_size / 2**20,
        "lookup_tables": lookup_bytes_per_token(model_dir / "openvino_model.xml"),
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(records: list[dict], processes: list[dict], bytes_per_token: dict, bandwidth_gbs: float) -> list[dict]:
    """Median / min / max over repetitions, per system and test."""
    rows = []
    for system in dict.fromkeys(r["system"] for r in records):
        mine = [p for p in processes if p["system"] == system]
        load = {kind: spread([p["load_s"] for p in mine if p["kind"] == kind]) for kind in ("cold", "warm")}
        first_token = {kind: [p["first_token_s"] for p in mine if p["kind"] == kind and p["first_token_s"]]
                       for kind in ("cold", "warm")}
        first_token = {kind: spread(values) if values else None for kind, values in first_token.items()}
        tests = dict.fromkeys(r["test"] for r in records if r["system"] == system)
        for test in sorted(tests, key=lambda name: name.startswith("chat")):  # the sweep, then the chat
            points = [r for r in records if r["system"] == system and r["test"] == test]
            row = {"system": system, "test": test, "reps": len(points),
                   "prompt_tokens": points[0]["prompt_tokens"], "gen_tokens": points[0]["gen_tokens"]}
            for key in ("ttft_ms", "tpot_ms", "gen_tps", "prompt_tps"):
                row[key] = spread([p[key] for p in points])
            if "tokens_per_pass" in points[0]:
                row["tokens_per_pass"] = spread([p["tokens_per_pass"] for p in points])
            row["load_cold_s"], row["load_warm_s"] = load["cold"], load["warm"]
            row["first_token_cold_s"], row["first_token_warm_s"] = first_token["cold"], first_token["warm"]
            row["peak_rss_mb"] = max(p["peak_rss_mb"] for p in mine)
            achieved = bytes_per_token[system] / (row["tpot_ms"]["median"] / 1000) / 1e9
            row["bandwidth_gbs"], row["roofline_fraction"] = achieved, achieved / bandwidth_gbs
            rows.append(row)
    return rows


def table(rows: list[dict], head: dict, bandwidth_gbs: float) -> str:
    """A llama-bench-like table: medians, with the range of the repetitions for the latencies."""
    def ranged(s: dict, digits: int) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    def median(s: dict | None, digits: int) -> str:
        return "–" if s is None else f"{s['median']:.{digits}f}"

    lines = [f"{head['cpu']} ({head['cpu_kind']}) · {head['cores_used']} cores · {head['memory_gb']} GB · OpenVINO {head['openvino']} · "
             f"GenAI {head['openvino_genai']} · {head['device']} · device defaults: precision "
             f"{head['inference_precision']}, KV {head['kv_cache_precision']} · ovchat: {head['ovchat_precision']}",
             f"Model {head['model']} ({head['weights_mb']:.0f} MB of weights); memory read bandwidth "
             f"{bandwidth_gbs:.1f} GB/s; {rows[0]['reps'] if rows else 0} repetitions", "",
             "| system | test | TTFT ms | TPOT ms | tok/s | tokens/pass | prompt tok/s | load cold s | load warm s "
             "| start → 1st token cold s | start → 1st token warm s | peak RSS MB | bandwidth | roofline |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['test']} | {ranged(r['ttft_ms'], 1)} | {ranged(r['tpot_ms'], 2)} | "
            f"{r['gen_tps']['median']:.1f} | {median(r.get('tokens_per_pass'), 2)} | {r['prompt_tps']['median']:.0f} | {r['load_cold_s']['median']:.2f} | "
            f"{r['load_warm_s']['median']:.2f} | {median(r['first_token_cold_s'], 2)} | "
            f"{median(r['first_token_warm_s'], 2)} | {r['peak_rss_mb']:.0f} | {r['bandwidth_gbs']:.1f} GB/s | "
            f"{r['roofline_fraction']:.0%} |")
    lines += ["", *ratios(rows)]
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    """ovchat against its peers, per test, on the medians."""
    def find(system: str, test: str) -> dict | None:
        return next((r for r in rows if r["system"] == system and r["test"] == test), None)

    lines = []
    # ovchat against each peer; each drafted ovchat against the plain one
    for system, peer in [("ovchat", peer) for peer in ("llama.cpp", "optimum-intel", "genai-default")] + [
            (drafted, "ovchat") for drafted in DRAFTED]:
        parts = []
        for mine in (r for r in rows if r["system"] == system):
            if other := find(peer, mine["test"]):
                parts.append(f"{mine['test']} TTFT {mine['ttft_ms']['median'] / other['ttft_ms']['median']:.2f}× "
                             f"TPOT {mine['tpot_ms']['median'] / other['tpot_ms']['median']:.2f}×")
                rss = mine["peak_rss_mb"] / other["peak_rss_mb"]
                first = ""
                if mine["first_token_warm_s"] and other["first_token_warm_s"]:
                    ratio = mine["first_token_warm_s"]["median"] / other["first_token_warm_s"]["median"]
                    first = f"; start → first token (warm cache) {ratio:.2f}×"
        if parts:
            lines.append(f"{system} / {peer}: " + "; ".join(parts) + first + f"; peak RSS {rss:.2f}×")
    return lines


def plot(rows: list[dict], path: str) -> None:
    """TTFT and TPOT against prompt length, one line per system and generation length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ttft, tpot) = plt.subplots(1, 2, figsize=(11, 4.2))
    sweep = [r for r in rows if r["test"].startswith("pp")]
    for system in dict.fromkeys(r["system"] for r in sweep):
        for gen in sorted({r["gen_tokens"] for r in sweep if r["system"] == system}):
            line = sorted((r for r in sweep if r["system"] == system and r["gen_tokens"] == gen),
                          key=lambda r: r["prompt_tokens"])
            x = [r["prompt_tokens"] for r in line]
            label = f"{system} tg{gen}"
            ttft.plot(x, [r["ttft_ms"]["median"] for r in line], marker="o", label=label)
            tpot.plot(x, [r["tpot_ms"]["median"] for r in line], marker="o", label=label)
    for axes, name in ((ttft, "TTFT ms"), (tpot, "TPOT ms")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("prompt tokens")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    ttft.set_yscale("log")
    tpot.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def available(system: str, gguf: str | None, optimum_python: Path, llama_cpp_python: Path) -> str | None:
    """Why `system` cannot run here, or None."""
    import importlib.util

    if system not in SYSTEMS and system not in DRAFTED:
        return f"unknown system (choose from {', '.join(SYSTEMS)})"
    if system == "llama.cpp":
        if gguf is None:
            return "no --gguf given"
        if llama_cpp_python == Path(sys.executable):
            if importlib.util.find_spec("llama_cpp") is None:
                return "llama-cpp-python is not installed (benchmarks/install_peers.sh)"
        elif subprocess.run([llama_cpp_python, "-c", "import llama_cpp"], capture_output=True).returncode != 0:
            return f"{llama_cpp_python} cannot import llama_cpp"
    if system == "optimum-intel":
        if not optimum_python.is_file():
            return f"no interpreter with optimum-intel at {optimum_python} (benchmarks/install_peers.sh)"
        probe = subprocess.run([optimum_python, "-c", "import optimum.intel, transformers"], capture_output=True)
        if probe.returncode != 0:
            return f"{optimum_python} cannot import optimum.intel"
    return None


class WorkerFailed(Exception):
    """A system's process failed; the message says how, in one line."""


def run_worker(python: Path, system: str, mode: str, model_dir: Path, gguf: str | None, plan: dict, seed: int,
               cache: str) -> dict:
    plan = {**plan, "spawned_at": time.time()}
    command = [str(python), __file__, str(model_dir), "--worker", system, mode, json.dumps(plan), str(seed)]
    if gguf:
        command += ["--gguf", gguf]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OVCHAT_CACHE_DIR": cache})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        how = (f"killed by {signal.Signals(-done.returncode).name}" if done.returncode < 0
               else f"exit status {done.returncode}")
        raise WorkerFailed(f"{how}: {last}" if done.stderr.strip() else how)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", help="default: the embedded SmolLM2 model")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--gguf", help="the GGUF llama.cpp runs (default model: its own GGUF)")
    parser.add_argument("--synthetic", metavar="SHAPE", help="measure a random-weight model of these shapes "
                        "(benchmarks/synthetic.py), built and cached on first use")
    parser.add_argument("--optimum-python", type=Path, default=DEFAULT_OPTIMUM_PYTHON,
                        help="an interpreter with optimum-intel, for the notebook's path")
    parser.add_argument("--llama-cpp", type=Path, default=Path(sys.executable), metavar="PYTHON",
                        help="an interpreter with llama-cpp-python (its own venv is fine), for the llama.cpp peer "
                        "and for quantizing --synthetic GGUFs (default: this one)")
    parser.add_argument("--convert-hf-to-gguf", type=Path, metavar="SCRIPT",
                        help="llama.cpp's convert_hf_to_gguf.py, which writes the GGUF of the --synthetic shapes "
                        "synthetic.py does not write itself (mixtures of experts, Mamba-2)")
    parser.add_argument("--device", default="auto", help="OpenVINO device for every OpenVINO system (auto: GPU if "
                        "present, else CPU, as ovchat picks); llama.cpp runs on the CPU")
    parser.add_argument("--precision", default="auto", choices=("auto", "accurate", "fast"),
                        help="the ovchat system's precision policy (as `ovchat run --precision`)")
    parser.add_argument("--draft", metavar="NAME|DIR", help="also measure ovchat drafting with this draft model")
    parser.add_argument("--prompt-lookup", action="store_true", help="also measure ovchat drafting by prompt lookup")
    parser.add_argument("--draft-tokens", type=int, metavar="K", help="candidates per pass for the drafted systems "
                        "[default: ovchat's]")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--prompt-lengths", default="32,128,512,1024")
    parser.add_argument("--gen-lengths", default="32,128")
    parser.add_argument("--turns", type=int, default=5, help="chat turns; the last one's TTFT is reported (0: none)")
    parser.add_argument("--chat-gen", type=int, default=32, help="tokens generated per chat turn")
    parser.add_argument("--json", default="bench-results.json", help="records and summaries (bench.schema.json)")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--plot", help="TTFT and TPOT against prompt length, as a PNG (needs matplotlib)")
    parser.add_argument("--worker", nargs=4, metavar=("SYSTEM", "MODE", "PLAN", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        system, mode, plan, seed = args.worker
        print(json.dumps(worker(system, mode, args.model_dir, args.gguf, json.loads(plan), int(seed))))
        return
    if not 0 <= args.turns <= len(QUESTIONS):
        parser.error(f"--turns must be between 0 and {len(QUESTIONS)}")
    if min(map(int, args.gen_lengths.split(","))) < 2 or args.chat_gen < 2:
        parser.error("generation lengths must be at least 2 tokens: TPOT needs two")

    from ovgenai_chat import engine, store

    import openvino as ov

    try:
        device, _ = engine.pick_device(args.device, ov.Core().available_devices)
    except engine.ModelError as e:
        parser.error(str(e))
    if args.synthetic:
        import synthetic

        if args.model_dir or args.synthetic not in synthetic.SHAPES:
            parser.error(f"--synthetic takes one of {', '.join(synthetic.SHAPES)}, and no MODEL_DIR")
        model_dir, built_gguf = synthetic.cached_models(args.synthetic, engine.cache_dir() / "synthetic" / args.synthetic,
                                                        convert_script=args.convert_hf_to_gguf, llama_cpp_python=args.llama_cpp)
        gguf = args.gguf or (str(built_gguf) if built_gguf else None)
    else:
        model_dir = Path(args.model_dir) if args.model_dir else engine.default_model_dir()
        gguf = args.gguf
        if gguf is None and not args.model_dir:
            gguf = str(engine.default_gguf())
    if args.draft:
        from ovgenai_chat.speculative import check_drafter_dir, check_pair

        try:
            check_pair(model_dir, check_drafter_dir(store.resolve(args.draft)))
        except engine.ModelError as e:
            parser.error(str(e))
    systems = []
    drafted = ["ovchat+draft"] * bool(args.draft) + ["ovchat+prompt-lookup"] * args.prompt_lookup
    for system in args.systems.split(",") + drafted:
        if why := available(system, gguf, args.optimum_python, args.llama_cpp):
            print(f"skipped {system}: {why}", file=sys.stderr)
        else:
            systems.append(system)
    plan = {"sweep": [(p, g) for p in map(int, args.prompt_lengths.split(",")) for g in map(int, args.gen_lengths.split(","))],
            "turns": args.turns, "chat_gen": args.chat_gen, "device": device, "precision": args.precision,
            "draft": args.draft and str(store.resolve(args.draft)), "draft_tokens": args.draft_tokens}
    head = header(model_dir, gguf, args.optimum_python, device)
    head["ovchat_precision"] = engine.model_precision(args.precision, device, model_dir).describe()
    from bandwidth import read_bandwidth_gbs

    print("measuring memory read bandwidth (benchmarks/bandwidth.py)…", file=sys.stderr)
    bandwidth = read_bandwidth_gbs()
    ir_bytes = weight_bytes_per_token(model_dir / "openvino_model.xml")
    bytes_per_token = {s: gguf_bytes_per_token(gguf) if s == "llama.cpp" else ir_bytes for s in systems}

    records, processes, failures = [], [], {}
    for rep in range(1, args.reps + 1):
        for system in [s for s in systems if s not in failures]:  # alternating, not in blocks
            python = {"optimum-intel": args.optimum_python, "llama.cpp": args.llama_cpp}.get(system, Path(sys.executable))
            with tempfile.TemporaryDirectory() as cache:  # cold: an empty compiled-model cache
                for kind, mode in (("cold", "chat"), ("warm", "sweep")):
                    print(f"rep {rep}/{args.reps}: {system}, {kind} start and {mode}…", file=sys.stderr, flush=True)
                    try:
                        result = run_worker(python, system, mode, model_dir, gguf, plan, rep, cache)
                    except WorkerFailed as e:  # this system's figures go; the others' stay
                        failures[system] = str(e)
                        print(f"failed {system}: {e}", file=sys.stderr, flush=True)
                        break
                    processes.append({"system": system, "rep": rep, "kind": kind, "load_s": result["load_s"],
                                      "first_token_s": result.get("first_token_s"),
                                      "peak_rss_mb": result["peak_rss_mb"]})
                    records += [{"system": system, "rep": rep, **r} for r in result["requests"]]
    records = [r for r in records if r["system"] not in failures]
    processes = [p for p in processes if p["system"] not in failures]
    rows = summarize(records, processes, bytes_per_token, bandwidth)
    report = {"schema": "ovgenai-chat bench 1", "header": head, "bandwidth_gbs": bandwidth,
              "bytes_per_token": bytes_per_token, "plan": plan, "processes": processes, "records": records,
              "summaries": rows, "failures": failures}
    Path(args.json).write_text(json.dumps(report, indent=2))
    text = table(rows, head, bandwidth) + "".join(f"\n{system}: failed: {why}" for system, why in failures.items())
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
