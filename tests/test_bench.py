"""The latency suite runs end to end on a tiny converted model; no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import openvino
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_bench_runs_validates_and_skips_missing_peers(converted, tmp_path):
    out, table, png = tmp_path / "results.json", tmp_path / "results.md", tmp_path / "results.png"
    result = subprocess.run(
        [sys.executable, BENCHMARKS / "bench.py", converted("llama", "int4"), "--reps", "1", "--prompt-lengths", "16,24",
         "--gen-lengths", "8", "--turns", "2", "--chat-gen", "4", "--optimum-python", tmp_path / "no-such-python",
         "--json", out, "--markdown", table, "--plot", png], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, json.loads((BENCHMARKS / "bench.schema.json").read_text()))

    # missing peers are notes, not failures
    assert "skipped llama.cpp: no --gguf given" in result.stderr
    assert "skipped optimum-intel: no interpreter with optimum-intel" in result.stderr
    assert [(row["system"], row["test"]) for row in report["summaries"]] == [
        (system, test) for system in ("ovchat", "genai-default") for test in ("pp16+tg8", "pp24+tg8", "chat turn 2")]
    for row in report["summaries"]:
        assert row["ttft_ms"]["min"] <= row["ttft_ms"]["median"] <= row["ttft_ms"]["max"]
        assert row["load_cold_s"]["median"] > 0 and row["load_warm_s"]["median"] > 0
        # a user's wait for the first token: the process's start, the load, then the first prefill
        assert row["first_token_cold_s"]["median"] > row["load_cold_s"]["median"]
        assert row["first_token_warm_s"]["median"] > row["load_warm_s"]["median"]
    sweep = [r for r in report["records"] if r["test"].startswith("pp")]
    assert {(r["prompt_tokens"], r["gen_tokens"]) for r in sweep} == {(16, 8), (24, 8)}
    chat = [r for r in report["records"] if r["test"] == "chat turn 2"]
    assert all(r["gen_tokens"] == 4 and r["prompt_tokens"] > 8 for r in chat)  # the turn carries the history
    assert {p["kind"] for p in report["processes"]} == {"cold", "warm"}
    assert report["failures"] == {} and report["plan"]["precision"] == "auto"
    assert report["header"]["ovchat_precision"].startswith("accurate (")  # a tiny model on a CPU
    assert report["header"]["device"] == report["plan"]["device"] in openvino.Core().available_devices
    # perf_metrics agree with the wall clock around each request
    assert all(0.8 < r["wall_vs_metrics"] < 1.25 for r in sweep), sweep

    assert "| ovchat | pp16+tg8 |" in result.stdout and "memory read bandwidth" in result.stdout
    assert "ovchat / genai-default:" in result.stdout and "start → first token (warm cache)" in result.stdout
    assert table.read_text().strip() == result.stdout.strip()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_measures_ovchat_drafting_beside_it(converted, tmp_path):
    """--draft and --prompt-lookup add ovchat's drafted systems, with GenAI's counts in their records."""
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, BENCHMARKS / "bench.py", converted("llama", "int4"), "--systems", "ovchat", "--draft",
         converted("llama"), "--prompt-lookup", "--reps", "1", "--prompt-lengths", "16", "--gen-lengths", "8",
         "--turns", "2", "--chat-gen", "4", "--json", out], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, json.loads((BENCHMARKS / "bench.schema.json").read_text()))
    assert [row["system"] for row in report["summaries"]] == [
        system for system in ("ovchat", "ovchat+draft", "ovchat+prompt-lookup") for _ in range(2)]
    drafted = [r for r in report["records"] if r["system"] != "ovchat"]
    assert all(r["draft_tokens"] > 0 and r["tokens_per_pass"] >= 1 for r in drafted)
    # the fp32 twin of an int4 model proposes mostly the model's own tokens
    assert any(r["accepted_tokens"] > 0 for r in drafted if r["system"] == "ovchat+draft")
    assert "draft_tokens" not in next(r for r in report["records"] if r["system"] == "ovchat")
    assert "ovchat+draft / ovchat:" in result.stdout and "ovchat+prompt-lookup / ovchat:" in result.stdout


def test_quality_tabulates_every_format_against_fp32(checkpoint, tmp_path):
    """benchmarks/quality.py on a tiny checkpoint: the fp32 reference scores KL 0, the others are measured,
    and the table, JSON and plot are written."""
    out, report, png = tmp_path / "formats", tmp_path / "q.json", tmp_path / "q.png"
    result = subprocess.run([sys.executable, BENCHMARKS / "quality.py", checkpoint("llama"), out, "--formats",
                             "int8,int4-awq-se", "--max-tokens", "512", "--num-samples", "4", "--json", report,
                             "--plot", png], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["format"]: row for row in json.loads(report.read_text())["rows"]}
    assert list(rows) == ["fp32", "int8", "int4-awq-se"]
    assert rows["fp32"]["kl_divergence"] == 0 and rows["fp32"]["top1_agreement"] == 1
    assert all(rows[f]["kl_divergence"] > 0 for f in ("int8", "int4-awq-se"))
    assert rows["int4-awq-se"]["size_mb"] < rows["int8"]["size_mb"] < rows["fp32"]["size_mb"]
    assert all(row["tpot_ms"] > 0 and row["convert_peak_rss_gib"] > 0 and row["tokens"] == 511 for row in rows.values())
    assert len(result.stdout.strip().splitlines()) == 5  # header, separator, three formats
    assert "| int4 sym g128 r0.6, AWQ + scale estimation |" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_a_device_this_machine_lacks(converted):
    result = subprocess.run([sys.executable, BENCHMARKS / "bench.py", converted("llama", "int4"), "--device", "NOSUCH"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "device NOSUCH is not available here" in result.stderr.strip().splitlines()[-1]


def test_a_peer_that_crashes_is_reported_and_the_others_kept(converted, tmp_path):
    """A peer that dies (as llama.cpp's AMX kernel does with SIGILL on hosts that do not grant AMX)
    is `failed: <reason>`, and the other systems' figures stay."""
    crashing = tmp_path / "python"
    crashing.write_text('#!/bin/sh\n[ "$1" = "-c" ] && exit 0  # passes the import probe\nkill -ILL $$\n')
    crashing.chmod(0o755)
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, BENCHMARKS / "bench.py", converted("llama", "int4"), "--systems", "ovchat,optimum-intel",
         "--optimum-python", crashing, "--reps", "2", "--prompt-lengths", "16", "--gen-lengths", "4", "--turns", "0",
         "--json", out], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, json.loads((BENCHMARKS / "bench.schema.json").read_text()))
    assert report["failures"] == {"optimum-intel": "killed by SIGILL"}
    assert "failed optimum-intel: killed by SIGILL" in result.stderr
    assert result.stdout.strip().endswith("optimum-intel: failed: killed by SIGILL")
    assert [(row["system"], row["reps"]) for row in report["summaries"]] == [("ovchat", 2)]
    assert result.stderr.count("optimum-intel, cold start") == 1  # not tried again after it failed


def test_precision_table_runs(converted, tmp_path):
    out = tmp_path / "precision.json"
    result = subprocess.run(
        [sys.executable, BENCHMARKS / "precision.py", converted("llama", "int4"), "--prompts", "3", "--new-tokens", "4",
         "--long", "16", "--settings", "accurate,fast", "--json", out], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [row["setting"] for row in report["rows"]] == ["accurate", "fast"]
    accurate = report["rows"][0]
    assert accurate["agreement"] == accurate["prompts"] == 3  # the reference is this model, run accurately
    assert all(row["ttft_ms"] > 0 and row["tpot_ms"] > 0 and row["long_ttft_ms"] > 0 and row["first_inference_s"] > 0
               for row in report["rows"])
    from ovgenai_chat.engine import ACCURATE, FAST_ON_CPU, cpu_kind

    assert [row["properties"] for row in report["rows"]] == [ACCURATE, FAST_ON_CPU[cpu_kind()]]
    assert {row["cpu_kind"] for row in report["rows"]} == {cpu_kind()}
    assert report["auto"] == "accurate"
    assert result.stdout.strip().splitlines()[-1].startswith("auto on this model's CPU run: accurate (")


def test_an_isa_cap_makes_the_plugin_a_cpu_without_bf16():
    """What precision.py's --isa relies on: a process started with the plugin capped to AVX2 sees a CPU
    kind without bf16, so its `fast` is that kind's."""
    env = {**os.environ, "OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", "from ovgenai_chat.engine import cpu_kind; print(cpu_kind())"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "f32"


def _synthetic():
    sys.path.insert(0, str(BENCHMARKS))
    import synthetic

    return synthetic


def test_synthetic_models_are_built_once(tmp_path):
    """benchmarks/synthetic.py's `cached_models` builds the int4 model once and keeps only it."""
    synthetic = _synthetic()
    model_dir, gguf = synthetic.cached_models("tiny", tmp_path / "cache", quantize=None)
    assert (model_dir / "openvino_model.xml").is_file() and gguf is None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["int4"]  # the checkpoint is gone
    built = (model_dir / "openvino_model.bin").stat().st_mtime_ns
    assert synthetic.cached_models("tiny", tmp_path / "cache", quantize=None)[0] == model_dir
    assert (model_dir / "openvino_model.bin").stat().st_mtime_ns == built  # not built again


def test_synthetic_configs_state_their_shapes():
    """The converter reads every shape's config.json as the shape (LFM2's MLP width by Liquid's rule
    from the intermediate_size it states)."""
    from convert.models import model_args

    for name, spec in _synthetic().SHAPES.items():
        args = model_args(spec.config())
        assert (args.hidden_size, args.num_hidden_layers, args.intermediate_size, args.num_attention_heads,
                args.num_key_value_heads, args.head_dim, args.vocab_size) == (
            spec.hidden, spec.layers, spec.ffn, spec.heads, spec.kv_heads, spec.head_dim, spec.vocab), name
        if hasattr(spec, "experts"):  # Granite's config names them num_local_experts
            experts = getattr(args, "num_experts", None) or args.num_local_experts
            assert (experts, args.num_experts_per_tok) == (spec.experts, spec.experts_per_token), name


@pytest.mark.parametrize("shape", ["tiny-qwen3-moe", "tiny-lfm2-moe", "tiny-granite-h"])
def test_synthetic_experts_are_the_architectures_own(shape, tmp_path):
    """synthetic.py's mixtures of experts (tensors as the hub names them; config.json as published; Granite's
    Mamba-2 layers) are the architectures transformers runs: its fp32 logits are the converter's."""
    import numpy as np
    import openvino as ov
    import torch
    import transformers

    from convert import convert

    checkpoint = _synthetic().write_checkpoint(shape, tmp_path / "checkpoint")
    ids = [1, 504, 2891, 30, 2]
    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    expected = reference(torch.tensor([ids])).logits[0].detach().numpy()
    out = convert(checkpoint, tmp_path / "fp32", weight_format="fp32")
    compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled({"input_ids": np.array([ids]), "attention_mask": np.ones((1, 5), np.int64),
                       "position_ids": np.arange(5)[None], "beam_idx": np.zeros(1, np.int32)})["logits"][0]
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_token_reads_k_of_the_e_experts(converted):
    """bench.py's bytes per token on a mixture of experts (Qwen3-MoE, int4): every matrix's constants once —
    attention, routers, the dense MLP, lm_head — but the stacked experts' at k/E; the untied embedding not."""
    import openvino as ov

    from convert.compress import weight_bytes, weight_layers
    from checkpoints import VARIANTS

    sys.path.insert(0, str(BENCHMARKS))
    import bench

    model_dir = converted("qwen3_moe", "int4")
    config = VARIANTS["qwen3_moe"][1]
    share = config["num_experts_per_tok"] / config["num_experts"]
    layers = {name: weight for name, weight in weight_layers(ov.Core().read_model(model_dir / "openvino_model.xml")).items()
              if not name.startswith("model.embed_tokens")}
    experts = [w for w in layers.values() if w.get_output_partial_shape(0).rank.get_length() == 3]
    assert experts and share < 1
    expected = sum(weight_bytes(w) for w in layers.values()) - (1 - share) * sum(weight_bytes(w) for w in experts)
    assert bench.weight_bytes_per_token(model_dir / "openvino_model.xml") == round(expected)


def test_a_gguf_token_reads_k_of_the_e_experts(tmp_path):
    """The same for llama.cpp's file: `*_exps` tensors at expert_used_count / expert_count of their bytes."""
    import gguf
    import numpy as np

    sys.path.insert(0, str(BENCHMARKS))
    import bench

    path = tmp_path / "moe.gguf"
    writer = gguf.GGUFWriter(path, "qwen3moe")
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    tensors = {"token_embd.weight": (16, 4), "output.weight": (16, 4), "blk.0.attn_q.weight": (4, 4),
               "blk.0.ffn_gate_inp.weight": (8, 4), "blk.0.ffn_up_exps.weight": (8, 6, 4)}
    for name, dims in tensors.items():
        writer.add_tensor(name, np.zeros(dims, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # untied: the embedding is looked up, not read whole
    assert bench.gguf_bytes_per_token(str(path)) == 4 * (16 * 4 + 4 * 4 + 8 * 4 + 2 * 6 * 4)


@pytest.mark.parametrize("shape", ["tiny", "tiny-qwen3.5", "tiny-lfm2", "tiny-gemma4"])
def test_synthetic_checkpoint_and_gguf_hold_the_same_weights(shape, tmp_path):
    """benchmarks/synthetic.py at its tiny shapes (llama; the hybrids with vocabularies past the
    tokenizer's, and DeltaNet value heads llama.cpp reorders): the checkpoint and the F16 GGUF it writes
    for llama.cpp hold the same weights (both imported in fp32 give the same logits); llama.cpp itself
    reads the GGUF to those logits too, and both tokenizers print ids past SmolLM2's alike."""
    import importlib.util

    import numpy as np
    import openvino as ov
    import transformers

    from convert import convert

    synthetic = _synthetic()
    checkpoint = synthetic.write_checkpoint(shape, tmp_path / "checkpoint")
    f16 = synthetic.write_gguf(shape, tmp_path / f"{shape}.gguf", None)
    ids = [1, 504, 2891, 30, 2]
    logits = []
    for source in (checkpoint, f16):
        out = convert(source, tmp_path / f"{source.name}-fp32", weight_format="fp32")
        compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        logits.append(compiled({"input_ids": np.array([ids]), "attention_mask": np.ones((1, 5), np.int64),
                                "position_ids": np.arange(5)[None], "beam_idx": np.zeros(1, np.int32)})["logits"][0])
    assert logits[0].shape == (5, synthetic.SHAPES[shape].vocab)
    assert np.abs(logits[0] - logits[1]).max() <= 1e-3 * np.abs(logits[0]).max()

    padded = range(synthetic.VOCAB, synthetic.SHAPES[shape].vocab)  # "[PAD<id>]" past SmolLM2's tokens
    past = [504, *padded[:1], *padded[-1:]]
    text = transformers.AutoTokenizer.from_pretrained(checkpoint).decode(past)
    assert text.count("[PAD") == len(past) - 1
    if importlib.util.find_spec("llama_cpp") is None:
        return
    import llama_cpp

    llm = llama_cpp.Llama(str(f16), n_ctx=64, logits_all=True, verbose=False)
    llm.eval(ids)
    assert np.abs(np.array(llm.scores[:5]) - logits[0]).max() <= 5e-3 * np.abs(logits[0]).max()  # F16 matmuls
    assert llm.detokenize(past).decode() == text
