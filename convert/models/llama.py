"""Llama 2 / 3.x, the reference layout: pre-norm attention and a SwiGLU MLP, each around a residual.
Rope scaling (linear, llama3) is in base.make_rope."""

import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from .base import ModelArgs  # noqa: F401


def pre_norm_block(x, w, args, mix, mlp=None):
    """x + mix(norm(x)), then h + mlp(norm(h)): llama's layer around any token mixer (attention, or a
    hybrid's convolution or recurrence) and any MLP (by default the gated one; a mixture of experts);
    norms scale by (1 + w) where args.norm_plus_one says so."""
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps, args.norm_plus_one)

    h = ops.add(x, mix(norm(x, "input_layernorm")))
    return ops.add(h, (mlp or (lambda h: gated_mlp(h, w)))(norm(h, "post_attention_layernorm"))).output(0)


def transformer_block(x, w, args, ctx, rope, qk_norm=None, mlp=None, **attention_options):
    """pre_norm_block with attention. `rope` None: a layer without rotation (NoPE); `qk_norm` and the
    other options: see graph.attention. The architectures that differ from llama only there call this."""
    return pre_norm_block(x, w, args, lambda h: attention(h, w, args, ctx, rope, args.window(w.layer), qk_norm,
                                                          **attention_options), mlp)


def decoder_layer(x, w, args, ctx):
    return transformer_block(x, w, args, ctx, args.rope)
