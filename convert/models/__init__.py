"""One module per architecture: its ModelArgs (from config.json), its `decoder_layer` composed from
convert.graph's blocks, and, where its tensors are named or fused differently, `sanitize`, which puts
them under llama's names."""

from __future__ import annotations

import importlib

from ..sources import Weights
from .base import ModelArgs, UnsupportedModel

SUPPORTED = ("exaone4", "gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_assistant", "gemma4_text", "glm", "glm4", "gpt_oss", "granite", "granitemoehybrid", "lfm2", "lfm2_moe", "llama",
             "ministral", "ministral3", "mistral", "mistral3", "olmo2", "olmo3", "phi3", "qwen2", "qwen3", "qwen3_moe", "qwen3_5",
             "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_vl", "smollm3")
# model_type → the module that builds it, where the names differ
MODULES = {"gemma3_text": "gemma3", "gemma4_text": "gemma4", "ministral": "mistral", "mistral3": "ministral3", "qwen3_5_moe_text": "qwen3_5_moe",
           "qwen3_5_text": "qwen3_5"}


def architecture(config: dict):
    """The module for config's model_type; a one-line error naming the supported ones otherwise."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise UnsupportedModel(f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED)}")
    return importlib.import_module(f"{__name__}.{MODULES.get(model_type, model_type)}")


def model_args(config: dict) -> ModelArgs:
    return architecture(config).ModelArgs.from_config(config)


def sanitize(config: dict, args: ModelArgs, weights: Weights) -> None:
    """Put the checkpoint's tensors under llama names; drop what the graph computes or shares."""
    module = architecture(config)
    if hasattr(module, "sanitize"):
        module.sanitize(weights, args)
    for name in [name for name in weights if name.endswith("rotary_emb.inv_freq")]:
        weights.discard(name)  # rope tables saved by old checkpoints
    if args.tie_word_embeddings:
        weights.discard("lm_head.weight")
    elif "lm_head.weight" not in weights:
        raise UnsupportedModel("config says tie_word_embeddings is false but the checkpoint has no lm_head.weight")
