"""Llama 2 / 3.x, the reference layout: pre-norm attention and a SwiGLU MLP, each around a residual.
Rope scaling (linear, llama3) is in base.make_rope."""

import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from .base import ModelArgs  # noqa: F401


def transformer_block(x, w, args, ctx, rope, qk_norm=None):
    """x + attention(norm(x)), then h + mlp(norm(h)). `rope` None: a layer without rotation (NoPE);
    `qk_norm`: see graph.attention. The architectures that differ from llama only there call this."""
    attended = attention(rms_norm(x, w["input_layernorm.weight"], args.rms_norm_eps), w, args, ctx, rope,
                         args.window(w.layer), qk_norm)
    h = ops.add(x, attended)
    return ops.add(h, gated_mlp(rms_norm(h, w["post_attention_layernorm.weight"], args.rms_norm_eps), w)).output(0)


def decoder_layer(x, w, args, ctx):
    return transformer_block(x, w, args, ctx, args.rope)
