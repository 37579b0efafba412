"""Qwen3: llama's layer with an RMSNorm over each head of q and k before the rotation, an explicit
head_dim and no biases; its config's sliding window applies only with use_sliding_window, as Qwen2's."""

from .llama import transformer_block
from .qwen2 import ModelArgs  # noqa: F401


def decoder_layer(x, w, args, ctx):
    return transformer_block(x, w, args, ctx, args.rope, qk_norm="rms")
