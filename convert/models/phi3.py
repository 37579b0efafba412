"""Phi-3: fused qkv_proj and gate_up_proj, split here into llama's separate projections; the
longrope scaling of the 128k variants is in base.make_rope."""

from .base import ModelArgs  # noqa: F401
from .llama import decoder_layer  # noqa: F401


def sanitize(weights, args: ModelArgs) -> None:
    q_rows = args.num_attention_heads * args.head_dim
    kv_rows = args.num_key_value_heads * args.head_dim
    for i in range(args.num_hidden_layers):
        attn = f"model.layers.{i}.self_attn"
        weights.split_rows(
            f"{attn}.qkv_proj.weight",
            {f"{attn}.q_proj.weight": q_rows, f"{attn}.k_proj.weight": kv_rows, f"{attn}.v_proj.weight": kv_rows},
        )
    split_gate_up(weights, args, "mlp.gate_up_proj")


def split_gate_up(weights, args, fused: str, width: int | None = None) -> None:
    """Each layer's fused projection `fused` (gate rows, then up rows, `width` each: by default
    intermediate_size) split into llama's mlp.gate_proj and mlp.up_proj."""
    width = width or args.intermediate_size
    for i in range(args.num_hidden_layers):
        layer = f"model.layers.{i}"
        weights.split_rows(f"{layer}.{fused}.weight",
                           {f"{layer}.mlp.gate_proj.weight": width, f"{layer}.mlp.up_proj.weight": width})
