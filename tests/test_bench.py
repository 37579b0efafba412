"""The latency suite runs end to end on a tiny converted model; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench.py"


def test_bench_runs_and_reports_every_system(converted, tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, BENCH, converted("llama", "int4"), "--reps", "1", "--prompt-lengths", "16",
         "--gen-lengths", "8", "--out", out], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [row["system"] for row in report["rows"]] == ["ovchat", "genai-default"]
    assert "skipped llama.cpp: no --gguf given" in result.stderr  # a missing peer is a note, not a failure
    for row in report["rows"]:
        assert row["prompt_tokens"] == 16 and row["gen_tokens"] == 8
        assert row["ttft_ms"]["min"] <= row["ttft_ms"]["median"] <= row["ttft_ms"]["max"]
        assert 0 < row["roofline_fraction"] and row["peak_rss_mb"] > 0
    # perf_metrics agree with the wall clock around each request
    assert all(0.8 < run["wall_vs_metrics"] < 1.25 for raw in report["raw"] for run in raw["runs"])
    assert "| ovchat | 16 | 8 |" in result.stdout and "memory bandwidth" in result.stdout
