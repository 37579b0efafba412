"""Phi-3: fused qkv_proj and gate_up_proj, split here into llama's separate projections; the
longrope scaling of the 128k variants is in base.make_rope."""

import numpy as np

from .base import ModelArgs  # noqa: F401


def sanitize(weights: dict, args: ModelArgs) -> dict:
    q_size = args.num_attention_heads * args.head_dim
    kv_size = args.num_key_value_heads * args.head_dim
    for i in range(args.num_hidden_layers):
        prefix = f"model.layers.{i}"
        qkv = weights.pop(f"{prefix}.self_attn.qkv_proj.weight")
        q, k, v = np.split(qkv, [q_size, q_size + kv_size])
        weights[f"{prefix}.self_attn.q_proj.weight"] = q
        weights[f"{prefix}.self_attn.k_proj.weight"] = k
        weights[f"{prefix}.self_attn.v_proj.weight"] = v
        gate, up = np.split(weights.pop(f"{prefix}.mlp.gate_up_proj.weight"), 2)
        weights[f"{prefix}.mlp.gate_proj.weight"] = gate
        weights[f"{prefix}.mlp.up_proj.weight"] = up
    return weights
