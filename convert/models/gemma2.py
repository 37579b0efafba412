"""Gemma 2: Gemma 3's layer without the q/k norms, with the attention scores soft-capped
(cap · tanh(s / cap)); sliding-window and full layers alternate and share one rope."""

from dataclasses import dataclass

from . import gemma3
from .gemma3 import sandwich_block, sanitize  # noqa: F401

# Gemma2Config's defaults, for keys a hub config leaves out.
DEFAULTS = dict(gemma3.DEFAULTS, vocab_size=256_000, max_position_embeddings=8192, attn_logit_softcapping=50.0,
                final_logit_softcapping=30.0, sliding_window_pattern=2)


@dataclass
class ModelArgs(gemma3.ModelArgs):
    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        # base's reading, not Gemma 3's: one rope for every layer
        return super(gemma3.ModelArgs, cls).from_config({**DEFAULTS, "hidden_act": "gelu_pytorch_tanh", **config})


def decoder_layer(x, w, args, ctx):
    return sandwich_block(x, w, args, ctx, qk_norm=None)
