"""What a warm `ovchat serve` is worth: start → first byte of a one-shot `ovchat run NAME -p …` through a server
that holds the model, against the same run in-process (`--local`, warm compiled-model cache) and llama.cpp's
one-shot (a new process that loads the GGUF and streams its first token); then the server's memory with two
models loaded, and what unloading one frees.

    python benchmarks/warm_server.py --model ~/.cache/ovgenai-chat/synthetic/phi-3-mini/int4 \\
        --gguf ~/.cache/ovgenai-chat/synthetic/phi-3-mini/phi-3-mini.Q4_K_M.gguf --second smollm2-135m-instruct

`--model` (a model directory) is linked into a temporary store as `bench`; `--second` is a model of the user's
store. Runs one after the other, never two at once (timings on a small CPU are shared). Memory is the resident
memory of the server and its runner processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROMPT = "What is the capital of France?"
LLAMA_ONE_SHOT = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=4096, verbose=False)
for chunk in llm.create_chat_completion([{"role": "user", "content": sys.argv[2]}], max_tokens=8, stream=True):
    piece = chunk["choices"][0]["delta"].get("content")
    if piece:
        sys.stdout.write(piece)
        sys.stdout.flush()
"""


def first_byte(command: list[str], env: dict) -> float:
    """Seconds from starting `command` to the first byte on its stdout; it then runs to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    byte = process.stdout.read(1)
    seconds = time.perf_counter() - start
    rest, errors = process.communicate(timeout=600)
    if process.returncode or not byte:
        raise RuntimeError(f"{command[:4]} failed: {errors.decode()[-500:]}")
    return seconds


def rss_mb(pid: int) -> float:
    """The resident memory of a process and its children (the server and its models' runners)."""
    status = Path(f"/proc/{pid}/status").read_text()
    children = " ".join(Path(task, "children").read_text() for task in Path(f"/proc/{pid}/task").iterdir())
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024 + sum(rss_mb(int(c)) for c in children.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="A model directory (linked into a store as `bench`).")
    parser.add_argument("--gguf", help="The same model as a GGUF, for llama.cpp's one-shot.")
    parser.add_argument("--second", help="A second model of the user's store, for memory with two loaded.")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()

    import openvino as ov

    cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    store = Path(tempfile.mkdtemp(prefix="ovchat-bench-store-"))
    (store / "bench").symlink_to(args.model.expanduser().resolve())
    user_store = Path(os.environ.get("OVCHAT_MODELS") or Path.home() / ".cache" / "ovgenai-chat" / "models")
    if args.second:
        (store / args.second).symlink_to((user_store / args.second).resolve())
    url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "OVCHAT_MODELS": str(store), "OVCHAT_HOST": url}
    env.pop("OVCHAT_API_KEY", None)
    ovchat = [sys.executable, "-m", "ovgenai_chat.cli"]
    run = [*ovchat, "run", "bench", "-p", PROMPT, "--max-new-tokens", "8"]
    results: dict = {"cpu": cpu, "cpu_count": os.cpu_count(), "model": str(args.model), "prompt": PROMPT}

    local = [first_byte([*run, "--local"], env) for _ in range(args.reps + 1)][1:]  # the first fills the cache
    results["in_process_s"] = local

    server = subprocess.Popen([*ovchat, "serve", "--port", str(args.port), "--keep-alive", "-1"],
                              stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        baseline = rss_mb(server.pid)
        results["first_through_server_s"] = first_byte(run, env)  # the server loads the model
        results["through_server_s"] = [first_byte(run, env) for _ in range(args.reps)]
        ps = json.loads(subprocess.run([*ovchat, "ps", "--json"], capture_output=True, text=True, env=env).stdout)
        results["server_rss_mb"] = {"idle": baseline, "one_model": rss_mb(server.pid)}
        results["ps"] = ps
        if args.second:
            first_byte([*ovchat, "run", args.second, "-p", PROMPT, "--max-new-tokens", "8"], env)
            results["server_rss_mb"]["two_models"] = rss_mb(server.pid)
            results["ps"] = json.loads(subprocess.run([*ovchat, "ps", "--json"], capture_output=True, text=True,
                                                      env=env).stdout)
            subprocess.run([*ovchat, "stop", "bench"], check=True, env=env, capture_output=True)
            time.sleep(1)
            results["server_rss_mb"]["after_stop_bench"] = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    if args.gguf:
        command = [sys.executable, "-c", LLAMA_ONE_SHOT, args.gguf, PROMPT]
        results["llama_cpp_s"] = [first_byte(command, env) for _ in range(args.reps + 1)][1:]

    def median(key):
        return statistics.median(results[key]) if key in results else None

    print(json.dumps(results, indent=2))
    print(f"\n{cpu}, {os.cpu_count()} cores; start → first byte, median of {args.reps}:")
    print(f"  through a warm server {median('through_server_s'):.3f} s (first, loading: "
          f"{results['first_through_server_s']:.1f} s)")
    print(f"  in-process (--local)  {median('in_process_s'):.3f} s")
    if args.gguf:
        print(f"  llama.cpp one-shot    {median('llama_cpp_s'):.3f} s  → server / llama.cpp "
              f"{median('through_server_s') / median('llama_cpp_s'):.3f}×")
    print(f"  server / in-process   {median('through_server_s') / median('in_process_s'):.3f}×")
    print("server RSS MB:", {k: round(v) for k, v in results["server_rss_mb"].items()})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
