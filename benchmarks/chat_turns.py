"""What the runtime's choices buy, on this device: start time without and with the compiled-model
cache, and each turn's time to first token when the KV cache is reused against re-sending the
whole history to a fresh pipeline. Each load runs in a fresh process.

A turn that reuses nothing — GenAI resets a hybrid model's recurrent state whenever the templated
history does not extend the tokens it has seen, as when a template drops earlier turns' thinking —
shows as its prefill covering the whole prompt.

    python benchmarks/chat_turns.py MODEL_DIR [--device auto] [--turns 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench import QUESTIONS  # the same conversation as the suite's chat test

LOAD_PROBE = """
import sys, time, json
t = time.perf_counter()
import ovgenai_chat
chat = ovgenai_chat.load(sys.argv[1], sys.argv[2], use_cache=sys.argv[3] == "cache", max_new_tokens=8)
loaded = time.perf_counter() - t
chat.send("Hello")
print(json.dumps({"load_s": loaded, "first_reply_s": time.perf_counter() - t}))
"""


def load_times(model_dir: str, device: str, cache_dir: str, use_cache: bool) -> dict:
    env = {"OVCHAT_CACHE_DIR": cache_dir}
    result = subprocess.run([sys.executable, "-c", LOAD_PROBE, model_dir, device, "cache" if use_cache else "none"],
                            capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def turn_ttfts(model_dir: str, device: str, turns: int, max_new_tokens: int) -> tuple[list[float], list[float], list]:
    """(reused, resent, prefilled): TTFT in ms of each turn through one Chat, and of the same templated
    history sent whole as token ids (as the notebook's generate does: no KV cache kept between calls);
    and (tokens the turn prefilled, tokens of its whole prompt)."""
    import openvino as ov

    import ovgenai_chat
    from ovgenai_chat.engine import open_pipeline

    chat = ovgenai_chat.load(model_dir, device, max_new_tokens=max_new_tokens)
    whole, _, _ = open_pipeline(model_dir, device)
    tokenizer = whole.get_tokenizer()
    config = whole.get_generation_config()
    config.max_new_tokens = max_new_tokens
    whole.generate(tokenizer.encode("Hello").input_ids, config)  # the first request compiles; keep it out
    reused, resent, prefilled = [], [], []
    for question in QUESTIONS[:turns]:
        prompt = tokenizer.apply_chat_template([*chat.history, {"role": "user", "content": question}],
                                               add_generation_prompt=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        resent.append(whole.generate(ov.Tensor(ids.data), config).perf_metrics.get_ttft().mean)
        chat.send(question)
        reused.append(chat.metrics.ttft_ms)
        prefilled.append((chat.metrics.input_tokens, ids.get_shape()[1]))
    return reused, resent, prefilled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        cold = [load_times(args.model_dir, args.device, cache, False) for _ in range(args.repeats)]
        load_times(args.model_dir, args.device, cache, True)  # fills the cache
        warm = [load_times(args.model_dir, args.device, cache, True) for _ in range(args.repeats)]
    for name, runs in (("no cache", cold), ("compiled-model cache", warm)):
        print(f"start, {name}: load {statistics.median(r['load_s'] for r in runs):.2f} s, "
              f"load + first reply {statistics.median(r['first_reply_s'] for r in runs):.2f} s "
              f"(median of {len(runs)} fresh processes)")

    reused, resent, prefilled = turn_ttfts(args.model_dir, args.device, args.turns, args.max_new_tokens)
    for turn, (a, b, (fed, whole)) in enumerate(zip(reused, resent, prefilled), 1):
        print(f"turn {turn}: TTFT {a:.0f} ms with the KV cache reused (prefilled {fed} of {whole} prompt tokens), "
              f"{b:.0f} ms re-sending the history")


if __name__ == "__main__":
    main()
