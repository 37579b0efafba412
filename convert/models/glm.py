"""GLM-Edge (`glm`): llama's layer with q/k/v biases, a fused gate_up_proj (split here), and rope on
interleaved pairs (x₀x₁, x₂x₃, …) of the first partial_rotary_factor of each head.

The pairs are reordered here into llama's halves by permuting the q and k rows of each head — the same
permutation on both leaves every q·k unchanged — so the graph keeps the rotation the CPU plugin fuses."""

import numpy as np

from .base import ModelArgs  # noqa: F401
from .llama import decoder_layer  # noqa: F401
from .phi3 import split_gate_up


def pairs_to_halves(head_dim: int, rotary_dim: int, heads: int) -> np.ndarray:
    """Row order taking each head's rotary channels from interleaved pairs to two halves: channel 2i
    to i and 2i + 1 to rotary_dim/2 + i; the channels past rotary_dim stay where they are."""
    head = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2), np.arange(rotary_dim, head_dim)])
    return (np.arange(heads)[:, None] * head_dim + head).reshape(-1)


def _take_rows(order: np.ndarray):
    def take(tensor):
        return tensor.take_rows(order) if hasattr(tensor, "take_rows") else np.asarray(tensor)[order]
    return take


def rotate_halves(weights, args) -> None:
    """q_proj and k_proj (weights and biases) in the row order of pairs_to_halves."""
    for i in range(args.num_hidden_layers):
        for proj, heads in (("q_proj", args.num_attention_heads), ("k_proj", args.num_key_value_heads)):
            order = pairs_to_halves(args.head_dim, args.rope.rotary_dim, heads)
            for kind in ("weight", "bias"):
                name = f"model.layers.{i}.self_attn.{proj}.{kind}"
                if name in weights:
                    weights.transform(name, name, _take_rows(order))


def sanitize(weights, args) -> None:
    split_gate_up(weights, args, "mlp.gate_up_proj")
    rotate_halves(weights, args)
