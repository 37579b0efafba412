"""What handing the weight files' pages back (engine.page_out_weight_files) costs the decoding that
follows it, measured in one process so that the host's drift between processes does not drown it:
requests alternate between "pages unmapped just before" and "not", and each reports its TPOT, the page
faults it took and the process's resident memory.

    python benchmarks/page_out.py MODEL_DIR [--pairs 6] [--new-tokens 48]

ovchat unmaps them during the first inference and once more at the first token (engine.first_inference);
a request after an unmapping pays what a one-shot `ovchat run -p` pays.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ovgenai_chat.engine import first_inference, open_pipeline, page_out_weight_files  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    import openvino_genai

    pipe, device, precision = open_pipeline(args.model_dir, "CPU", precision=args.precision)
    config = openvino_genai.GenerationConfig(max_new_tokens=args.new_tokens, do_sample=False, ignore_eos=True)
    with first_inference():
        pipe.generate(["Hello"], openvino_genai.GenerationConfig(max_new_tokens=1))
    print(f"{args.model_dir}, {precision.describe()}; resident after the first inference {rss_mb():.0f} MB")
    tpot = {"after an unmapping": [], "without": []}
    for i in range(2 * args.pairs):
        unmapped = i % 2 == 0
        if unmapped:
            page_out_weight_files()
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = pipe.generate([f"Question {i}: tell me about lighthouses and the people who kept them."], config)
        after = resource.getrusage(resource.RUSAGE_SELF)
        key = "after an unmapping" if unmapped else "without"
        tpot[key].append(result.perf_metrics.get_tpot().mean)
        print(f"  {key:19} TPOT {tpot[key][-1]:6.1f} ms · faults {after.ru_minflt - before.ru_minflt} minor, "
              f"{after.ru_majflt - before.ru_majflt} major · resident {rss_mb():.0f} MB", flush=True)
    for key, values in tpot.items():
        print(f"{key}: median TPOT {statistics.median(values):.1f} ms")
    print(f"peak resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
