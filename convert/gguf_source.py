"""GGUF file → config, weights and tokenizer, read with the `gguf` package.

The quantized blocks llama.cpp writes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q4_K, Q5_K,
Q6_K that make up a Q4_K_M file) are kept exactly: their integers become OpenVINO u4/i4/u8/i8
constants with a scale (and offset) per group of 16 or 32 weights, each stored as the file stores it,
so the model computes with the very weights llama.cpp does; gpt-oss's MXFP4 as i8 (2·e2m1) with its power-of-two
scale, exactly. A mixture's stacked experts [E, N, K] keep their blocks the same way. Other block types (IQ*, TQ*,
Q2_K, Q3_K) are dequantized and compressed like any checkpoint.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .sources import SourceError, Weights

SUPPORTED_ARCHITECTURES = ("gemma2", "gemma3", "gemma4", "glm4", "granite", "granitehybrid", "lfm2", "llama", "mistral3",
                           "olmo2", "phi3", "qwen2", "qwen3", "qwen35", "qwen35moe", "qwen3moe", "lfm2moe", "gpt-oss")
FLOATS = ("F32", "F16", "BF16")

# GGUF tensor name → HF (llama layout) name; {} is the layer number.
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.attn_q.bias": "model.layers.{}.self_attn.q_proj.bias",
    "blk.{}.attn_k.bias": "model.layers.{}.self_attn.k_proj.bias",
    "blk.{}.attn_v.bias": "model.layers.{}.self_attn.v_proj.bias",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
    "blk.{}.attn_q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
}
# Gemma's norms after attention and around the MLP.
GEMMA_NORMS = {"blk.{}.post_attention_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
               "blk.{}.ffn_norm.weight": "model.layers.{}.pre_feedforward_layernorm.weight",
               "blk.{}.post_ffw_norm.weight": "model.layers.{}.post_feedforward_layernorm.weight"}
# A mixture of experts' router and stacked experts [E, N, K] (ffn_*_exps), under the names convert/experts.py
# takes; {} is the layer.
EXPERTS = {"blk.{}.ffn_gate_inp.weight": "model.layers.{}.mlp.gate.weight",
           "blk.{}.ffn_gate_exps.weight": "model.layers.{}.mlp.experts.gate_proj.weight",
           "blk.{}.ffn_up_exps.weight": "model.layers.{}.mlp.experts.up_proj.weight",
           "blk.{}.ffn_down_exps.weight": "model.layers.{}.mlp.experts.down_proj.weight"}
# Where an architecture's tensors differ. Phi-3 keeps q, k, v in one tensor and gate and up in ffn_up
# (split by models/phi3.py as HF's are), as GLM-4 does gate and up.
ARCH_NAMES = {
    "gemma2": GEMMA_NORMS,
    "gemma3": GEMMA_NORMS,
    # Gemma 4's per-layer embeddings, its layer scalars, and the gate, projection and norm of each layer's slice.
    "gemma4": {**GEMMA_NORMS, "per_layer_token_embd.weight": "model.embed_tokens_per_layer.weight",
               "per_layer_model_proj.weight": "model.per_layer_model_projection.weight",
               "per_layer_proj_norm.weight": "model.per_layer_projection_norm.weight",
               "blk.{}.layer_output_scale.weight": "model.layers.{}.layer_scalar",
               "blk.{}.inp_gate.weight": "model.layers.{}.per_layer_input_gate.weight",
               "blk.{}.proj.weight": "model.layers.{}.per_layer_projection.weight",
               "blk.{}.post_norm.weight": "model.layers.{}.post_per_layer_input_norm.weight",
               # the 26B-A4B's experts beside the dense MLP: a router with its scale, stacked gate_up and down
               # (with each expert's scale), a norm into the experts and one out of each branch
               "blk.{}.ffn_gate_inp.weight": "model.layers.{}.router.proj.weight",
               "blk.{}.ffn_gate_inp.scale": "model.layers.{}.router.scale",
               "blk.{}.ffn_gate_up_exps.weight": "model.layers.{}.experts.gate_up_proj",
               "blk.{}.ffn_down_exps.weight": "model.layers.{}.experts.down_proj",
               "blk.{}.ffn_down_exps.scale": "model.layers.{}.router.per_expert_scale",
               "blk.{}.pre_ffw_norm_2.weight": "model.layers.{}.pre_feedforward_layernorm_2.weight",
               "blk.{}.post_ffw_norm_1.weight": "model.layers.{}.post_feedforward_layernorm_1.weight",
               "blk.{}.post_ffw_norm_2.weight": "model.layers.{}.post_feedforward_layernorm_2.weight"},
    "glm4": {"blk.{}.post_attention_norm.weight": "model.layers.{}.post_self_attn_layernorm.weight",
             "blk.{}.ffn_up.weight": "model.layers.{}.mlp.gate_up_proj.weight",
             "blk.{}.post_ffw_norm.weight": "model.layers.{}.post_mlp_layernorm.weight"},
    "olmo2": {"blk.{}.post_attention_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
              "blk.{}.post_ffw_norm.weight": "model.layers.{}.post_feedforward_layernorm.weight"},
    "phi3": {"blk.{}.attn_qkv.weight": "model.layers.{}.self_attn.qkv_proj.weight",
             "blk.{}.ffn_up.weight": "model.layers.{}.mlp.gate_up_proj.weight"},
    # Qwen3.5's Gated DeltaNet layers; ssm_a is the decay rate A = −exp(A_log) itself.
    "qwen35": {"blk.{}.post_attention_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
               "blk.{}.attn_qkv.weight": "model.layers.{}.linear_attn.in_proj_qkv.weight",
               "blk.{}.attn_gate.weight": "model.layers.{}.linear_attn.in_proj_z.weight",
               "blk.{}.ssm_beta.weight": "model.layers.{}.linear_attn.in_proj_b.weight",
               "blk.{}.ssm_alpha.weight": "model.layers.{}.linear_attn.in_proj_a.weight",
               "blk.{}.ssm_conv1d.weight": "model.layers.{}.linear_attn.conv1d.weight",
               "blk.{}.ssm_dt.bias": "model.layers.{}.linear_attn.dt_bias",
               "blk.{}.ssm_a": "model.layers.{}.linear_attn.A",
               "blk.{}.ssm_norm.weight": "model.layers.{}.linear_attn.norm.weight",
               "blk.{}.ssm_out.weight": "model.layers.{}.linear_attn.out_proj.weight"},
    "qwen3moe": EXPERTS,
    # LFM2's short convolutions; its embedding_norm (the final norm) is token_embd_norm.
    "lfm2": {"token_embd_norm.weight": "model.norm.weight",
             "blk.{}.shortconv.in_proj.weight": "model.layers.{}.conv.in_proj.weight",
             "blk.{}.shortconv.conv.weight": "model.layers.{}.conv.conv.weight",
             "blk.{}.shortconv.out_proj.weight": "model.layers.{}.conv.out_proj.weight"},
}
# Mixtures on the hybrids above: Qwen3.5-MoE's shared expert and its sigmoid gate; LFM2-MoE's expert bias
# (added to the router's scores to choose experts).
ARCH_NAMES.update(
    qwen35moe={**ARCH_NAMES["qwen35"], **EXPERTS,
               "blk.{}.ffn_gate_inp_shexp.weight": "model.layers.{}.mlp.shared_expert_gate.weight",
               "blk.{}.ffn_gate_shexp.weight": "model.layers.{}.mlp.shared_expert.gate_proj.weight",
               "blk.{}.ffn_up_shexp.weight": "model.layers.{}.mlp.shared_expert.up_proj.weight",
               "blk.{}.ffn_down_shexp.weight": "model.layers.{}.mlp.shared_expert.down_proj.weight"},
    lfm2moe={**ARCH_NAMES["lfm2"], **EXPERTS, "blk.{}.exp_probs_b.bias": "model.layers.{}.mlp.expert_bias"})
# Granite 4.0-H: Mamba-2 mixers (A itself, D [H, 1], the norm [groups, inner / groups]), a router and experts, the
# shared MLP as a shared expert where there are experts.
ARCH_NAMES["granitehybrid"] = {
    **{f"blk.{{}}.ssm_{gguf_name}": f"model.layers.{{}}.mamba.{name}" for gguf_name, name in (
        ("in.weight", "in_proj.weight"), ("conv1d.weight", "conv1d.weight"), ("conv1d.bias", "conv1d.bias"),
        ("dt.bias", "dt_bias"), ("a", "A"), ("d", "D"), ("norm.weight", "norm.weight"), ("out.weight", "out_proj.weight"))},
    "blk.{}.ffn_gate_inp.weight": "model.layers.{}.block_sparse_moe.router.weight",
    **{f"blk.{{}}.ffn_{proj}_exps.weight": f"model.layers.{{}}.block_sparse_moe.experts.{proj}_proj.weight"
       for proj in ("gate", "up", "down")},
    **{f"blk.{{}}.ffn_{proj}_shexp.weight": f"model.layers.{{}}.mlp.{proj}_proj.weight" for proj in ("gate", "up", "down")}}
# gpt-oss: biased attention with sinks; a biased router and biased experts, gate and up apart (models/gpt_oss.py
# interleaves them into its gate_up).
ARCH_NAMES["gpt-oss"] = {
    "blk.{}.post_attention_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.attn_output.bias": "model.layers.{}.self_attn.o_proj.bias",
    "blk.{}.attn_sinks.weight": "model.layers.{}.self_attn.sinks",
    **{f"blk.{{}}.ffn_gate_inp.{part}": f"model.layers.{{}}.mlp.router.{part}" for part in ("weight", "bias")},
    **{f"blk.{{}}.ffn_{proj}_exps.{part}": f"model.layers.{{}}.mlp.experts.{proj}_proj.{part}"
       for proj in ("gate", "up", "down") for part in ("weight", "bias")}}
# A multi-token-prediction head's own tensors, in the block after the model's layers (nextn_predict_layers of
# them: Qwen3.5's, whose layer's other tensors are named as the model's layers' are).
NEXTN_NAMES = {"blk.{}.nextn.eh_proj.weight": "mtp.fc.weight",
               "blk.{}.nextn.enorm.weight": "mtp.pre_fc_norm_embedding.weight",
               "blk.{}.nextn.hnorm.weight": "mtp.pre_fc_norm_hidden.weight",
               "blk.{}.nextn.shared_head_norm.weight": "mtp.norm.weight"}
# Architectures whose RMSNorms scale by (1 + w), which llama.cpp stores as 1 + w (Qwen3.5's gated norm
# inside its DeltaNet layers excepted).
PLUS_ONE_NORMS = {"gemma2": (), "gemma3": (), "qwen35": ("blk.{}.ssm_norm.weight",), "qwen35moe": ("blk.{}.ssm_norm.weight",)}
# Architectures whose q and k rows llama.cpp's converter interleaves (the rotary halves of each head
# into pairs, for its NORM rope), which the import undoes.
PERMUTED_QK = ("llama", "granite", "granitehybrid", "mistral3")
# Tensors that are rope parameters, not weights.
ROPE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


@dataclass
class BlockQuantized:
    """Weights [rows, cols] (or a mixture's stacked experts [E, rows, cols]) stored in groups of `group`
    weights: w = scale · q − offset.

    `values` are packed two per byte (u4/i4, low nibble first, as OpenVINO packs them) or one per
    byte (u8/i8), shaped [(E,) rows, cols/group, group (or group/2 packed)]. The scale is kept as the
    factors the file stores, each [(E,) rows, super-blocks, 1 or groups per super-block, 1]: an f16 d per
    block, times a 6- or 8-bit integer per group for K-quants. Their product is exact in f32 (an
    f16 has 11 significant bits, a K-quant scale d·sc needs up to 17) and the factors take no more
    room than in the GGUF. Stacked experts [E, rows, cols] have one more leading axis throughout
    (MXFP4 checkpoints' experts, repacked losslessly: models/gpt_oss.py)."""

    element_type: str  # "u4", "i4", "u8" or "i8"
    values: np.ndarray
    scale_factors: tuple[np.ndarray, ...]
    shape: tuple[int, ...]
    group: int
    # The offset per group as weights [(E,) rows, cols/group] of their own (f16, or blocks for K-quants):
    # what graph.linear multiplies the group sums of x with.
    offset: "np.ndarray | BlockQuantized | None" = None

    def take_rows(self, order: np.ndarray) -> "BlockQuantized":
        """The rows `order` (of each expert, for stacked experts): every array has the rows on the same axis."""
        axis = len(self.shape) - 2
        offset = self.offset
        offset = (None if offset is None else offset.take_rows(order) if isinstance(offset, BlockQuantized)
                  else offset.take(order, axis))
        shape = (*self.shape[:axis], len(order), self.shape[-1])
        return BlockQuantized(self.element_type, self.values.take(order, axis),
                              tuple(f.take(order, axis) for f in self.scale_factors), shape, self.group, offset)


def interleave_rows(a, b):
    """Weights [(E,) rows, cols] whose rows alternate a's and b's (gpt-oss's gate_up from a GGUF's gate and up
    experts), arrays or GGUF blocks of one type."""
    if not isinstance(a, BlockQuantized):
        return np.stack([a, b], axis=-2).reshape(*a.shape[:-2], -1, a.shape[-1])
    if (a.element_type, a.group, len(a.scale_factors), a.offset is None) != (b.element_type, b.group, len(b.scale_factors),
                                                                              b.offset is None):
        raise SourceError("gate and up experts in different block types are not supported")
    axis = len(a.shape) - 2

    def alternate(x, y):
        both = np.stack([x, y], axis=axis + 1)
        return both.reshape(*both.shape[:axis], -1, *both.shape[axis + 2:])

    offset = None if a.offset is None else (interleave_rows(a.offset, b.offset) if isinstance(a.offset, BlockQuantized)
                                            else alternate(a.offset, b.offset))
    return BlockQuantized(a.element_type, alternate(a.values, b.values),
                          tuple(alternate(x, y) for x, y in zip(a.scale_factors, b.scale_factors)),
                          (*a.shape[:axis], 2 * a.shape[axis], a.shape[-1]), a.group, offset)


def take_rows(w, start: int, stop: int):
    """Rows start…stop of a weight [(E,) rows, cols], array or GGUF blocks (a fused gate_up's halves)."""
    if isinstance(w, BlockQuantized):
        return w.take_rows(np.arange(start, stop))
    return w[..., start:stop, :]


# Each decoder takes the blocks as bytes [n, block bytes] and returns integers q [n, groups, group],
# the scale's factors (each [n, 1] or [n, groups]) and the offset with w = scale · q − offset (None:
# q is already centred; Q4_1 / Q5_1: [n, 1]; K-quants: the factors (dmin [n, 1], m [n, 8])).
def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.copy().view(np.float16)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """Q4/Q5 blocks of 32: 16 bytes hold weights j (low nibbles) and j + 16 (high nibbles)."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.int16)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0 / Q5_1: bit j of a little-endian u32 is the fifth bit of weight j."""
    return ((qh.copy().view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16)


def _q8_0(b):
    return b[:, None, 2:].view(np.int8).astype(np.int16), (_f16(b[:, 0:2]),), None


def _q4_0(b):
    return _nibbles(b[:, None, 2:18]) - 8, (_f16(b[:, 0:2]),), None


def _q4_1(b):
    return _nibbles(b[:, None, 4:20]), (_f16(b[:, 0:2]),), -_f16(b[:, 2:4])


def _q5_0(b):
    return (_nibbles(b[:, 6:22]) | _high_bits(b[:, 2:6]) << 4)[:, None] - 16, (_f16(b[:, 0:2]),), None


def _q5_1(b):
    q = _nibbles(b[:, 8:24]) | _high_bits(b[:, 4:8]) << 4
    return q[:, None], (_f16(b[:, 0:2]),), -_f16(b[:, 2:4])


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins of a Q4_K / Q5_K super-block, from its 12 packed bytes: bytes
    0–3 and 4–7 hold scales and mins 0–3 in their low 6 bits; scales and mins 4–7 take their low 4
    bits from bytes 8–11 and their top 2 bits from the top of bytes 0–3 and 4–7."""
    s = packed.astype(np.uint8)
    low_sc, low_m, rest = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([low_sc & 63, (rest & 0x0F) | ((low_sc >> 6) << 4)], axis=1)
    m = np.concatenate([low_m & 63, (rest >> 4) | ((low_m >> 6) << 4)], axis=1)
    return sc, m


def _k_low_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K: each 32 bytes hold sub-block 2j in their low nibbles and 2j + 1 in their high ones."""
    chunks = qs.reshape(len(qs), -1, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(len(qs), 8, 32).astype(np.int16)


def _q4_k(b):
    sc, m = _k_scales(b[:, 4:16])
    return _k_low_nibbles(b[:, 16:144]), (_f16(b[:, 0:2]), sc), (_f16(b[:, 2:4]), m)


def _q5_k(b):
    sc, m = _k_scales(b[:, 4:16])
    high = (b[:, None, 16:48] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # bit i: sub-block i
    return _k_low_nibbles(b[:, 48:176]) | high.astype(np.int16) << 4, (_f16(b[:, 0:2]), sc), (_f16(b[:, 2:4]), m)


def _q6_k(b):
    """256 weights in 16 groups of 16, w = d · sc · (q − 32): per 128 weights, 64 bytes of low
    nibbles (weights 0–63 low, 64–127 high) and 32 bytes of 2-bit pairs (four 32-weight runs)."""
    n = len(b)
    ql = b[:, 0:128].reshape(n, 2, 1, 64)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 8, 32)
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    high = ((qh >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3).reshape(n, 8, 32)
    q = (low.astype(np.int16) | high.astype(np.int16) << 4) - 32
    return q.reshape(n, 16, 16), (_f16(b[:, 208:210]), b[:, 192:208].view(np.int8)), None


# 2 × each e2m1 code (sign bit, 2 exponent bits, 1 mantissa bit): 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
E2M1_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int16)


def _mxfp4(b):
    """gpt-oss's MXFP4 (32 e2m1 values after an e8m0 exponent, nibbles as Q4_0's) as integers 2·e2m1 with the
    scale 2^(e − 127) / 2 in f32: the same weights, in a type GatherMatmul keeps compressed (f4e2m1 it widens)."""
    scale = np.ldexp(np.float32(0.5), b[:, 0:1].astype(np.int32) - 127).astype(np.float32)
    return E2M1_DOUBLED[_nibbles(b[:, None, 1:17])], (scale,), None


# GGUF type → (weights per block, weights per group, storage type, decoder)
KEPT_BLOCKS = {
    "Q4_0": (32, 32, "i4", _q4_0), "Q4_1": (32, 32, "u4", _q4_1), "Q5_0": (32, 32, "i8", _q5_0),
    "Q5_1": (32, 32, "u8", _q5_1), "Q8_0": (32, 32, "i8", _q8_0), "Q4_K": (256, 32, "u4", _q4_k),
    "Q5_K": (256, 32, "u8", _q5_k), "Q6_K": (256, 16, "i8", _q6_k), "MXFP4": (32, 32, "i8", _mxfp4),
}


def _pack_nibbles(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint8) & 0x0F
    return values[..., 0::2] | (values[..., 1::2] << 4)


def _decode_blocks(kind: str, raw: np.ndarray, shape: tuple[int, ...]) -> BlockQuantized:
    """The blocks of a tensor `shape` [rows, cols] or [E, rows, cols] (stacked experts): each row's blocks
    decoded alike, the leading axes kept."""
    block, group, element_type, decode = KEPT_BLOCKS[kind]
    lead, cols = shape[:-1], shape[-1]
    q, scale_factors, offset = decode(np.asarray(raw, np.uint8).reshape(int(np.prod(shape)) // block, -1))
    blocks_per_row = cols // block

    def per_block(factor):  # [n, 1 or groups per block] → [*lead, blocks per row, 1 or groups per block, 1]
        return factor.reshape(*lead, blocks_per_row, -1, 1)

    if isinstance(offset, tuple):  # K-quants: the 6-bit m per group times dmin per 8 groups, as stored
        dmin, m = offset
        offset = BlockQuantized("u8", m.reshape(*lead, -1, 8), (per_block(dmin),), (*lead, cols // group), 8)
    elif offset is not None:  # Q4_1 / Q5_1: an f16 per group
        offset = offset.reshape(*lead, -1)
    q = q.reshape(*lead, cols // group, group)
    values = _pack_nibbles(q) if element_type in ("u4", "i4") else q.astype(np.uint8 if element_type == "u8" else np.int8)
    return BlockQuantized(element_type, values, tuple(per_block(f) for f in scale_factors), shape, group, offset)


def _unpermute(rows: int, n_heads: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation (rotary pairs interleaved per head)."""
    return np.arange(rows).reshape(n_heads, rows // n_heads // 2, 2).swapaxes(1, 2).reshape(-1)


@dataclass(frozen=True)
class GGUFTensorRef:
    reader: object
    index: int
    dequantize: bool
    permute_heads: int | None = None
    rows: tuple[int, int] | None = None  # a band of the tensor's rows (a fused tensor split)
    shift: float = 0.0  # added on loading: −1 for Gemma's norms, which llama.cpp stores as 1 + w

    def num_rows(self) -> int:
        return int(self.reader.tensors[self.index].shape[-1])

    def band(self, start: int, stop: int) -> "GGUFTensorRef":
        return replace(self, rows=(start, stop))

    def load(self):
        import gguf

        tensor = self.reader.tensors[self.index]
        kind = tensor.tensor_type.name
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists the fastest axis first
        keep_blocks = kind in KEPT_BLOCKS and not self.dequantize and len(shape) in (2, 3)
        if keep_blocks:
            array = _decode_blocks(kind, np.asarray(tensor.data), shape)
        elif kind in ("F32", "F16"):
            array = np.asarray(tensor.data).reshape(shape)
        elif kind == "BF16":
            import ml_dtypes

            array = np.asarray(tensor.data).view(ml_dtypes.bfloat16).reshape(shape)
        else:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        if self.permute_heads:
            order = _unpermute(shape[0], self.permute_heads)
            array = array.take_rows(order) if keep_blocks else array[order]
        if self.rows:
            band = np.arange(*self.rows)
            array = array.take_rows(band) if keep_blocks else array[band]
        if self.shift:
            array = array.astype(np.float32) + np.float32(self.shift)
        return array


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


@dataclass
class GGUFCheckpoint:
    """A GGUF file, offering what convert needs from any checkpoint."""

    path: Path
    arch: str  # general.architecture, which also picks the tokenizer builder (gemma3's sentencepiece)
    config: dict
    reader: object
    tensor_refs: dict

    def check_weights(self) -> None:
        pass  # GGUFReader validated the file when it opened it

    def dequantized_blocks(self) -> dict[str, list[str]]:
        """Block type → the GGUF tensors of that type the import cannot keep (IQ*, TQ*, Q2_K, Q3_K…)."""
        found: dict[str, list[str]] = {}
        for ref in self.tensor_refs.values():
            tensor = self.reader.tensors[ref.index]
            if tensor.tensor_type.name not in (*KEPT_BLOCKS, *FLOATS):
                found.setdefault(tensor.tensor_type.name, []).append(tensor.name)
        return found

    def generation_config(self) -> dict:
        """The sampling the file recommends (llama.cpp's general.sampling.* keys), in generation_config.json's
        terms; convert fills in the token ids."""
        names = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                 "penalty_repeat": "repetition_penalty"}
        config = {name: _field(self.reader, f"general.sampling.{key}") for key, name in names.items()}
        config = {name: value for name, value in config.items() if value is not None}
        if config.get("temperature", 1.0) > 0 and set(config) - {"repetition_penalty"}:
            config["do_sample"] = True
        return config

    def weights(self, dtype=None, dequantize: bool = False) -> Weights:
        """Blocks kept unless `dequantize`; then compression re-quantizes everything. Otherwise it
        may only touch the tensors of block types that had to be dequantized: float tensors stay."""
        refs = {name: replace(ref, dequantize=dequantize) for name, ref in self.tensor_refs.items()}
        dequantized = {name for name, ref in self.tensor_refs.items()
                       if self.reader.tensors[ref.index].tensor_type.name not in (*KEPT_BLOCKS, *FLOATS)}
        return Weights(refs, dtype, None if dequantize else dequantized)

    def hf_tokenizer(self):
        """The GGUF's tokenizer (vocab, merges, special tokens, chat template) as a transformers
        tokenizer object, which openvino_tokenizers converts. Built from the metadata with
        transformers' GGUF tokenizer builders; its GGUF file reader needs torch, so not that."""
        from transformers import PreTrainedTokenizerFast
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

        from .tokenizer import TokenizerError

        metadata = {key: _field(self.reader, key) for key in self.reader.fields if key.startswith("tokenizer.")}
        if not metadata.get("tokenizer.ggml.tokens"):
            raise TokenizerError(f"{self.path.name} has no tokenizer")
        grouped = {
            group: {name: metadata[f"tokenizer.{key}"] for key, name in keys.items() if f"tokenizer.{key}" in metadata}
            for group, keys in GGUF_TOKENIZER_MAPPING.items()
        }
        tokens = grouped["tokenizer"]["tokens"]
        settings = dict(grouped["tokenizer_config"])
        for special, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                             ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
            token_id = metadata.get(f"tokenizer.ggml.{key}")
            settings[special] = tokens[token_id] if token_id is not None else None
        try:
            backend, extra = convert_gguf_tokenizer(self.arch, grouped["tokenizer"])
            return PreTrainedTokenizerFast(tokenizer_object=backend, **settings, **extra)
        except Exception as e:  # the builders raise many types on metadata they do not expect
            raise TokenizerError(f"cannot build the tokenizer of {self.path.name}: {str(e).strip().splitlines()[0]}") from None

    def write_files(self, out: Path, hf_tokenizer) -> None:
        """config.json from the GGUF metadata and the tokenizer's files, for tools that read them."""
        import json

        (out / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        hf_tokenizer.save_pretrained(out)


def read_gguf(path: Path) -> GGUFCheckpoint:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError… on bad files
        raise SourceError(f"{path.name} is not a readable GGUF file ({e})") from None
    arch = _field(reader, "general.architecture")
    if arch == "clip":
        from .mmproj import SUPPORTED_PROJECTORS

        raise SourceError(f"{path.name} is llama.cpp's multimodal projector (mmproj), not a model: convert the model's "
                          f".gguf with --mmproj {path.name} (supported projector type: {', '.join(SUPPORTED_PROJECTORS)})")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SourceError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    kv_heads = _field(reader, f"{arch}.attention.head_count_kv", heads)
    kv_heads_per_layer = kv_heads if isinstance(kv_heads, list) else None  # LFM2: 0 for a convolution layer
    kv_heads = max(kv_heads_per_layer) if kv_heads_per_layer else int(kv_heads)
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    tensor_names = {t.name for t in reader.tensors}
    ffn = _field(reader, f"{arch}.feed_forward_length")  # per layer in Gemma 4 files with double-wide MLPs
    config = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "intermediate_size": int(ffn[0] if isinstance(ffn, list) else ffn),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 4096)),
        "rope_parameters": _rope_parameters(reader, arch),
        "vocab_size": int(_field(reader, f"{arch}.vocab_size", len(tokens))),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    if arch == "qwen2":
        config["use_sliding_window"] = False
    if arch in ARCH_CONFIG:
        ARCH_CONFIG[arch](reader, config)
    if arch in ("lfm2", "lfm2moe"):
        config.update(conv_L_cache=int(_field(reader, f"{arch}.shortconv.l_cache")),
                      layer_types=["full_attention" if n else "conv" for n in kv_heads_per_layer],
                      # the MLP's width as llama.cpp runs it: the tensors', Liquid's rule already applied
                      intermediate_size=_rows(reader, "blk.0.ffn_gate.weight") if "blk.0.ffn_gate.weight" in tensor_names
                      else config["intermediate_size"], block_auto_adjust_ff_dim=False)

    head_dim, rotary_dim = config["head_dim"], _field(reader, f"{arch}.rope.dimension_count")
    if rotary_dim and arch != "gemma4":  # Phi-4-mini rotates 3/4 of each head, Qwen3.5 a quarter, GLM-4 half
        config["partial_rotary_factor"] = int(rotary_dim) / head_dim

    names = {**NAMES, **ARCH_NAMES.get(arch, {})}
    refs = {}
    for index, tensor in enumerate(reader.tensors):
        name, layer = tensor.name, None
        parts = name.split(".")
        if parts[0] == "blk":
            layer, name = parts[1], ".".join(["blk", "{}", *parts[2:]])
        if name in ROPE_TENSORS:
            continue
        past_the_layers = layer is not None and int(layer) >= config["num_hidden_layers"]
        target = _head_name(name, int(layer), names, config) if past_the_layers else None
        if target is None and name not in names:
            raise SourceError(f"{path.name} has a tensor this {arch} graph does not know: {tensor.name}")
        # llama.cpp interleaves the rotary halves of q and k rows for its NORM rope (PERMUTED_QK).
        permute = None
        if arch in PERMUTED_QK and name in ("blk.{}.attn_q.weight", "blk.{}.attn_q.bias"):
            permute = heads
        elif arch in PERMUTED_QK and name in ("blk.{}.attn_k.weight", "blk.{}.attn_k.bias"):
            permute = kv_heads
        plus_one = arch in PLUS_ONE_NORMS and name.endswith("norm.weight") and name not in PLUS_ONE_NORMS[arch]
        shift = -1.0 if plus_one else 0.0
        refs[target or names[name].format(layer)] = GGUFTensorRef(reader, index, False, permute, shift=shift)
    return GGUFCheckpoint(path, arch, config, reader, refs)


def _head_name(name: str, layer: int, names: dict, config: dict) -> str | None:
    """The HF name of tensor `name` (`blk.{}.…`) of block `layer`, one of the multi-token-prediction head's
    (past the model's layers): its own (NEXTN_NAMES), or its decoder layer's under `mtp.layers.*`."""
    if name in NEXTN_NAMES:
        return NEXTN_NAMES[name]
    if name in names and layer < config["num_hidden_layers"] + config.get("mtp_num_hidden_layers", 0):
        return names[name].replace("model.layers.{}", f"mtp.layers.{layer - config['num_hidden_layers']}")
    return None


def _sliding_layers(reader, arch: str, every: int) -> list[str]:
    """layer_types from llama.cpp's sliding_window_pattern: one bool per layer (true: sliding) or a
    number n (the last of every n layers full); without it, `every`, llama.cpp's default for the arch."""
    layers = int(_field(reader, f"{arch}.block_count"))
    pattern = _field(reader, f"{arch}.attention.sliding_window_pattern", every)
    if not isinstance(pattern, list):
        pattern = [i % pattern < pattern - 1 for i in range(layers)]
    return ["sliding_attention" if sliding else "full_attention" for sliding in pattern]


def _gemma2_config(reader, config: dict) -> None:
    """Gemma 2 as llama.cpp runs it: even layers sliding, scores soft-capped (50 unless the file says),
    logits at 30; queries scaled by 1/√head_dim, but by 1/√(hidden/heads) in the 46-layer 27B."""
    scalar = config["hidden_size"] // config["num_attention_heads"] if config["num_hidden_layers"] == 46 else config["head_dim"]
    config.update(sliding_window=int(_field(reader, "gemma2.attention.sliding_window", 4096)),
                  layer_types=_sliding_layers(reader, "gemma2", 2), query_pre_attn_scalar=scalar,
                  attn_logit_softcapping=float(_field(reader, "gemma2.attn_logit_softcapping", 50.0)),
                  final_logit_softcapping=float(_field(reader, "gemma2.final_logit_softcapping", 30.0)))


def _olmo2_config(reader, config: dict) -> None:
    """OLMo 3 is an olmo2 file with a sliding window: its sliding layers rotate with their own base
    (freq_base_swa) and no scaling, its full ones with the file's (YaRN) rope."""
    window = _field(reader, "olmo2.attention.sliding_window")
    if window:
        local = {"rope_type": "default",
                 "rope_theta": float(_field(reader, "olmo2.rope.freq_base_swa", config["rope_parameters"]["rope_theta"]))}
        config.update(model_type="olmo3", sliding_window=int(window), layer_types=_sliding_layers(reader, "olmo2", 4),
                      rope_parameters={"full_attention": config["rope_parameters"], "sliding_attention": local})


def _granite_config(reader, config: dict) -> None:
    """Granite 3 and the dense Granite 4.0 (which llama.cpp writes as granite): its four multipliers."""
    arch = config["model_type"]
    if _field(reader, f"{arch}.rope.scaling.finetuned") is False:
        raise SourceError(f"{arch}: a model without rotary position embeddings (NoPE) is supported from its HF checkpoint only")
    config.update(model_type="granite", embedding_multiplier=float(_field(reader, f"{arch}.embedding_scale", 1.0)),
                  residual_multiplier=float(_field(reader, f"{arch}.residual_scale", 1.0)),
                  attention_multiplier=float(_field(reader, f"{arch}.attention.scale", 0.0)) or config["head_dim"]**-0.5,
                  logits_scaling=float(_field(reader, f"{arch}.logit_scale", 1.0)))


def _granitehybrid_config(reader, config: dict) -> None:
    """Granite 4.0-H: Granite's multipliers; the layers with no KV heads Mamba-2 mixers of ssm.time_step_rank heads
    (ssm.inner_size wide, states of ssm.state_size in ssm.group_count groups), the others attention, rotary unless
    rope.scaling.finetuned is false (llama.cpp's NoPE switch); where expert_count > 0, experts feed_forward_length
    wide beside a shared MLP of expert_shared_feed_forward_length, else the shared MLP feed_forward_length wide."""
    field = functools.partial(_field, reader)
    kv_heads = field("granitehybrid.attention.head_count_kv")
    kv_heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * config["num_hidden_layers"]
    heads, experts = int(field("granitehybrid.ssm.time_step_rank", 0)), int(field("granitehybrid.expert_count", 0))
    rope = field("granitehybrid.rope.scaling.finetuned") is not False
    config.update(
        model_type="granitemoehybrid", layer_types=["attention" if n else "mamba" for n in kv_heads],
        position_embedding_type="rope" if rope else None,
        embedding_multiplier=float(field("granitehybrid.embedding_scale", 1.0)),
        residual_multiplier=float(field("granitehybrid.residual_scale", 1.0)),
        attention_multiplier=float(field("granitehybrid.attention.scale", 0.0)) or config["head_dim"]**-0.5,
        logits_scaling=float(field("granitehybrid.logit_scale", 1.0)),
        num_local_experts=experts, num_experts_per_tok=int(field("granitehybrid.expert_used_count", 0)),
        shared_intermediate_size=int(field("granitehybrid.expert_shared_feed_forward_length") if experts
                                     else config["intermediate_size"]))
    if heads:
        inner = int(field("granitehybrid.ssm.inner_size"))
        config.update(mamba_n_heads=heads, mamba_d_head=inner // heads, mamba_n_groups=int(field("granitehybrid.ssm.group_count")),
                      mamba_d_state=int(field("granitehybrid.ssm.state_size")), mamba_d_conv=int(field("granitehybrid.ssm.conv_kernel")),
                      mamba_expand=inner // config["hidden_size"])


def _mistral3_config(reader, config: dict) -> None:
    """Ministral 3: YaRN with the file's betas and log multiplier (mscale_all_dim; llama.cpp takes mscale
    as 1), and Llama 4's attention temperature from attention.temperature_scale."""
    rope = config["rope_parameters"]
    if rope["rope_type"] == "yarn":
        for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            value = _field(reader, f"mistral3.rope.scaling.{key}")
            if value is not None:
                rope[name] = float(value)
        log_multiplier = _field(reader, "mistral3.rope.scaling.yarn_log_multiplier")
        if log_multiplier:
            rope.update(mscale=1.0, mscale_all_dim=float(log_multiplier))
    beta = _field(reader, "mistral3.attention.temperature_scale")
    if beta:
        rope["llama_4_scaling_beta"] = float(beta)
        rope.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    config["model_type"] = "ministral3"


def _gemma4_config(reader, config: dict) -> None:
    """Gemma 4 as llama.cpp writes it: key_length(_swa) the full and sliding layers' head sizes, a head
    count per layer where they differ, rope_freqs 1 for the full layers' rotated pairs and 1e30 for the
    others (proportional rope), feed_forward_length per layer where the shared layers' are doubled; a
    full-attention layer without attn_v takes its keys as values."""
    field = functools.partial(_field, reader)
    layer_types = _sliding_layers(reader, "gemma4", 6)
    full = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    kv_heads = field("gemma4.attention.head_count_kv")
    tensors = {t.name: t for t in reader.tensors}
    pairs = np.asarray(tensors["rope_freqs.weight"].data, np.float32) if "rope_freqs.weight" in tensors else None
    global_head_dim = int(field("gemma4.attention.key_length"))
    partial = 1.0 if pairs is None else float(np.sum(pairs == 1.0)) / (global_head_dim // 2)
    ffn = field("gemma4.feed_forward_length")
    per_layer = int(field("gemma4.embedding_length_per_layer_input", 0))
    config.update(
        model_type="gemma4_text", layer_types=layer_types, sliding_window=int(field("gemma4.attention.sliding_window")),
        head_dim=int(field("gemma4.attention.key_length_swa", global_head_dim)), global_head_dim=global_head_dim,
        num_key_value_heads=int(kv_heads[layer_types.index("sliding_attention")]) if isinstance(kv_heads, list) else int(kv_heads),
        num_kv_shared_layers=int(field("gemma4.attention.shared_kv_layers", 0)),
        use_double_wide_mlp=isinstance(ffn, list) and ffn[-1] == 2 * ffn[0],
        hidden_size_per_layer_input=per_layer,
        attention_k_eq_v=bool(full) and f"blk.{full[0]}.attn_v.weight" not in tensors,
        rope_parameters={"full_attention": {"rope_type": "proportional", "partial_rotary_factor": partial,
                                            "rope_theta": float(field("gemma4.rope.freq_base", 1e6))},
                         "sliding_attention": {"rope_type": "default",
                                               "rope_theta": float(field("gemma4.rope.freq_base_swa", 1e4))}})
    if isinstance(kv_heads, list) and full:
        config["num_global_key_value_heads"] = int(kv_heads[full[0]])
    if field("gemma4.expert_count"):  # the 26B-A4B's experts beside each dense MLP
        config.update(enable_moe_block=True, num_experts=int(field("gemma4.expert_count")),
                      top_k_experts=int(field("gemma4.expert_used_count")),
                      moe_intermediate_size=int(field("gemma4.expert_feed_forward_length")))
    if per_layer:
        config["vocab_size_per_layer_input"] = _rows(reader, "per_layer_token_embd.weight")
    softcap = field("gemma4.final_logit_softcapping")
    if softcap:
        config["final_logit_softcapping"] = float(softcap)


def _gemma3_config(reader, config: dict) -> None:
    """Gemma 3's text model as llama.cpp runs it: every 6th layer full attention with the file's rope
    (base and linear scaling), the others sliding with base 10 000; scores scaled by 1/√head_dim
    (query_pre_attn_scalar = head_dim, as for every Gemma 3 up to 12B)."""
    config["model_type"] = "gemma3_text"
    config["sliding_window"] = int(_field(reader, "gemma3.attention.sliding_window"))
    config["sliding_window_pattern"] = 6
    config["query_pre_attn_scalar"] = config["head_dim"]
    softcap = _field(reader, "gemma3.final_logit_softcapping")
    if softcap:
        config["final_logit_softcapping"] = float(softcap)
    config["rope_parameters"] = {"full_attention": config["rope_parameters"],
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}


def _qwen35_config(reader, config: dict) -> None:
    """Qwen3.5's text model as llama.cpp runs it: every full_attention_interval-th layer full attention,
    the rest Gated DeltaNet, with its value heads in llama.cpp's order (ModelArgs.value_heads_tiled); the
    last nextn_predict_layers blocks are its multi-token-prediction head, not layers of the model."""
    arch = config["model_type"]
    value_heads = int(_field(reader, f"{arch}.ssm.time_step_rank"))
    head = int(_field(reader, f"{arch}.nextn_predict_layers", 0))
    config.update(model_type="qwen3_5_text", full_attention_interval=int(_field(reader, f"{arch}.full_attention_interval", 4)),
                  num_hidden_layers=config["num_hidden_layers"] - head, mtp_num_hidden_layers=head,
                  linear_conv_kernel_dim=int(_field(reader, f"{arch}.ssm.conv_kernel")),
                  linear_key_head_dim=int(_field(reader, f"{arch}.ssm.state_size")),
                  linear_num_key_heads=int(_field(reader, f"{arch}.ssm.group_count")),
                  linear_num_value_heads=value_heads,
                  linear_value_head_dim=int(_field(reader, f"{arch}.ssm.inner_size")) // value_heads,
                  value_heads_tiled=True)


def _experts_config(reader, config: dict) -> None:
    """A mixture of experts' sizes: expert_count experts of width expert_feed_forward_length, of which
    expert_used_count per token, and the shared expert's width where there is one."""
    arch = config["model_type"]
    config.update(num_experts=int(_field(reader, f"{arch}.expert_count")),
                  num_experts_per_tok=int(_field(reader, f"{arch}.expert_used_count")),
                  moe_intermediate_size=int(_field(reader, f"{arch}.expert_feed_forward_length")))
    shared = _field(reader, f"{arch}.expert_shared_feed_forward_length")
    if shared:
        config["shared_expert_intermediate_size"] = int(shared)


def _qwen35moe_config(reader, config: dict) -> None:
    """Qwen3.5-MoE: Qwen3.5's hybrid (_qwen35_config), every layer's MLP experts and a gated shared expert."""
    _experts_config(reader, config)
    _qwen35_config(reader, config)
    config["model_type"] = "qwen3_5_moe_text"


def _lfm2moe_config(reader, config: dict) -> None:
    """LFM2-MoE as llama.cpp runs it: leading_dense_block_count dense layers, then experts chosen by sigmoid
    score + expert bias, renormalised, times expert_weights_scale (1 where the file has none)."""
    _experts_config(reader, config)
    config.update(model_type="lfm2_moe", num_dense_layers=int(_field(reader, "lfm2moe.leading_dense_block_count", 0)),
                  use_expert_bias=any(t.name.endswith(".exp_probs_b.bias") for t in reader.tensors),
                  norm_topk_prob=True, routed_scaling_factor=float(_field(reader, "lfm2moe.expert_weights_scale", 0.0) or 1.0))


def _qwen3moe_config(reader, config: dict) -> None:
    """Qwen3-MoE as llama.cpp runs it: experts in every layer, their top-k weights always renormalised."""
    _experts_config(reader, config)
    config.update(model_type="qwen3_moe", norm_topk_prob=True)


def _gpt_oss_config(reader, config: dict) -> None:
    """gpt-oss: its experts' count and width, a sliding window on every other layer from the first (llama.cpp's
    pattern), and its YaRN, whose correction range gpt-oss does not round to whole dimensions (truncate false)."""
    _experts_config(reader, config)
    config.update(model_type="gpt_oss", num_local_experts=config.pop("num_experts"),
                  intermediate_size=config.pop("moe_intermediate_size"),
                  sliding_window=int(_field(reader, "gpt-oss.attention.sliding_window")),
                  layer_types=_sliding_layers(reader, "gpt-oss", 2))
    if config["rope_parameters"]["rope_type"] == "yarn":
        config["rope_parameters"]["truncate"] = False


# general.architecture → what it adds to or changes in the config read above.
ARCH_CONFIG = {"gemma2": _gemma2_config, "gemma3": _gemma3_config, "gemma4": _gemma4_config, "granite": _granite_config,
               "granitehybrid": _granitehybrid_config, "mistral3": _mistral3_config, "olmo2": _olmo2_config,
               "qwen35": _qwen35_config, "qwen35moe": _qwen35moe_config, "qwen3moe": _qwen3moe_config,
               "lfm2": lambda reader, config: config.update(model_type="lfm2"), "lfm2moe": _lfm2moe_config,
               "gpt-oss": _gpt_oss_config}


def _rows(reader, name: str) -> int:
    return int(next(t for t in reader.tensors if t.name == name).shape[-1])


def _rope_parameters(reader, arch: str) -> dict:
    """HF-style rope_parameters from llama.cpp's metadata: `rope.scaling.*` (linear, yarn), the
    per-frequency divisors of `rope_freqs` (how llama.cpp stores Llama 3.1's rope scaling), and
    Phi-3's longrope factors."""
    tensors = {t.name: t for t in reader.tensors}

    def factors(name):
        return [float(x) for x in np.asarray(tensors[name].data, np.float32).reshape(-1)]

    rope = {"rope_type": "default", "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0))}
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    factor = _field(reader, f"{arch}.rope.scaling.factor")
    original = _field(reader, f"{arch}.rope.scaling.original_context_length")
    if scaling == "linear":
        rope.update(rope_type="linear", factor=float(factor))
    elif scaling == "yarn":
        rope.update(rope_type="yarn", factor=float(factor), original_max_position_embeddings=int(original))
    elif scaling not in (None, "none"):
        raise SourceError(f"rope scaling {scaling!r} is not supported (linear, yarn, llama3's rope_freqs, longrope are)")
    if "rope_factors_long.weight" in tensors:
        rope.update(rope_type="longrope", long_factor=factors("rope_factors_long.weight"),
                    short_factor=factors("rope_factors_short.weight"), original_max_position_embeddings=int(original))
        attention_factor = _field(reader, f"{arch}.rope.scaling.attn_factor")
        if attention_factor is not None:
            rope["attention_factor"] = float(attention_factor)
    if "rope_freqs.weight" in tensors:
        rope["freq_factors"] = factors("rope_freqs.weight")
    return rope
