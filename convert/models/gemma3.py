"""Gemma 3 (text; also the language model inside a multimodal `gemma3` checkpoint).

Against llama: the embedding is scaled by √hidden; every RMSNorm scales by (1 + w); q and k are
RMS-normalised per head; attention and MLP each have a norm before and after them; the MLP is GeGLU
(tanh gelu); layers alternate between sliding-window attention with a local rope and full attention
with the global (possibly scaled) rope; scores are scaled by query_pre_attn_scalar^-½.
"""

from dataclasses import dataclass

import numpy as np
import openvino.opset13 as ops

from ..graph import attention, gated_mlp, rms_norm
from ..vision.siglip import gemma3_vision
from . import base
from .base import UnsupportedModel

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

    norm_plus_one = True

    def __post_init__(self):
        super().__post_init__()
        self.embed_scale = self.hidden_size**0.5
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if (i + 1) % self.sliding_window_pattern else "full_attention"
                                for i in range(self.num_hidden_layers)]
        if self.use_bidirectional_attention:
            raise UnsupportedModel("bidirectional attention (an embedding model) is not a chat model")

    def check_activation(self) -> None:
        activation = self.hidden_activation or self.hidden_act
        if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UnsupportedModel(f"hidden_activation {activation!r} is not supported (gemma: gelu_pytorch_tanh)")

    @property
    def attention_scale(self) -> float | None:
        """Scores are scaled by query_pre_attn_scalar^-½ (None: the usual head_dim^-½)."""
        return None if self.query_pre_attn_scalar == self.head_dim else self.query_pre_attn_scalar**-0.5

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        config = {**DEFAULTS, "hidden_act": "gelu_pytorch_tanh", **base.text_config(config)}
        # 4.x configs: rope_theta + rope_scaling for full attention, rope_local_base_freq for sliding
        return super().from_config({**config, **base.ropes_by_layer_type(
            config, {**(config.get("rope_scaling") or {}), "rope_theta": config.get("rope_theta", 1e6)},
            {"rope_theta": config.get("rope_local_base_freq", 1e4)})})


def sanitize(weights, args: ModelArgs) -> None:
    base.keep_language_model(weights)


def vision_models(config: dict, weights, compress) -> dict:
    """SigLIP and the projector to the language model's width: 256 soft tokens per image."""
    return {"vision_embeddings": gemma3_vision(config, weights, compress)}


def multimodal_inputs(args: ModelArgs) -> dict:
    """GenAI sends token_type_ids (1 on an image's soft tokens) to a Gemma 3 language model."""
    return {"token_type_ids": ops.parameter([-1, -1], np.int64, name="token_type_ids")}


def sandwich_block(x, w, args, ctx, qk_norm: str | None):
    """Gemma's layer: a norm before and after attention and before and after the MLP, (1 + w) each."""
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps, args.norm_plus_one)

    attended = attention(norm(x, "input_layernorm"), w, args, ctx, args.layer_rope(w.layer), args.window(w.layer),
                         qk_norm=qk_norm, scale=args.attention_scale, softcap=args.attn_logit_softcapping)
    h = ops.add(x, norm(attended, "post_attention_layernorm"))
    mlp = gated_mlp(norm(h, "pre_feedforward_layernorm"), w, activation="gelu_tanh")
    return ops.add(h, norm(mlp, "post_feedforward_layernorm")).output(0)


def decoder_layer(x, w, args, ctx):
    return sandwich_block(x, w, args, ctx, qk_norm="rms+1")
