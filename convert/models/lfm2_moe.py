"""LFM2-MoE (Liquid AI's LFM2-8B-A1B): LFM2's hybrid of gated short convolutions and attention (lfm2); the
first `num_dense_layers` layers keep a dense SwiGLU MLP of width intermediate_size (as configured: no
Liquid rule), every later one is a mixture of `num_experts` SwiGLU experts of which a sigmoid router picks
`num_experts_per_tok` per token: chosen by σ(logit) + expert_bias (a load-balancing bias, where
use_expert_bias), weighted by σ(logit) alone, renormalised where norm_topk_prob, times
routed_scaling_factor (transformers' Lfm2MoeTopKRouter)."""

from dataclasses import dataclass

from ..experts import router_logits, routed_experts, sigmoid_top_k, stacked_experts
from . import lfm2

EXPERT_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


@dataclass
class ModelArgs(lfm2.ModelArgs):
    num_dense_layers: int = 2
    num_experts: int = 32
    num_experts_per_tok: int = 4
    use_expert_bias: bool = True
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        # Lfm2MoeConfig's rope base where the config leaves it out; its MLP width is intermediate_size.
        return super().from_config({"rope_theta": 1_000_000.0, **config, "block_auto_adjust_ff_dim": False})

    def sparse(self, layer: int) -> bool:
        return layer >= self.num_dense_layers


def sanitize(weights, args: ModelArgs) -> None:
    """lfm2's names; the experts' part of the layer (feed_forward.experts, .gate, .expert_bias) under mlp."""
    lfm2.sanitize(weights, args)
    weights.rename({"feed_forward": "mlp"})
    for i in range(args.num_hidden_layers):
        if args.sparse(i):
            stacked_experts(weights, f"model.layers.{i}.mlp.experts", args.num_experts, EXPERT_NAMES)


def mixture(x, w, args: ModelArgs):
    bias = w["mlp.expert_bias"] if args.use_expert_bias else None
    route = lambda x2d: sigmoid_top_k(router_logits(x2d, w, "mlp.gate"), args.num_experts_per_tok, bias,
                                      args.norm_topk_prob, args.routed_scaling_factor)
    return routed_experts(x, w, "mlp.experts", args.num_experts, route)


def decoder_layer(x, w, args, ctx):
    return lfm2.decoder_layer(x, w, args, ctx, mlp=(lambda h: mixture(h, w, args)) if args.sparse(w.layer) else None)
