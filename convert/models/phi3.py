"""Phi-3: fused qkv_proj and gate_up_proj, split here into llama's separate projections; the
longrope scaling of the 128k variants is in base.make_rope."""

from .base import ModelArgs  # noqa: F401
from .llama import decoder_layer  # noqa: F401


def sanitize(weights, args: ModelArgs) -> None:
    q_rows = args.num_attention_heads * args.head_dim
    kv_rows = args.num_key_value_heads * args.head_dim
    for i in range(args.num_hidden_layers):
        attn, mlp = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        weights.split_rows(
            f"{attn}.qkv_proj.weight",
            {f"{attn}.q_proj.weight": q_rows, f"{attn}.k_proj.weight": kv_rows, f"{attn}.v_proj.weight": kv_rows},
        )
        weights.split_rows(
            f"{mlp}.gate_up_proj.weight",
            {f"{mlp}.gate_proj.weight": args.intermediate_size, f"{mlp}.up_proj.weight": args.intermediate_size},
        )
