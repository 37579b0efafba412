"""OLMo 2: norms after attention and after the MLP, on their outputs, instead of before them; q and
k RMS-normalised over the whole projection (all heads at once)."""

import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from .base import ModelArgs  # noqa: F401


def post_norm_block(x, w, args, ctx, rope, qk_norm):
    """x + norm(attention(x)), then h + norm(mlp(h)); OLMo 2 and EXAONE 4 differ in the q/k norm and rope."""
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps)

    h = ops.add(x, norm(attention(x, w, args, ctx, rope, args.window(w.layer), qk_norm), "post_attention_layernorm"))
    return ops.add(h, norm(gated_mlp(h, w), "post_feedforward_layernorm")).output(0)


def decoder_layer(x, w, args, ctx):
    return post_norm_block(x, w, args, ctx, args.rope, qk_norm="rms_across_heads")
