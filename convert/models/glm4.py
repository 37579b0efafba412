"""GLM-4-0414: GLM-Edge's layer (biases, fused gate_up_proj, rope on interleaved pairs of part of each
head: see glm.py) with a norm after attention and one after the MLP as well, on their outputs."""

import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from .base import ModelArgs  # noqa: F401
from .glm import sanitize  # noqa: F401


def decoder_layer(x, w, args, ctx):
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps)

    attended = attention(norm(x, "input_layernorm"), w, args, ctx, args.rope, args.window(w.layer))
    h = ops.add(x, norm(attended, "post_self_attn_layernorm"))
    mlp = gated_mlp(norm(h, "post_attention_layernorm"), w)
    return ops.add(h, norm(mlp, "post_mlp_layernorm")).output(0)
