"""LFM2 / LFM2.5 (Liquid AI): a hybrid of gated short-convolution layers and attention layers.

A convolution layer projects x to B, C and x̃, and returns out(C · conv(B · x̃)), the convolution
causal and depthwise over `conv_L_cache` steps, its last inputs carried as state (graph.short_conv).
Attention layers are llama's with an RMSNorm over each head of q and k. Every layer is pre-norm with
a SwiGLU MLP; the final norm is called embedding_norm. `layer_types` (or the older `full_attn_idxs`)
says which layer is which; the MLP's width follows Liquid's rule from `intermediate_size`.
"""

from dataclasses import dataclass

import openvino as ov
import openvino.opset13 as ops

from ..graph import short_conv, vector
from . import base
from .base import UnsupportedModel
from .llama import pre_norm_block, transformer_block


@dataclass
class ModelArgs(base.ModelArgs):
    conv_L_cache: int = 3
    conv_bias: bool = False
    block_auto_adjust_ff_dim: bool = True
    block_ffn_dim_multiplier: float | None = 1.0
    block_multiple_of: int = 256
    full_attn_idxs: list | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.layer_types is None:
            attention = range(self.num_hidden_layers) if self.full_attn_idxs is None else self.full_attn_idxs
            self.layer_types = ["full_attention" if i in attention else "conv" for i in range(self.num_hidden_layers)]
        if unknown := set(self.layer_types) - {"full_attention", "conv"}:
            raise UnsupportedModel(f"lfm2 layer type {sorted(unknown)[0]!r} is not supported (conv, full_attention are)")
        if self.block_auto_adjust_ff_dim:  # Liquid's rule: ⅔ of the configured width, scaled, rounded up
            width = int(2 * self.intermediate_size / 3)
            if self.block_ffn_dim_multiplier is not None:
                width = int(self.block_ffn_dim_multiplier * width)
                width = self.block_multiple_of * -(-width // self.block_multiple_of)
            self.intermediate_size = width

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        # The names LFM2's own configs used before transformers took the model in.
        aliases = {"norm_eps": "rms_norm_eps", "block_ff_dim": "intermediate_size", "tie_embedding": "tie_word_embeddings"}
        config = {**config, **{new: config[old] for old, new in aliases.items() if old in config}}
        config.setdefault("tie_word_embeddings", True)
        return super().from_config(config)


def sanitize(weights, args: ModelArgs) -> None:
    """LFM2's names → llama's, where the parts are llama's; the convolution keeps its own."""
    weights.rename({"operator_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                    "q_layernorm": "q_norm", "k_layernorm": "k_norm", "self_attn.out_proj": "self_attn.o_proj",
                    "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
                    "feed_forward.w2": "mlp.down_proj"})
    weights.rename_prefix("model.embedding_norm.", "model.norm.")


def gated_short_conv(x, w, args: ModelArgs, ctx) -> ov.Output:
    """out(C · conv(B · x̃)) with B, C, x̃ the three thirds of in_proj(x)."""
    gate_in, gate_out, h = ops.split(w.linear(x, "conv.in_proj"), -1, 3).outputs()
    h = ops.transpose(ops.multiply(gate_in, h), vector([0, 2, 1]))  # [B, C, T]: time last for the convolution
    h = short_conv(h, w["conv.conv.weight"], w.layer, ctx, w["conv.conv.bias"] if args.conv_bias else None)
    h = ops.multiply(gate_out, ops.transpose(h, vector([0, 2, 1])))
    return w.linear(h, "conv.out_proj")


def decoder_layer(x, w, args, ctx, mlp=None):
    """`mlp`: in place of the gated MLP (lfm2_moe's mixture of experts)."""
    if args.layer_types[w.layer] == "full_attention":
        return transformer_block(x, w, args, ctx, args.rope, qk_norm="rms", mlp=mlp)
    return pre_norm_block(x, w, args, lambda h: gated_short_conv(h, w, args, ctx), mlp)
