"""Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B): Qwen3's attention, and in place of its MLP a mixture of
`num_experts` SwiGLU experts of width moe_intermediate_size, of which a softmax router picks
`num_experts_per_tok` per token (renormalised where norm_topk_prob); layers listed in mlp_only_layers,
or off the decoder_sparse_step, keep a dense MLP."""

from dataclasses import dataclass, field

from ..experts import router_logits, routed_experts, softmax_top_k, stack_experts
from . import qwen2
from .llama import transformer_block

EXPERT_NAMES = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}


@dataclass
class ModelArgs(qwen2.ModelArgs):
    num_experts: int = 128
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: list = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        if "num_local_experts" in config:  # the name transformers 5 saves num_experts under
            config = {"num_experts": config["num_local_experts"], **config}
        return super().from_config(config)

    def sparse(self, layer: int) -> bool:
        return layer not in self.mlp_only_layers and self.num_experts > 0 and (layer + 1) % self.decoder_sparse_step == 0


def sanitize(weights, args: ModelArgs) -> None:
    for i in range(args.num_hidden_layers):
        if args.sparse(i):
            stack_experts(weights, f"model.layers.{i}.mlp.experts", args.num_experts, EXPERT_NAMES)


def mixture(x, w, args) -> object:
    route = lambda x2d: softmax_top_k(router_logits(x2d, w, "mlp.gate"), args.num_experts_per_tok, args.norm_topk_prob)
    return routed_experts(x, w, "mlp.experts", args.num_experts, route)


def decoder_layer(x, w, args, ctx):
    mlp = (lambda h: mixture(h, w, args)) if args.sparse(w.layer) else None
    return transformer_block(x, w, args, ctx, args.rope, qk_norm="rms", mlp=mlp)
