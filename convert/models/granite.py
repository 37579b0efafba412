"""Granite 3.x (dense): llama's layer with four scalar multipliers — on the embedding, on each
residual branch, on the attention scores (instead of 1/√head_dim), and 1/logits_scaling on the logits."""

from dataclasses import dataclass

import numpy as np
import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm, scalar
from . import base


@dataclass
class ModelArgs(base.ModelArgs):
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    logits_scaling: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self.embed_scale = None if self.embedding_multiplier == 1.0 else self.embedding_multiplier
        self.logits_scale = None if self.logits_scaling == 1.0 else 1.0 / self.logits_scaling


def decoder_layer(x, w, args, ctx):
    def residual(h, branch):
        return ops.add(h, ops.multiply(branch, scalar(args.residual_multiplier, np.float32))).output(0)

    attended = attention(rms_norm(x, w["input_layernorm.weight"], args.rms_norm_eps), w, args, ctx, args.layer_rope(w.layer),
                         args.window(w.layer), scale=args.attention_multiplier)
    h = residual(x, attended)
    return residual(h, gated_mlp(rms_norm(h, w["post_attention_layernorm.weight"], args.rms_norm_eps), w))
