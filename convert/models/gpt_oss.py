"""gpt-oss (OpenAI's gpt-oss-20b and -120b): llama's pre-norm layer with biased q/k/v/o projections, attention
sinks (a learned logit per head that takes part of each softmax), a 128-token sliding window on alternate
layers, YaRN rope; in place of the MLP a mixture of `num_local_experts` experts, k per token chosen by a biased
router (top-k logits, then a softmax over those k), each a biased, clamped SwiGLU (experts.clamped_swiglu_experts).

The experts are stored [E, in, out] in bf16 checkpoints and are turned to [E, out, in] here. OpenAI ships them in
MXFP4 (`*_blocks`: 32 e2m1 values per group, two to a byte, low nibble first; `*_scales`: a power-of-two e8m0
exponent per group, bias 127), already [E, out, in/32, ·]. The CPU computes experts sparsely only from integer
weights (f4e2m1 ones are expanded to f32 there), so the blocks are repacked without loss as i8 groups of 32:
twice an e2m1 value is one of 0, ±1, ±2, ±3, ±4, ±6, ±8, ±12, and the group's scale is 2^(e − 127) / 2. They
are kept so whatever the weight format (int4 cannot hold ±1 and ±12 in one group exactly; f32 would only spell out
the same values); the other weights (bf16 in those checkpoints) are compressed as asked."""

from dataclasses import dataclass

import numpy as np

from ..experts import clamped_swiglu_experts, router_logits, top_k_softmax
from ..gguf_source import E2M1_DOUBLED, BlockQuantized, interleave_rows
from . import base
from .base import UnsupportedModel
from .llama import transformer_block

MXFP4_GROUP = 32


@dataclass
class ModelArgs(base.ModelArgs):
    num_local_experts: int = 128
    num_experts_per_tok: int = 4
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        method = (config.get("quantization_config") or {}).get("quant_method")
        if method not in (None, "mxfp4"):
            raise UnsupportedModel(f"gpt_oss: {method} quantized checkpoints are not supported (bf16 and MXFP4 ones are)")
        # What GptOssConfig assumes where config.json is silent: its rope, every other layer sliding.
        defaults = {"rope_theta": 150000.0, "sliding_window": 128, "layer_types": [
            "full_attention" if i % 2 else "sliding_attention" for i in range(config.get("num_hidden_layers", 0))]}
        if not (config.get("rope_parameters") or config.get("rope_scaling")):
            defaults["rope_parameters"] = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                           "truncate": False, "original_max_position_embeddings": 4096}
        return super().from_config({**defaults, **{k: v for k, v in config.items() if v is not None}})


def mxfp4_as_int8(blocks: np.ndarray, scales: np.ndarray) -> BlockQuantized:
    """MXFP4 experts, blocks [E, N, K/32, 16] u8 and scales [E, N, K/32] u8, as the same weights [E, N, K] in i8
    groups of 32 (2 · e2m1) with f32 scales (2^(e − 127) / 2): exact."""
    values = np.empty((*blocks.shape[:-1], MXFP4_GROUP), np.int8)
    values[..., 0::2] = E2M1_DOUBLED[blocks & 0x0F]
    values[..., 1::2] = E2M1_DOUBLED[blocks >> 4]
    scale = np.ldexp(np.float32(0.5), scales.astype(np.int32) - 127).astype(np.float32)
    *rows, groups = scales.shape
    return BlockQuantized("i8", values, (scale[..., None],), (*rows, groups * MXFP4_GROUP), MXFP4_GROUP)


def sanitize(weights, args: ModelArgs) -> None:
    """Each layer's experts as `mlp.experts.{gate_up_proj,down_proj}.{weight,bias}`, weights [E, out, in]."""
    weights.rename({"gate_up_proj_bias": "gate_up_proj.bias", "down_proj_bias": "down_proj.bias"})
    for i in range(args.num_hidden_layers):
        experts = f"model.layers.{i}.mlp.experts"
        if f"{experts}.gate_proj.weight" in weights:  # a GGUF file's: [E, out, in] already, gate and up apart
            weights.combine([f"{experts}.gate_proj.weight", f"{experts}.up_proj.weight"], f"{experts}.gate_up_proj.weight",
                            interleave_rows)
            weights.combine([f"{experts}.gate_proj.bias", f"{experts}.up_proj.bias"], f"{experts}.gate_up_proj.bias",
                            lambda gate, up: interleave_rows(gate[..., None], up[..., None])[..., 0])
            continue
        for proj in ("gate_up_proj", "down_proj"):
            name = f"model.layers.{i}.mlp.experts.{proj}"
            if f"{name}_blocks" in weights:
                weights.combine([f"{name}_blocks", f"{name}_scales"], f"{name}.weight", mxfp4_as_int8)
            else:
                weights.transform(name, f"{name}.weight", lambda w: np.ascontiguousarray(np.swapaxes(w, 1, 2)))


def mixture(x, w, args: ModelArgs):
    route = lambda x2d: top_k_softmax(router_logits(x2d, w, "mlp.router"), args.num_experts_per_tok)
    return clamped_swiglu_experts(x, w, "mlp.experts", args.num_local_experts, route, args.swiglu_alpha,
                                  args.swiglu_limit)


def decoder_layer(x, w, args, ctx):
    return transformer_block(x, w, args, ctx, args.rope, mlp=lambda h: mixture(h, w, args), sinks=True)
