"""Granite 4.0 (`granitemoehybrid`): Granite 3's layer and multipliers (granite.decoder_layer) around
either attention, with rope or none (NoPE) by position_embedding_type, or a Mamba-2 mixer (the "-H"
models; graph.mamba2, its convolution and scan carried as state), as layer_types says. The MLP is a fused
shared_mlp (split here) beside, where num_local_experts > 0, a mixture of experts: a router's top
num_experts_per_tok logits softmaxed over those k, experts of fused input_linear [E, 2I, H] (gate rows,
then up rows; split here, as the plugin computes only separate gate and up projections sparsely) and
output_linear [E, H, I]."""

from dataclasses import dataclass

import openvino.opset13 as ops

from ..experts import router_logits, routed_experts, shared_expert, split_fused_gate_up, top_k_softmax
from ..graph import mamba2
from . import granite
from .base import UnsupportedModel
from .phi3 import split_gate_up

ATTENTION, MAMBA = ("attention", "full_attention"), ("mamba", "linear_attention")
EXPERTS = "block_sparse_moe.experts"


@dataclass
class ModelArgs(granite.ModelArgs):
    position_embedding_type: str | None = None
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    shared_intermediate_size: int = 1024
    mamba_n_heads: int = 128
    mamba_n_groups: int = 1
    mamba_d_state: int = 256
    mamba_d_head: int | str = "auto"
    mamba_expand: int = 2
    time_step_limit: tuple = (0.0, float("inf"))

    def __post_init__(self):
        super().__post_init__()
        self.layer_types = self.layer_types or [MAMBA[1]] * self.num_hidden_layers  # GraniteMoeHybridConfig's default
        if unknown := [kind for kind in self.layer_types if kind not in ATTENTION + MAMBA]:
            raise UnsupportedModel(f"granitemoehybrid: layer type {unknown[0]!r} is not supported (mamba, attention are)")
        if self.mamba_d_head == "auto":
            self.mamba_d_head = self.hidden_size * self.mamba_expand // self.mamba_n_heads
        # transformers 5 writes infinity as {"__float__": "Infinity"}
        self.time_step_limit = tuple(float(v["__float__"] if isinstance(v, dict) else v) for v in self.time_step_limit)

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":  # layers_block_type: the older name of layer_types
        return super().from_config({**config, "layer_types": config.get("layer_types") or config.get("layers_block_type")})

    def layer_rope(self, layer: int):
        return self.rope if self.position_embedding_type == "rope" else None

    def is_mamba(self, layer: int) -> bool:
        return self.layer_types[layer] in MAMBA


def sanitize(weights, args: ModelArgs) -> None:
    weights.rename({"shared_mlp.output_linear": "mlp.down_proj", "block_sparse_moe.router.layer": "block_sparse_moe.router",
                    "block_sparse_moe.output_linear": f"{EXPERTS}.down_proj"})
    if "model.layers.0.mlp.gate_proj.weight" in weights:  # a GGUF file's: gate and up apart already
        return
    split_gate_up(weights, args, "shared_mlp.input_linear", args.shared_intermediate_size)
    if args.num_local_experts:
        for i in range(args.num_hidden_layers):
            split_fused_gate_up(weights, f"model.layers.{i}.block_sparse_moe.input_linear.weight", f"model.layers.{i}.{EXPERTS}")


def decoder_layer(x, w, args, ctx):
    mix = None
    if args.is_mamba(w.layer):
        mix = lambda h: mamba2(h, w, ctx, args.mamba_n_heads, args.mamba_d_head, args.mamba_n_groups,  # noqa: E731
                               args.mamba_d_state, args.rms_norm_eps, args.time_step_limit)
    mlp = None
    if args.num_local_experts:
        route = lambda x2d: top_k_softmax(router_logits(x2d, w, "block_sparse_moe.router"), args.num_experts_per_tok)  # noqa: E731
        mlp = lambda h: ops.add(routed_experts(h, w, EXPERTS, args.num_local_experts, route),  # noqa: E731
                                shared_expert(h, w, "mlp")).output(0)
    return granite.decoder_layer(x, w, args, ctx, mix, mlp)
