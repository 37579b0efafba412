"""Gemma 3 (text; also the language model inside a multimodal `gemma3` checkpoint).

Against llama: the embedding is scaled by √hidden; every RMSNorm scales by (1 + w); q and k are
RMS-normalised per head; attention and MLP each have a norm before and after them; the MLP is GeGLU
(tanh gelu); layers alternate between sliding-window attention with a local rope and full attention
with the global (possibly scaled) rope; scores are scaled by query_pre_attn_scalar^-½.
"""

from dataclasses import dataclass, field
from functools import cached_property

import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from . import base
from .base import UnsupportedModel, make_rope

# Gemma3TextConfig's defaults: hub configs (the text_config of multimodal ones above all) leave them out.
DEFAULTS = dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
                max_position_embeddings=131_072, sliding_window=4096, tie_word_embeddings=True)


@dataclass
class ModelArgs(base.ModelArgs):
    hidden_activation: str | None = None
    query_pre_attn_scalar: float = 256
    sliding_window_pattern: int = 6
    attn_logit_softcapping: float | None = None
    use_bidirectional_attention: bool = False
    local_rope_parameters: dict = field(default_factory=dict)

    norm_plus_one = True

    def __post_init__(self):
        super().__post_init__()
        self.embed_scale = self.hidden_size**0.5
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if (i + 1) % self.sliding_window_pattern else "full_attention"
                                for i in range(self.num_hidden_layers)]
        if self.attn_logit_softcapping:
            raise UnsupportedModel("attn_logit_softcapping is not supported (scaled_dot_product_attention has no soft cap)")
        if self.use_bidirectional_attention:
            raise UnsupportedModel("bidirectional attention (an embedding model) is not a chat model")

    def check_activation(self) -> None:
        activation = self.hidden_activation or self.hidden_act
        if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UnsupportedModel(f"hidden_activation {activation!r} is not supported (gemma3: gelu_pytorch_tanh)")

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        if "text_config" in config:  # a multimodal gemma3 checkpoint: its language model
            tied = {k: config[k] for k in ("tie_word_embeddings",) if k in config}
            config = {**config["text_config"], **tied, "model_type": config["model_type"]}
        config = {**DEFAULTS, "hidden_act": "gelu_pytorch_tanh", **config}
        full, local = _rope_parameters(config)
        args = super().from_config({**config, "rope_parameters": None})
        args.rope_parameters, args.local_rope_parameters = full, local
        return args

    @cached_property
    def local_rope(self) -> base.Rope:
        return make_rope(self.local_rope_parameters, self.head_dim, self.max_position_embeddings)


def _rope_parameters(config: dict) -> tuple[dict, dict]:
    """(full-attention rope, sliding-attention rope) from transformers 5's per-layer-type
    `rope_parameters` or 4.x's `rope_theta` + `rope_scaling` and `rope_local_base_freq`."""
    nested = config.get("rope_parameters") or {}
    if "full_attention" not in nested and "sliding_attention" not in nested:  # the 4.x form
        nested = {"full_attention": {**(config.get("rope_scaling") or {}), "rope_theta": config.get("rope_theta", 1e6)},
                  "sliding_attention": {"rope_theta": config.get("rope_local_base_freq", 1e4)}}
    return tuple(base.rope_parameters({"rope_parameters": nested.get(kind), "rope_theta": theta})
                 for kind, theta in (("full_attention", 1e6), ("sliding_attention", 1e4)))


def sanitize(weights, args: ModelArgs) -> None:
    """A multimodal checkpoint's language model under the text model's names; its vision tower dropped."""
    for old in ("model.language_model.", "language_model.model."):
        weights.rename_prefix(old, "model.")
    weights.rename_prefix("language_model.lm_head.", "lm_head.")
    for name in [n for n in weights if "vision_tower." in n or "multi_modal_projector." in n]:
        weights.discard(name)


def decoder_layer(x, w, args, ctx):
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps, args.norm_plus_one)

    window = args.window(w.layer)
    scale = None if args.query_pre_attn_scalar == args.head_dim else args.query_pre_attn_scalar**-0.5
    attended = attention(norm(x, "input_layernorm"), w, args, ctx, args.rope if window is None else args.local_rope,
                         window, qk_norm="rms+1", scale=scale)
    h = ops.add(x, norm(attended, "post_attention_layernorm"))
    mlp = gated_mlp(norm(h, "pre_feedforward_layernorm"), w, activation="gelu_tanh")
    return ops.add(h, norm(mlp, "post_feedforward_layernorm")).output(0)
