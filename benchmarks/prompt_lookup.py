"""Prompt lookup against plain decoding on grounded tasks (a reply that copies, edits, summarises or refactors a given
text), through `ovchat run --json` as a user runs it: TPOT and tokens per pass for K candidates per pass, each
variant a fresh process, the variants alternating within each repetition.

    python benchmarks/prompt_lookup.py [MODEL] [--reps 3] [--draft-tokens 2,3,5] [--max-new-tokens 128]

MODEL: a store name or a directory (default: the default model). Each line: the plain TPOT, then per K the TPOT, its
ratio to the plain one, tokens per pass, and whether the reply equals the plain one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TEXT = ("The old lighthouse stood at the edge of the cliff for more than a hundred years. Every evening the keeper "
        "climbed the spiral stairs, cleaned the glass and lit the lamp, so that the fishing boats could find their way "
        "home through the fog. When the town installed an electric beacon, the keeper stayed on, painting the rails "
        "and writing down the weather in a thick notebook that nobody ever read.")
CODE = ("def add_all(items):\n    total = 0\n    for item in items:\n        total = total + item\n    return total\n")
TASKS = {
    "copy": f"Repeat the following text exactly, word for word:\n\n{TEXT}",
    "edit": f"Rewrite the following text in the present tense, changing nothing else:\n\n{TEXT}",
    "summary": f"Summarise the following text in two sentences:\n\n{TEXT}",
    "code": f"Rename the variable `total` to `sum_of_items` in this Python function and return the whole function:\n\n{CODE}",
}


def run(model: str | None, prompt: str, options: list[str], max_new_tokens: int) -> dict:
    """`ovchat run --json`'s line for one reply, in a process of its own, never through a server."""
    command = [sys.executable, "-m", "ovgenai_chat.cli", "run", *([model] if model else []), "--local", "-p", prompt,
               "--greedy", "--json", "--max-new-tokens", str(max_new_tokens), *options]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        sys.exit(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--draft-tokens", default="2,3,5", help="the K values to measure, comma-separated")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    variants = {"plain": ["--no-draft"]}
    variants.update({f"K={k}": ["--prompt-lookup", "--draft-tokens", k] for k in args.draft_tokens.split(",")})
    lines: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.reps):
        for task, prompt in TASKS.items():
            for name, options in variants.items():
                print(f"rep {rep + 1}/{args.reps}: {task}, {name}…", file=sys.stderr, flush=True)
                lines.setdefault((task, name), []).append(run(args.model, prompt, options, args.max_new_tokens))
    print("| task | tokens | plain TPOT ms | " + " | ".join(f"{name}: TPOT ms (×plain), tokens/pass, same"
                                                         for name in variants if name != "plain") + " |")
    print("|---|---|---|" + "---|" * (len(variants) - 1))
    for task in TASKS:
        plain = statistics.median(line["metrics"]["tpot_ms"] for line in lines[(task, "plain")])
        reply = lines[(task, "plain")][0]["reply"]
        cells = [task, str(lines[(task, "plain")][0]["metrics"]["output_tokens"]), f"{plain:.2f}"]
        for name in variants:
            if name != "plain":
                ours = lines[(task, name)]
                tpot = statistics.median(line["metrics"]["tpot_ms"] for line in ours)
                cells.append(f"{tpot:.2f} ({tpot / plain:.2f}×), {ours[0]['metrics']['tokens_per_pass']:.2f}, "
                             f"{'yes' if all(line['reply'] == reply for line in ours) else 'no'}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
