"""Qwen3.5 (text; also the language model inside a multimodal `qwen3_5` checkpoint): a hybrid of
Gated DeltaNet layers and gated full attention, three to one.

A Gated DeltaNet layer (Yang et al., 2024) keeps a matrix S per value head instead of a KV cache:
in_proj_qkv → causal depthwise convolution (linear_conv_kernel_dim taps) + SiLU → q, k, v, each
token updating S ← S·e^g + k ⊗ β(v − Sᵀk) and reading o = Sᵀq (graph.gated_delta_rule), with
β = σ(in_proj_b x), g = −exp(A_log)·softplus(in_proj_a x + dt_bias); o goes through an RMSNorm per
head gated by SiLU(in_proj_z x), then out_proj. Full-attention layers are Qwen3's with (1 + w) norms,
partial rotary (a quarter of each head), and their output gated by σ of a second half of q_proj.
Every RMSNorm outside the DeltaNet scales by (1 + w).

The checkpoints carry a multi-token-prediction head (`mtp.*`, mtp_num_hidden_layers layers of full
attention with the model's MLP; graph.build_mtp), which OpenVINO GenAI drafts tokens with in the
multimodal layout; where it cannot, the conversion sets mtp_num_hidden_layers to 0 and the head is left out.
"""

from dataclasses import dataclass, replace

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import gated_delta_rule, read_state, rms_norm, short_conv, split_heads, vector, write_state
from ..vision.qwen import qwen_vision
from . import base
from .base import UnsupportedModel
from .llama import pre_norm_block, transformer_block

# Qwen3_5TextConfig's defaults, for keys a hub config leaves out.
POSITION_ROWS = 4  # GenAI sends [4, B, T]: the text positions (unused here), then M-RoPE's t, h, w
DEFAULTS = dict(head_dim=256, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
                linear_num_key_heads=16, linear_num_value_heads=32, rms_norm_eps=1e-6, partial_rotary_factor=0.25,
                max_position_embeddings=32768)


@dataclass
class ModelArgs(base.ModelArgs):
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    full_attention_interval: int = 4
    # llama.cpp's order of the value heads (in its GGUF files): value head j reads key head j mod Hk,
    # where Qwen's checkpoints group them, j // (Hv/Hk).
    value_heads_tiled: bool = False
    mtp_num_hidden_layers: int = 0

    norm_plus_one = True

    def __post_init__(self):
        super().__post_init__()
        self.rope_parameters.setdefault("mrope_section", [11, 11, 10])  # Qwen3.5's, where the config omits it
        if self.layer_types is None:
            self.layer_types = ["full_attention" if (i + 1) % self.full_attention_interval == 0 else "linear_attention"
                                for i in range(self.num_hidden_layers)]
        if unknown := set(self.layer_types) - {"full_attention", "linear_attention"}:
            raise UnsupportedModel(f"qwen3_5 layer type {sorted(unknown)[0]!r} is not supported")
        if self.linear_num_value_heads % self.linear_num_key_heads:
            raise UnsupportedModel("linear_num_value_heads must be a multiple of linear_num_key_heads")

    @property
    def mtp(self) -> "ModelArgs":
        """The multi-token-prediction head's layers (`mtp.layers.*`): full attention, the model's MLP."""
        return replace(self, num_hidden_layers=self.mtp_num_hidden_layers,
                       layer_types=["full_attention"] * self.mtp_num_hidden_layers)

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        if "text_config" in config:  # a multimodal qwen3_5 checkpoint: its language model
            tied = {k: config[k] for k in ("tie_word_embeddings",) if k in config}
            config = {**config["text_config"], **tied, "model_type": config["model_type"]}
        return super().from_config({**DEFAULTS, **config})


def vision_models(config: dict, weights, compress) -> dict:
    return qwen_vision(config, weights, compress)


def sanitize(weights, args: ModelArgs) -> None:
    """A multimodal checkpoint's language model under the text model's names; its vision tower dropped,
    and the multi-token-prediction head unless args.mtp_num_hidden_layers asks for it."""
    weights.rename_prefix("model.language_model.", "model.")
    dropped = ("model.visual.",) if args.mtp_num_hidden_layers else ("model.visual.", "mtp.")
    for name in [n for n in weights if n.startswith(dropped)]:
        weights.discard(name)
    for name in [n for n in weights if n.endswith(".linear_attn.A_log")]:  # the decay rate A = −exp(A_log), in f32
        weights.transform(name, name.removesuffix("_log"), lambda a_log: -np.exp(np.asarray(a_log, np.float32)))


def gated_delta_net(x, w, args: ModelArgs, ctx) -> ov.Output:
    key_heads, value_heads = args.linear_num_key_heads, args.linear_num_value_heads
    key_dim, value_dim = args.linear_key_head_dim, args.linear_value_head_dim

    mixed = ops.transpose(w.linear(x, "linear_attn.in_proj_qkv"), vector([0, 2, 1]))  # [B, C, T]
    mixed = short_conv(mixed, w["linear_attn.conv1d.weight"], w.layer, ctx)
    mixed = ops.transpose(ops.swish(mixed), vector([0, 2, 1]))
    q, k, v = ops.variadic_split(mixed, -1, vector([key_heads * key_dim] * 2 + [value_heads * value_dim])).outputs()
    q, k, v = split_heads(q, key_heads, key_dim), split_heads(k, key_heads, key_dim), split_heads(v, value_heads, value_dim)

    beta = ops.sigmoid(w.linear(x, "linear_attn.in_proj_b"))
    dt = ops.add(w.linear(x, "linear_attn.in_proj_a"), ops.constant(np.asarray(w["linear_attn.dt_bias"], np.float32)))
    g = ops.multiply(ops.softplus(dt), ops.constant(np.asarray(w["linear_attn.A"], np.float32)))

    state_name = f"cache_params.past.ssm.{w.layer}"
    state = read_state(state_name, ctx, [value_heads, key_dim, value_dim])
    out, state = gated_delta_rule(q, k, v, g, beta, state, args.value_heads_tiled)
    write_state(state, state_name, ctx)

    gate = split_heads(w.linear(x, "linear_attn.in_proj_z"), value_heads, value_dim)
    out = ops.multiply(rms_norm(out, w["linear_attn.norm.weight"], args.rms_norm_eps), ops.swish(gate))
    return w.linear(ops.reshape(out, vector([0, 0, value_heads * value_dim]), special_zero=True), "linear_attn.out_proj")


def decoder_layer(x, w, args, ctx, mlp=None):
    """`mlp`: in place of the gated MLP (qwen3_5_moe's mixture of experts)."""
    if args.layer_types[w.layer] == "linear_attention":
        return pre_norm_block(x, w, args, lambda h: gated_delta_net(h, w, args, ctx), mlp)
    return transformer_block(x, w, args, ctx, args.rope, qk_norm="rms+1", output_gate=True, mlp=mlp)
