"""Each chat turn's time to first token for a hybrid model under a template that rewrites earlier turns
(Qwen3.5's drops their thinking), on the stateful backend, which then resets the recurrent state and
prefills the whole history, and on paged attention with prefix caching, which keeps checkpoints of the
state every so many KV blocks and prefills from the last one the histories share.

    python benchmarks/hybrid_turns.py MODEL_DIR [--template FILE] [--turns 6]

--template FILE: a chat template to use instead of the model's (default: tests/templates.py's Qwen3.5
one), in a scratch directory of links to the model's files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

WORDS = "river mountain garden lantern violin harbor meadow thunder copper orchard canyon whisper".split()
BACKENDS = {"stateful (ovchat run)": ("SDPA", None), "paged, checkpoints every 2 KV blocks": ("PA", 2),
            "paged, GenAI's default checkpoint interval": ("PA", 0)}


def with_template(model_dir: Path, template: str, scratch: Path) -> Path:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (the tokenizer IR's operations)

    for file in model_dir.iterdir():
        if not file.name.startswith("openvino_tokenizer."):
            (scratch / file.name).symlink_to(file.resolve())
    tokenizer = ov.Core().read_model(model_dir / "openvino_tokenizer.xml")
    tokenizer.set_rt_info(template, "chat_template")
    ov.save_model(tokenizer, scratch / "openvino_tokenizer.xml")
    return scratch


def turn_ttfts(model_dir: Path, backend: str, multiplier: int | None, turns: int) -> list[tuple[int, int]]:
    """(TTFT ms, prompt tokens) of each turn of one conversation."""
    import openvino_genai

    properties = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ATTENTION_BACKEND": backend}
    if backend == "PA":
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.enable_prefix_caching = True
        if multiplier:
            scheduler.cache_interval_multiplier = multiplier
        properties["scheduler_config"] = scheduler
    pipe = openvino_genai.LLMPipeline(model_dir, "CPU", **properties)
    config = openvino_genai.GenerationConfig(max_new_tokens=48, ignore_eos=True)
    pipe.generate(openvino_genai.ChatHistory([{"role": "user", "content": "warm up"}]), config)  # compiles
    history = openvino_genai.ChatHistory()
    history.append({"role": "system", "content": " ".join(WORDS[i % 12] for i in range(400))})
    times = []
    for turn in range(turns):
        question = " ".join(WORDS[(i * 7 + turn) % 12] for i in range(150))
        history.append({"role": "user", "content": f"Question {turn}: {question}"})
        result = pipe.generate(history, config)
        history.append({"role": "assistant", "content": result.texts[0].split("</think>")[-1]})
        times.append((round(result.perf_metrics.get_ttft().mean), result.perf_metrics.get_num_input_tokens()))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--template", type=Path, help="default: tests/templates.py's Qwen3.5 template")
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    if args.template:
        template = args.template.read_text()
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from templates import QWEN3_5 as template
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = with_template(args.model_dir, template, Path(scratch))
        for name, (backend, multiplier) in BACKENDS.items():
            times = turn_ttfts(model_dir, backend, multiplier, args.turns)
            print(f"{name}: " + ", ".join(f"{ms / 1000:.1f} s ({tokens} tokens)" for ms, tokens in times), flush=True)


if __name__ == "__main__":
    main()
