"""Granite 3.x (dense): llama's layer with four scalar multipliers — on the embedding, on each
residual branch, on the attention scores (instead of 1/√head_dim), and 1/logits_scaling on the logits."""

from dataclasses import dataclass

import numpy as np
import openvino.opset13 as ops

from ..graph import attention, gated_mlp, scalar
from . import base
from .llama import pre_norm_block


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


def decoder_layer(x, w, args, ctx, mix=None, mlp=None):
    """llama's pre-norm layer with each residual branch scaled; `mix` (by default attention) and `mlp`
    (by default the gated MLP) as in llama.pre_norm_block (Granite 4.0's Mamba-2 layers and experts)."""
    def scaled(branch):
        return lambda h: ops.multiply(branch(h), scalar(args.residual_multiplier, np.float32)).output(0)

    mix = mix or (lambda h: attention(h, w, args, ctx, args.layer_rope(w.layer), args.window(w.layer),
                                      scale=args.attention_multiplier))
    return pre_norm_block(x, w, args, scaled(mix), scaled(mlp or (lambda h: gated_mlp(h, w))))
