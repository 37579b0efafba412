"""What each weight format costs and buys, for one model: every format `ovchat convert` offers (and the
blocks of GGUF files, as imported) × size, KL divergence and top-1 agreement against the fp32 conversion,
perplexity, TPOT, and what the conversion took (time, peak RSS).

    python benchmarks/quality.py CHECKPOINT OUT_DIR [--gguf FILE …] [--formats fp16,int8,int4,…]
        [--max-tokens 4096] [--num-samples 128] [--json q.json] [--markdown q.md] [--plot q.png]

Each format is converted by `ovchat convert` in its own process (wall time and peak RSS from wait4) into
OUT_DIR/NAME, scored by `ovchat eval`'s evaluate() against OUT_DIR/fp32 on the text it reads by default
(held out from data-aware calibration), in f32 inference so only the weights differ, and timed through the
runtime's own pipeline (its default precision): TPOT over 64 greedy tokens, median of 3 after a warm-up.
The plot is KL divergence against the bytes of weights a generated token reads (bench.py's count: the
constants feeding each MatMul; the .bin can be smaller, as OpenVINO stores identical constants once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import weight_bytes_per_token  # noqa: E402
from ovgenai_chat.engine import open_pipeline  # noqa: E402
from ovgenai_chat.evaluate import DEFAULT_MAX_TOKENS, evaluate, read_text  # noqa: E402

# name → (what it is, `ovchat convert` options)
FORMATS = {
    "fp32": ("fp32 (the reference)", ["--weight-format", "fp32"]),
    "fp16": ("fp16", ["--weight-format", "fp16"]),
    "int8": ("int8 asym, per channel", ["--weight-format", "int8"]),
    "int4": ("int4 sym g128 r0.6, data-free (default)", []),
    "int4-awq-se": ("int4 sym g128 r0.6, AWQ + scale estimation", ["--awq", "--scale-estimation"]),
    "int4-gptq-se": ("int4 sym g128 r0.6, GPTQ + scale estimation", ["--gptq", "--scale-estimation"]),
    "int4-g64": ("int4 sym g64 r0.6, data-free", ["--group-size", "64"]),
    "int4-r1": ("int4 sym g128 r1.0, data-free", ["--ratio", "1.0"]),
    "int4-r1-awq-se": ("int4 sym g128 r1.0, AWQ + scale estimation", ["--ratio", "1.0", "--awq", "--scale-estimation"]),
}
PROMPT = "Tell me about the history of whaling in the nineteenth century."
NEW_TOKENS = 64


def convert(source: str, out: Path, options: list[str], num_samples: int | None) -> dict:
    """Run `ovchat convert`; its wall time and peak RSS (the child's own, from wait4)."""
    if num_samples and any(o in options for o in ("--awq", "--scale-estimation", "--gptq")):
        options = [*options, "--num-samples", str(num_samples)]
    command = [sys.executable, "-m", "ovgenai_chat.cli", "convert", source, "-o", str(out), "--force", *options]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"converting {out.name} failed: {stderr.strip().splitlines()[-1]}")
    return {"convert_seconds": seconds, "convert_peak_rss_gib": usage.ru_maxrss / 2**20}


def tpot_ms(model_dir: Path) -> float:
    """Median TPOT of NEW_TOKENS greedy tokens through the runtime's pipeline, after a warm-up."""
    import openvino_genai

    pipe, _, _ = open_pipeline(model_dir, "CPU", use_cache=False)
    config = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    history = openvino_genai.ChatHistory()
    history.append({"role": "user", "content": PROMPT})
    pipe.generate(history, config)
    return statistics.median(pipe.generate(history, config).perf_metrics.get_tpot().mean for _ in range(3))


def measure(name: str, what: str, model_dir: Path, reference: Path, text: str, max_tokens: int, conversion: dict) -> dict:
    scores = evaluate(model_dir, text, reference_dir=reference, max_tokens=max_tokens, precision="accurate")
    row = {"format": name, "what": what, "size_mb": (model_dir / "openvino_model.bin").stat().st_size / 1e6,
           "read_mb_per_token": weight_bytes_per_token(model_dir / "openvino_model.xml") / 1e6,
           "kl_divergence": scores.kl_divergence, "top1_agreement": scores.top1_agreement,
           "perplexity": scores.perplexity, "reference_perplexity": scores.reference_perplexity,
           "tokens": scores.tokens, "tpot_ms": tpot_ms(model_dir), **conversion}
    print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| weights | MB on disk | MB read per token | KL vs fp32 | top-1 | perplexity | TPOT ms | convert s | "
             "convert peak RSS GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['size_mb']:.1f} | {r['read_mb_per_token']:.1f} | {r['kl_divergence']:.4f} | "
                     f"{r['top1_agreement']:.3f} | "
                     f"{r['perplexity']:.3f} | {r['tpot_ms']:.2f} | {r['convert_seconds']:.1f} | "
                     f"{r['convert_peak_rss_gib']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(sorted(rows, key=lambda r: (r["read_mb_per_token"], r["kl_divergence"]))):
        axes.scatter(r["read_mb_per_token"], r["kl_divergence"])
        axes.annotate(r["format"], (r["read_mb_per_token"], r["kl_divergence"]), textcoords="offset points",
                      xytext=(6, 6 if i % 2 else -10), fontsize=8)  # neighbours' labels on alternate sides
    axes.set_xscale("log")
    axes.set_xlabel("MB of weights read per generated token, log scale")
    axes.set_ylabel("KL divergence from fp32 (nats per token)")
    axes.set_title("What each weight format costs")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a checkpoint directory (or hub id) every format is converted from")
    parser.add_argument("out", type=Path, help="where the conversions are written, one directory each")
    parser.add_argument("--gguf", action="append", default=[], help="a GGUF of the same model, imported as it is")
    parser.add_argument("--formats", default=",".join(f for f in FORMATS if f != "fp32"),
                        help=f"of {', '.join(FORMATS)}; fp32 is always made, as the reference")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--num-samples", type=int, help="calibration samples of the data-aware formats")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    args = parser.parse_args()
    chosen = ["fp32", *(f for f in args.formats.split(",") if f != "fp32")]
    if unknown := [f for f in chosen if f not in FORMATS]:
        parser.error(f"unknown format {unknown[0]} (choose from {', '.join(FORMATS)})")

    args.out.mkdir(parents=True, exist_ok=True)
    text, reference = read_text(), args.out / "fp32"
    conversions = {name: convert(args.source, args.out / name, FORMATS[name][1], args.num_samples) for name in chosen}
    for gguf in args.gguf:
        conversions[Path(gguf).name] = convert(gguf, args.out / Path(gguf).stem, [], None)
    rows = [measure(name, FORMATS[name][0], args.out / name, reference, text, args.max_tokens, conversions[name])
            for name in chosen]
    rows += [measure(Path(gguf).name, f"{Path(gguf).name}, blocks kept", args.out / Path(gguf).stem, reference, text,
                     args.max_tokens, conversions[Path(gguf).name]) for gguf in args.gguf]
    table = markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"source": args.source, "max_tokens": args.max_tokens, "rows": rows},
                                              indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
