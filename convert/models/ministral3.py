"""Ministral 3 (text; also the language model inside a multimodal `mistral3` checkpoint): Mistral's
layer with YaRN rope and Llama 4's attention temperature, queries scaled by
1 + β·log(1 + ⌊position / original_max_position_embeddings⌋), which is 1 within the original window."""

from dataclasses import dataclass

import numpy as np
import openvino.opset13 as ops

from ..graph import F32, scalar, vector
from . import base
from .llama import transformer_block

# Ministral3Config's rope when a config has none.
DEFAULT_ROPE = dict(rope_type="yarn", rope_theta=1_000_000.0, factor=16.0, original_max_position_embeddings=16384,
                    beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0, llama_4_scaling_beta=0.1)


@dataclass
class ModelArgs(base.ModelArgs):
    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        config = base.text_config(config)
        if not any(config.get(key) for key in ("rope_parameters", "rope_scaling", "rope_theta")):
            config = {**config, "rope_parameters": DEFAULT_ROPE}
        return super().from_config(config)


def attention_temperature(position_ids, beta: float, original: int):
    """1 + β·log(1 + ⌊position / original⌋) per position, [B, 1, T, 1]."""
    blocks = ops.floor(ops.divide(ops.convert(position_ids, F32), scalar(float(original), np.float32)))
    scale = ops.add(scalar(1.0, np.float32), ops.multiply(scalar(beta, np.float32), ops.log(ops.add(blocks, scalar(1.0, np.float32)))))
    return ops.unsqueeze(scale, vector([1, 3])).output(0)


def sanitize(weights, args) -> None:
    base.keep_language_model(weights)


def decoder_layer(x, w, args, ctx):
    beta = args.rope_parameters.get("llama_4_scaling_beta")
    temperature = None
    if beta:
        temperature = ctx.shared("llama4-temperature", lambda: attention_temperature(
            ctx.position_ids, beta, args.rope_parameters["original_max_position_embeddings"]))
    return transformer_block(x, w, args, ctx, args.rope, query_scale=temperature)
