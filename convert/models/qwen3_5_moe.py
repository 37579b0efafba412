"""Qwen3.5-MoE and Qwen3.6-MoE (Qwen3.5-35B-A3B, Qwen3.6-35B-A3B; text, or the language model inside a
multimodal `qwen3_5_moe` checkpoint, whose vision tower is Qwen3.5's): Qwen3.5's hybrid of Gated DeltaNet
and gated attention (qwen3_5), every layer's MLP a mixture of `num_experts` SwiGLU experts, of which a
softmax router picks `num_experts_per_tok` per token (always renormalised), beside a shared SwiGLU expert
that every token goes through, scaled by σ(shared_expert_gate · x)."""

from dataclasses import dataclass

import openvino.opset13 as ops

from ..experts import shared_expert, stacked_experts
from . import qwen3_5, qwen3_moe
from .base import text_config
from .qwen3_5 import POSITION_ROWS, vision_models  # noqa: F401  (the multimodal layout is qwen3_5's)


@dataclass
class ModelArgs(qwen3_5.ModelArgs):
    num_experts: int = 256
    num_experts_per_tok: int = 8

    norm_topk_prob = True  # Qwen3_5MoeTopKRouter renormalises whatever the config says

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        config = text_config(config)
        if "num_local_experts" in config:  # the name transformers 5 may save num_experts under
            config = {"num_experts": config["num_local_experts"], **config}
        return super().from_config(config)


def sanitize(weights, args: ModelArgs) -> None:
    qwen3_5.sanitize(weights, args)
    layers = [f"model.layers.{i}" for i in range(args.num_hidden_layers)]
    layers += [f"mtp.layers.{i}" for i in range(args.mtp_num_hidden_layers)]
    for layer in layers:
        stacked_experts(weights, f"{layer}.mlp.experts", args.num_experts, qwen3_moe.EXPERT_NAMES)


def mixture(x, w, args: ModelArgs):
    return ops.add(qwen3_moe.mixture(x, w, args), shared_expert(x, w, "mlp.shared_expert", gate="mlp.shared_expert_gate"))


def decoder_layer(x, w, args, ctx):
    return qwen3_5.decoder_layer(x, w, args, ctx, mlp=lambda h: mixture(h, w, args))
