"""What speculative decoding can pay a model on this device, before any drafter exists: the cost of one pass of
the model over k + 1 tokens (verifying k drafts) against a pass over one (decoding), measured on the model's own
compiled IR after a context, and the speed-up that follows for a drafter whose tokens are accepted at a rate a.

    python benchmarks/speculation.py MODEL_DIR [--context 256] [--drafts 8] [--precision auto|fast|accurate]
                                     [--draft-cost 0] [--gguf FILE --llama-cpp PYTHON]

A pass of k drafts accepted one by one at rate a yields (1 − a^(k+1)) / (1 − a) tokens (the accepted drafts and
the model's own next token) and costs t(k + 1) + k · c · t(1), where c is a draft token's cost against the
model's (0 for prompt lookup; an MTP head or a small draft model costs a layer or a small model's pass). The best
k for each a gives the speed-up and the time per output token it implies. `--gguf` also times llama.cpp's plain
decoding of the same weights (llama-cpp-python in PYTHON's venv), the figure to beat.

The passes run on the stateful SDPA graph, from a snapshot of the context's state restored before each pass
(the restore is not timed); GenAI verifies drafts on paged attention, whose fixed cost per pass is a little
higher, so these are an upper bound on what speculation pays here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ovgenai_chat.engine import PIPELINE_PROPERTIES, language_model, model_precision  # noqa: E402

ACCEPTANCE = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def pass_times(model_dir: Path, context: int, counts: list[int], precision: str, reps: int) -> dict[int, float]:
    """{tokens in a pass: best ms} for the model's IR after a `context`-token prompt."""
    core = ov.Core()
    properties = {key: value for key, value in PIPELINE_PROPERTIES.items() if key != "ATTENTION_BACKEND"}
    properties.update(model_precision(precision, "CPU", model_dir).properties)
    compiled = core.compile_model(core.read_model(language_model(model_dir)), "CPU", properties)
    request = compiled.create_infer_request()
    names = {port.get_any_name(): port for port in compiled.inputs}
    rng = np.random.default_rng(0)

    def feed(count: int, past: int) -> None:
        inputs = {"input_ids": rng.integers(100, 1000, (1, count), dtype=np.int64),
                  "attention_mask": np.ones((1, past + count), np.int64),
                  "beam_idx": np.zeros(1, np.int32)}
        positions = np.arange(past, past + count, dtype=np.int64)[None]
        rank = names["position_ids"].get_partial_shape().rank.get_length()
        inputs["position_ids"] = np.broadcast_to(positions, (3, 1, count)).copy() if rank == 3 else positions
        request.infer({name: value for name, value in inputs.items() if name in names})

    feed(context, 0)
    snapshot = [(state, state.state.data.copy()) for state in request.query_state()]
    times = {}
    for count in counts:
        best = float("inf")
        for _ in range(reps + 2):  # the first two warm the shapes up
            for state, data in snapshot:
                state.state = ov.Tensor(data.copy())
            start = time.perf_counter()
            feed(count, context)
            best = min(best, time.perf_counter() - start)
        times[count] = best * 1000
    return times


def llama_cpp_tpot(python: str, gguf: str, context: int, tokens: int = 32) -> float:
    """llama.cpp's plain decoding, ms per token after a `context`-token prompt, best of three runs."""
    code = f"""
import os, time
from llama_cpp import Llama
llm = Llama(model_path={gguf!r}, n_ctx={context + tokens + 8}, n_threads=os.cpu_count(), verbose=False)
best = float("inf")
for _ in range(3):
    llm.reset()
    llm.eval(list(range(100, 100 + {context})))
    start = time.perf_counter()
    for i in range({tokens}):
        llm.eval([200 + i])
    best = min(best, (time.perf_counter() - start) / {tokens})
print(best * 1000)
"""
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"Error: llama.cpp failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(result.stdout.split()[-1])


def speed_up(times: dict[int, float], acceptance: float, draft_cost: float) -> tuple[float, int]:
    """(best speed-up, its number of drafts) at this acceptance rate."""
    one = times[1]
    options = []
    for count, ms in times.items():
        drafts = count - 1
        if drafts:
            tokens = (1 - acceptance ** count) / (1 - acceptance)
            options.append((tokens * one / (ms + drafts * draft_cost * one), drafts))
    return max(options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--context", type=int, default=256, help="prompt tokens before the timed passes")
    parser.add_argument("--drafts", type=int, default=8, help="verify 1 … this many drafts")
    parser.add_argument("--precision", default="auto", choices=("auto", "fast", "accurate"))
    parser.add_argument("--draft-cost", type=float, default=0.0,
                        help="a draft token's cost as a share of a decoded token's (0: prompt lookup)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gguf", help="the same weights as a GGUF, to time llama.cpp's plain decoding")
    parser.add_argument("--llama-cpp", default=sys.executable, metavar="PYTHON", help="an interpreter with llama-cpp-python")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    counts = list(range(1, args.drafts + 2))
    times = pass_times(args.model_dir, args.context, counts, args.precision, args.reps)
    peer = llama_cpp_tpot(args.llama_cpp, args.gguf, args.context) if args.gguf else None
    cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    print(f"{args.model_dir} on {cpu}, OpenVINO {ov.__version__}, precision {args.precision}, "
          f"context {args.context}, draft cost {args.draft_cost}")
    print("| drafts verified | ms per pass | cost × one decoded token |\n|---|---|---|")
    for count, ms in times.items():
        print(f"| {count - 1} | {ms:.1f} | {ms / times[1]:.2f} |")
    print("\n| acceptance | best drafts | speed-up | ms per output token |"
          + (" × llama.cpp's plain decoding |" if peer else "") + "\n|---|---|---|---|" + ("---|" if peer else ""))
    rows = []
    for acceptance in ACCEPTANCE:
        gain, drafts = speed_up(times, acceptance, args.draft_cost)
        tpot = times[1] / gain
        rows.append({"acceptance": acceptance, "drafts": drafts, "speed_up": gain, "tpot_ms": tpot})
        print(f"| {acceptance:.1f} | {drafts} | {gain:.2f}× | {tpot:.1f} |" + (f" {tpot / peer:.2f} |" if peer else ""))
    if peer:
        print(f"\nllama.cpp plain decoding: {peer:.1f} ms per token; this model decoding one: {times[1]:.1f} ms "
              f"({times[1] / peer:.2f}×)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "model": str(args.model_dir), "context": args.context,
                                         "draft_cost": args.draft_cost, "pass_ms": times, "llama_cpp_tpot_ms": peer,
                                         "by_acceptance": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
