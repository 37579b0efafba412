"""`convert` end to end: what the default int4 conversion writes, the tokenizer IR, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai
import openvino_tokenizers  # noqa: F401  (registers the tokenizer ops with OpenVINO)
import pytest

from conftest import run_ovchat
from ovgenai_chat.engine import ACCURATE


def ask(model_dir: Path, question: str, **properties) -> str:
    """The greedy answer in the precision the runtime uses for a model this small (accurate). With
    the CPU's defaults, the reply's first token to README's question is a near-tie that bf16 or int8
    activations decide differently on Intel (AMX) and AMD hosts; in f32 its margin (0.08 to 0.4 logits
    across the weight formats) is far above what the CPU's kernels change."""
    pipe = openvino_genai.LLMPipeline(model_dir, "CPU", **ACCURATE, **properties)
    history = openvino_genai.ChatHistory()
    history.append({"role": "user", "content": question})
    return pipe.generate(history, openvino_genai.GenerationConfig(max_new_tokens=30)).texts[0]


@pytest.mark.parametrize("backend", ["PA", "SDPA"])
def test_default_int4_smollm2_knows_the_capital_of_france(converted, backend):
    answer = ask(converted("smollm2", "int4"), "What is the capital of France?", ATTENTION_BACKEND=backend)
    print(f"{backend}: {answer!r}")
    assert "Paris" in answer


def test_int4_directory_describes_itself(converted, checkpoint):
    out = converted("smollm2", "int4")
    names = {p.name for p in out.iterdir()}
    assert {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml",
            "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"} <= names
    assert not any(name.endswith(".py") or name.endswith(".safetensors") for name in names)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2

    model = ov.Core().read_model(out / "openvino_model.xml")
    assert {i.get_any_name() for i in model.inputs} == {"input_ids", "attention_mask", "position_ids", "beam_idx"}
    assert [o.get_any_name() for o in model.outputs] == ["logits"]
    assert len(model.get_sinks()) == 2 * 30  # K and V state per layer
    layers = json.loads(model.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    # 576 is not a multiple of 128: those layers fall back to group 64, as with optimum-cli.
    assert layers == {"int4_sym_g128": 30, "int4_sym_g64": 68, "int8_asym": 113}
    assert model.get_rt_info(["ovgenai_chat", "weight_format"]).astype(str) == "int4"

    fp32 = (checkpoint("smollm2") / "model.safetensors").stat().st_size
    assert (out / "openvino_model.bin").stat().st_size < fp32 / 4


def whole_model_nncf(source: Path, weight_format: str, sym: bool) -> ov.Model:
    """The reference: the uncompressed graph of `source`, compressed all at once by nncf.compress_weights
    with the presets' parameters, as optimum-cli does (and as convert did before it streamed)."""
    import nncf

    from convert import graph, models
    from convert.sources import open_source

    source = open_source(source)
    args = models.model_args(source.config)
    weights = source.weights()
    models.sanitize(source.config, args, weights)
    model = graph.build_model(models.architecture(source.config), args, weights)
    # Routers stay in full precision (convert.experts.router_logits), as llama.cpp keeps them.
    routers = nncf.IgnoredScope(patterns=[r".*\.router_logits"], validate=False)
    if weight_format == "int8":
        mode = nncf.CompressWeightsMode.INT8_SYM if sym else nncf.CompressWeightsMode.INT8_ASYM
        return nncf.compress_weights(model, mode=mode, ignored_scope=routers)
    int4 = dict(mode=nncf.CompressWeightsMode.INT4_SYM if sym else nncf.CompressWeightsMode.INT4_ASYM, group_size=128,
                advanced_parameters=nncf.AdvancedCompressionParameters(
                    group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST))
    # A mixture's stacked experts [E, N, K] all go int4 first; the ratio then splits the dense layers.
    def stacked_weight(port) -> bool:
        node = port.get_source_output().get_node()
        while node.get_type_name() == "Convert":  # bf16 → f32
            node = node.input_value(0).get_node()
        return node.get_type_name() == "Constant" and len(node.get_output_shape(0)) == 3

    multiplies = [op for op in model.get_ordered_ops() if op.get_type_name() in ("MatMul", "Gather")]
    dense = [op.get_friendly_name() for op in multiplies if not any(map(stacked_weight, op.inputs()))]
    if len(dense) < len(multiplies):
        model = nncf.compress_weights(model, ratio=1.0, all_layers=True, **int4,
                                      ignored_scope=nncf.IgnoredScope(names=dense, validate=False))
    return nncf.compress_weights(model, ratio=0.6, ignored_scope=routers, **int4)


@pytest.mark.parametrize("name, weight_format, sym, band_weights", [
    ("smollm2", "int4", True, None),  # tied embedding, groups of 64 where 128 does not divide 576
    ("qwen2-bias-fp16-sharded", "int4", False, None),  # f16 weights, biases, two shards
    ("phi3", "int4", True, None),  # bf16, fused qkv and gate_up split into bands, own lm_head
    ("llama-bf16-llama3-rope", "int8", False, None),
    # Every weight compressed in bands of 40 rows or fewer (as Gemma 4's 2.35 G-weight per-layer table is, in
    # bands of 128 M weights), the last band shorter: joined, the bands are what one NNCF call writes.
    ("llama-bf16-llama3-rope", "int4", True, 40 * 128),
    # Stacked experts [E, N, K]: one weight each for the ratio, compressed expert by expert; and in bands of
    # three experts (the last band two).
    ("qwen3_moe", "int4", True, None),
    ("qwen3_moe", "int8", False, 3 * 32 * 64),
    ("gpt_oss", "int4", True, None),  # gate and up interleaved in one stacked weight, biases, sinks
])
def test_compressing_weight_by_weight_stores_what_whole_model_nncf_stores(converted, checkpoint, tmp_path, monkeypatch,
                                                                            name, weight_format, sym, band_weights):
    """convert compresses one weight at a time as it reads it; its IR must hold the very bytes NNCF
    writes compressing the whole model at once: the same int4/int8 split by sensitivity, the same
    group sizes, scales and zero points."""
    from convert import compress, convert
    from convert.compress import layer_precisions

    if band_weights:
        monkeypatch.setattr(compress, "BAND_WEIGHTS", band_weights)
    if name == "smollm2":
        streamed = converted(name, weight_format)
    else:
        streamed = convert(checkpoint(name), tmp_path / "streamed", weight_format=weight_format, sym=sym)
    reference = whole_model_nncf(checkpoint(name), weight_format, sym)
    ov.save_model(reference, tmp_path / "reference.xml")

    precisions = layer_precisions(ov.Core().read_model(streamed / "openvino_model.xml"))
    assert precisions == layer_precisions(reference)
    if weight_format == "int4":
        assert any(p.startswith("int4") for p in precisions) and any(p.startswith("int8") for p in precisions)
    assert (streamed / "openvino_model.bin").read_bytes() == (tmp_path / "reference.bin").read_bytes()


def test_weight_bytes_are_the_stored_values_scales_and_zero_points(converted):
    """What decode_profile.py divides by a layer's time: int4_sym in groups of G stores half a byte per
    weight and an f16 scale per group; int8_asym a byte per weight, a u8 zero point and an f16 scale per
    row."""
    from convert.compress import weight_bytes, weight_layers, weight_precision

    model = ov.Core().read_model(converted("smollm2", "int4") / "openvino_model.xml")
    seen = set()
    for name, weight in weight_layers(model).items():
        precision = weight_precision(weight)
        rows, columns = weight.get_output_shape(0)
        if precision.startswith("int4_sym_g"):
            group = int(precision.rsplit("g", 1)[1])
            expected = rows * columns // 2 + rows * columns // group * 2
        elif precision == "int8_asym":
            expected = rows * columns + rows * 3
        else:
            continue
        seen.add(precision[:4])
        assert weight_bytes(weight) == expected, name
    assert seen == {"int4", "int8"}


@pytest.mark.parametrize("weight_format", ["int8", "fp16"])
def test_reference_formats_run_in_llmpipeline(converted, weight_format):
    assert "Paris" in ask(converted("smollm2", weight_format), "What is the capital of France?")


TOKENIZER_SAMPLES = [
    "Hello, world!",
    "Ünïcödé façade — naïve café, 北京欢迎你, こんにちは, 🤖🚀👍🏽",
    "tabs\tand  double  spaces\n\nnew lines\r\n   leading and trailing   ",
    "def add(a, b):\n    return a + b  # sum\n\nprint(add(1, 2))",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "",
]


def test_tokenizer_ir_matches_hf_tokenizer(converted, tokenizer):
    out = converted("smollm2", "int4")
    core = ov.Core()
    encode = core.compile_model(out / "openvino_tokenizer.xml", "CPU")
    decode = core.compile_model(out / "openvino_detokenizer.xml", "CPU")
    for text in TOKENIZER_SAMPLES:
        expected = tokenizer(text).input_ids
        ids = encode([text])["input_ids"][0].tolist()
        assert ids == expected, text
        if expected:
            decoded = decode(np.array([expected], np.int64))["string_output"][0]
            assert decoded == tokenizer.decode(expected, skip_special_tokens=True), text
    template = ov.Core().read_model(out / "openvino_tokenizer.xml").get_rt_info(["chat_template"]).astype(str)
    assert template == tokenizer.chat_template


# --- bad input: one line on stderr, exit code ≠ 0, no traceback, nothing left behind -------------


def assert_clean_failure(result: subprocess.CompletedProcess, out: Path, expect: str):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert expect in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_path(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", tmp_path / "nothing-here", "-o", out), out, "no such directory")


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", tmp_path / "empty", "-o", out), out, "no config.json")


def test_unsupported_model_type(tmp_path, checkpoint):
    src = copy_checkpoint(checkpoint("llama"), tmp_path / "gpt2")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", src, "-o", out), out,
                         "model_type 'gpt2' is not supported; supported: exaone4, gemma2, gemma3, gemma3_text, gemma4")


@pytest.mark.parametrize("name, change, message", [
    ("granitemoehybrid", {"layer_types": ["mamba", "cross_attention"]},
     "granitemoehybrid: layer type 'cross_attention' is not supported (mamba, attention are)"),
    ("gpt_oss", {"quantization_config": {"quant_method": "bitsandbytes"}},
     "gpt_oss: bitsandbytes quantized checkpoints are not supported (bf16 and MXFP4 ones are)"),
])
def test_the_families_unbuilt_variants_are_refused_by_name(name, change, message, tmp_path, checkpoint):
    src = copy_checkpoint(checkpoint(name), tmp_path / name)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, **change}))
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", src, "-o", out), out, message)


def test_truncated_safetensors(tmp_path, checkpoint):
    src = copy_checkpoint(checkpoint("llama"), tmp_path / "truncated")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", src, "-o", out), out, "not a readable safetensors file")


def test_pickle_only_checkpoint_is_refused(tmp_path, checkpoint):
    src = copy_checkpoint(checkpoint("llama"), tmp_path / "pickle")
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", src, "-o", out), out, "pickle")


def test_existing_output_is_not_clobbered(tmp_path, checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_ovchat("convert", checkpoint("llama"), "-o", out)
    assert result.returncode != 0 and "already exists; pass --force" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_force_replaces_existing_output(tmp_path, checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = run_ovchat("convert", checkpoint("llama"), "-o", out, "--weight-format", "fp32", "--force")
    assert result.returncode == 0, result.stderr
    assert (out / "openvino_model.xml").exists() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def hub_env(tmp_path, **extra) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **extra}
    env.pop("HF_HUB_CACHE", None)
    return env


def test_hub_id_while_offline(tmp_path):
    out = tmp_path / "out"
    result = run_ovchat("convert", "someone/some-model", "-o", out, env=hub_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert_clean_failure(result, out, "'someone/some-model'")
    assert "not in the local Hugging Face cache" in result.stderr


def test_hub_id_when_hub_is_unreachable(tmp_path):
    # A closed port on loopback: the same failure as no network, without waiting for timeouts.
    out = tmp_path / "out"
    env = hub_env(tmp_path, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    result = run_ovchat("convert", "someone/some-model", "-o", out, env=env)
    assert_clean_failure(result, out, "'someone/some-model'")
    assert "unreachable" in result.stderr


def test_hub_id_converts_from_local_cache_when_offline(tmp_path, checkpoint):
    snapshot = tmp_path / "hf-home" / "hub" / "models--someone--tiny-llama" / "snapshots" / "0123abcd"
    copy_checkpoint(checkpoint("llama"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    out = tmp_path / "out"
    env = hub_env(tmp_path, HF_HUB_OFFLINE="1")
    result = run_ovchat("convert", "someone/tiny-llama", "-o", out, "--weight-format", "fp32", env=env)
    assert result.returncode == 0, result.stderr
    assert (out / "openvino_model.xml").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_conversion_leaves_nothing(tmp_path, checkpoint, signum):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "ovgenai_chat.cli", "convert", str(checkpoint("smollm2")), "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stderr = ""
        for line in process.stderr:  # interrupt in the slowest step, with the staging directory full
            stderr += line
            if line.startswith("Compressing each weight"):
                break
        time.sleep(1)
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
        process.send_signal(signum)
        stderr += process.stderr.read()
        assert process.wait(timeout=120) != 0
    finally:
        process.kill()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "Error: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_the_cli_starts_no_thread_before_it_blocks_signals():
    """`ovchat convert` and `ovchat eval` block Ctrl-C and SIGTERM in every thread when they start; a thread
    started earlier (numpy's OpenBLAS pool, imported with the CLI) could take SIGTERM and die by it."""
    probe = "import os, sys\nimport ovgenai_chat.cli\nprint(len(os.listdir('/proc/self/task')), 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["1", "False"], result.stderr


@pytest.mark.parametrize("source", ["llama", "gguf", "qwen3_5-multimodal", "lfm2", "gemma3-vision", "gemma4-vision",
                                    "qwen3_vl-vision", "qwen3_5_moe-vision", "lfm2_moe-expert-bias", "gemma4-moe",
                                    "gpt_oss-mxfp4",
                                    "granitemoehybrid-mamba-moe",
                                    "qwen3_moe-256-gguf"])
def test_conversion_never_imports_torch(tmp_path, checkpoint, vlm_checkpoint, source):
    """The convert extra has no torch: a conversion must not need it (here it cannot import it), vision towers
    included."""
    import smollm2

    if source == "gguf":
        src = smollm2.gguf_dir() / smollm2.GGUF_NAME
    elif source.endswith("-gguf"):  # a mixture's experts in GGUF blocks, K-quants among them
        from gguf_files import write_gguf

        src = write_gguf(checkpoint(source.removesuffix("-gguf")), tmp_path / "moe.gguf", smollm2.gguf_dir() / smollm2.GGUF_NAME,
                         {"ffn_gate_exps": "Q4_K", "ffn_up_exps": "Q8_0", "ffn_down_exps": "Q4_1"})
    else:
        src = vlm_checkpoint(source) if source.endswith("-vision") else checkpoint(source)
    probe = (
        "import sys\nsys.modules['torch'] = None  # import torch now fails\n"
        "from convert import convert\n"
        f"convert({str(src)!r}, {str(tmp_path / 'out')!r}, weight_format={'None' if 'gguf' in source else repr('int4')})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optimum')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['torch']"  # only our blocking entry
    sees_images = source.endswith("-vision")
    model = "openvino_vision_embeddings_model.xml" if sees_images else "openvino_model.xml"
    assert (tmp_path / "out" / model).exists()
