"""Tiny GGUF files written from the tiny HF checkpoints with the `gguf` package, as llama.cpp's
converter writes them (llama's q/k rows permuted), each projection in a chosen block type."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import synthetic  # noqa: E402  (how llama.cpp's converter lays out Qwen3.5's value heads)

# HF name → GGUF name; {} is the layer.
GGUF_NAMES = {
    # A multi-token-prediction head's own tensors in the block after the model's (llama.cpp's nextn names).
    "model.layers.{}.eh_proj.weight": "blk.{}.nextn.eh_proj.weight",
    "model.layers.{}.enorm.weight": "blk.{}.nextn.enorm.weight",
    "model.layers.{}.hnorm.weight": "blk.{}.nextn.hnorm.weight",
    "model.layers.{}.shared_head.norm.weight": "blk.{}.nextn.shared_head_norm.weight",
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{}.input_layernorm.weight": "blk.{}.attn_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "blk.{}.ffn_norm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "blk.{}.attn_q.weight",
    "model.layers.{}.self_attn.k_proj.weight": "blk.{}.attn_k.weight",
    "model.layers.{}.self_attn.v_proj.weight": "blk.{}.attn_v.weight",
    "model.layers.{}.self_attn.o_proj.weight": "blk.{}.attn_output.weight",
    "model.layers.{}.self_attn.q_proj.bias": "blk.{}.attn_q.bias",
    "model.layers.{}.self_attn.k_proj.bias": "blk.{}.attn_k.bias",
    "model.layers.{}.self_attn.v_proj.bias": "blk.{}.attn_v.bias",
    "model.layers.{}.mlp.gate_proj.weight": "blk.{}.ffn_gate.weight",
    "model.layers.{}.mlp.up_proj.weight": "blk.{}.ffn_up.weight",
    "model.layers.{}.mlp.down_proj.weight": "blk.{}.ffn_down.weight",
    "model.layers.{}.self_attn.q_norm.weight": "blk.{}.attn_q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "blk.{}.attn_k_norm.weight",
    "model.layers.{}.self_attn.qkv_proj.weight": "blk.{}.attn_qkv.weight",  # Phi-3's fused tensors
    "model.layers.{}.mlp.gate_up_proj.weight": "blk.{}.ffn_up.weight",
    "model.layers.{}.post_attention_norm.weight": "blk.{}.post_attention_norm.weight",  # Gemma 3's
    "model.layers.{}.ffn_norm.weight": "blk.{}.ffn_norm.weight",
    "model.layers.{}.post_ffw_norm.weight": "blk.{}.post_ffw_norm.weight",
    # Qwen3.5's Gated DeltaNet layers
    "model.layers.{}.linear_attn.in_proj_qkv.weight": "blk.{}.attn_qkv.weight",
    "model.layers.{}.linear_attn.in_proj_z.weight": "blk.{}.attn_gate.weight",
    "model.layers.{}.linear_attn.in_proj_b.weight": "blk.{}.ssm_beta.weight",
    "model.layers.{}.linear_attn.in_proj_a.weight": "blk.{}.ssm_alpha.weight",
    "model.layers.{}.linear_attn.conv1d.weight": "blk.{}.ssm_conv1d.weight",
    "model.layers.{}.linear_attn.dt_bias": "blk.{}.ssm_dt.bias",
    "model.layers.{}.linear_attn.A_log": "blk.{}.ssm_a",
    "model.layers.{}.linear_attn.norm.weight": "blk.{}.ssm_norm.weight",
    "model.layers.{}.linear_attn.out_proj.weight": "blk.{}.ssm_out.weight",
    # LFM2's
    "model.embedding_norm.weight": "token_embd_norm.weight",
    "model.layers.{}.operator_norm.weight": "blk.{}.attn_norm.weight",
    "model.layers.{}.conv.in_proj.weight": "blk.{}.shortconv.in_proj.weight",
    "model.layers.{}.conv.conv.weight": "blk.{}.shortconv.conv.weight",
    "model.layers.{}.conv.out_proj.weight": "blk.{}.shortconv.out_proj.weight",
    "model.layers.{}.self_attn.out_proj.weight": "blk.{}.attn_output.weight",
    "model.layers.{}.self_attn.q_layernorm.weight": "blk.{}.attn_q_norm.weight",
    "model.layers.{}.self_attn.k_layernorm.weight": "blk.{}.attn_k_norm.weight",
    "model.layers.{}.feed_forward.w1.weight": "blk.{}.ffn_gate.weight",
    "model.layers.{}.feed_forward.w3.weight": "blk.{}.ffn_up.weight",
    "model.layers.{}.feed_forward.w2.weight": "blk.{}.ffn_down.weight",
    # Gemma 4's per-layer embeddings and layer scalars
    "model.embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
    "model.per_layer_model_projection.weight": "per_layer_model_proj.weight",
    "model.per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
    "model.layers.{}.per_layer_input_gate.weight": "blk.{}.inp_gate.weight",
    "model.layers.{}.per_layer_projection.weight": "blk.{}.proj.weight",
    "model.layers.{}.post_per_layer_input_norm.weight": "blk.{}.post_norm.weight",
    "model.layers.{}.layer_scalar": "blk.{}.layer_output_scale.weight",
    # Gemma 4 26B-A4B's router, experts (stacked as the checkpoint has them) and the norms around them
    "model.layers.{}.router.proj.weight": "blk.{}.ffn_gate_inp.weight",
    "model.layers.{}.router.scale": "blk.{}.ffn_gate_inp.scale",
    "model.layers.{}.router.per_expert_scale": "blk.{}.ffn_down_exps.scale",
    "model.layers.{}.experts.gate_up_proj": "blk.{}.ffn_gate_up_exps.weight",
    "model.layers.{}.experts.down_proj": "blk.{}.ffn_down_exps.weight",
    "model.layers.{}.pre_feedforward_layernorm_2.weight": "blk.{}.pre_ffw_norm_2.weight",
    "model.layers.{}.post_feedforward_layernorm_1.weight": "blk.{}.post_ffw_norm_1.weight",
    "model.layers.{}.post_feedforward_layernorm_2.weight": "blk.{}.post_ffw_norm_2.weight",
    # A mixture's router and its experts, stacked [E, N, K] (stack_experts)
    "model.layers.{}.mlp.gate.weight": "blk.{}.ffn_gate_inp.weight",
    "model.layers.{}.mlp.experts.gate_proj.weight": "blk.{}.ffn_gate_exps.weight",
    "model.layers.{}.mlp.experts.up_proj.weight": "blk.{}.ffn_up_exps.weight",
    "model.layers.{}.mlp.experts.down_proj.weight": "blk.{}.ffn_down_exps.weight",
    # Qwen3.5-MoE's shared expert and its gate
    "model.layers.{}.mlp.shared_expert.gate_proj.weight": "blk.{}.ffn_gate_shexp.weight",
    "model.layers.{}.mlp.shared_expert.up_proj.weight": "blk.{}.ffn_up_shexp.weight",
    "model.layers.{}.mlp.shared_expert.down_proj.weight": "blk.{}.ffn_down_shexp.weight",
    "model.layers.{}.mlp.shared_expert_gate.weight": "blk.{}.ffn_gate_inp_shexp.weight",
    # LFM2-MoE's router, expert bias and experts (its file's names, and transformers' fused ones)
    "model.layers.{}.feed_forward.gate.weight": "blk.{}.ffn_gate_inp.weight",
    "model.layers.{}.feed_forward.expert_bias": "blk.{}.exp_probs_b.bias",
    "model.layers.{}.feed_forward.experts.w1.weight": "blk.{}.ffn_gate_exps.weight",
    "model.layers.{}.feed_forward.experts.w3.weight": "blk.{}.ffn_up_exps.weight",
    "model.layers.{}.feed_forward.experts.w2.weight": "blk.{}.ffn_down_exps.weight",
    "model.layers.{}.feed_forward.experts.gate_proj.weight": "blk.{}.ffn_gate_exps.weight",
    "model.layers.{}.feed_forward.experts.up_proj.weight": "blk.{}.ffn_up_exps.weight",
    "model.layers.{}.feed_forward.experts.down_proj.weight": "blk.{}.ffn_down_exps.weight",
    # gpt-oss's sinks, output bias, router bias and expert biases
    "model.layers.{}.self_attn.sinks": "blk.{}.attn_sinks.weight",
    "model.layers.{}.self_attn.o_proj.bias": "blk.{}.attn_output.bias",
    "model.layers.{}.mlp.router.weight": "blk.{}.ffn_gate_inp.weight",
    "model.layers.{}.mlp.router.bias": "blk.{}.ffn_gate_inp.bias",
    "model.layers.{}.mlp.experts.gate_proj.bias": "blk.{}.ffn_gate_exps.bias",
    "model.layers.{}.mlp.experts.up_proj.bias": "blk.{}.ffn_up_exps.bias",
    "model.layers.{}.mlp.experts.down_proj.bias": "blk.{}.ffn_down_exps.bias",
    # Granite 4.0-H's Mamba-2 mixers (A_log as A itself), router and experts
    **{f"model.layers.{{}}.mamba.{name}": f"blk.{{}}.ssm_{gguf_name}" for name, gguf_name in (
        ("in_proj.weight", "in.weight"), ("conv1d.weight", "conv1d.weight"), ("conv1d.bias", "conv1d.bias"),
        ("dt_bias", "dt.bias"), ("A_log", "a"), ("D", "d"), ("norm.weight", "norm.weight"), ("out_proj.weight", "out.weight"))},
    "model.layers.{}.block_sparse_moe.router.weight": "blk.{}.ffn_gate_inp.weight",
    **{f"model.layers.{{}}.block_sparse_moe.experts.{proj}_proj.weight": f"blk.{{}}.ffn_{proj}_exps.weight"
       for proj in ("gate", "up", "down")},
}

# Every block type the import keeps, plus plain float tensors.
BLOCK_TYPES = {
    "attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q8_0", "attn_output": "F16",
    "ffn_gate": "Q4_0", "ffn_up": "Q4_1", "ffn_down": "BF16", "token_embd": "Q8_0", "output": "Q8_0",
}
# Every other block type kept exactly: the K-quants of a Q4_K_M file and its Q5_0/Q5_1 fallbacks.
# K-quant rows hold super-blocks of 256 weights, so these need a checkpoint 256 wide ("llama-256").
K_QUANT_TYPES = {
    "attn_q": "Q4_K", "attn_k": "Q5_K", "attn_v": "Q6_K", "attn_output": "Q5_0",
    "ffn_gate": "Q5_1", "ffn_up": "Q4_K", "ffn_down": "Q6_K", "token_embd": "Q4_K", "output": "Q6_K",
}
# Where a block's f16 scale (d) sits, the f16 min (dmin) where there is one, and the mean q: with
# dmin = d · mean q, d·sc·q − dmin·m comes out roughly centred.
K_FIELDS = {"Q2_K": (80, 82, 1.5), "Q4_K": (0, 2, 7.5), "Q5_K": (0, 2, 15.5), "Q6_K": (208, None, 0.0)}
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.chat_template")


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rows → llama.cpp's rows (the rotary halves of each head interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_k_blocks(kind: str, shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Valid K-quant blocks for a [rows, cols] tensor (or stacked experts [E, rows, cols]): random bits for the packed quants, sub-block
    scales and mins, then d (and dmin) set so the weights have about `std`. gguf-py cannot write
    K-quants, and any bit pattern of those fields is a block llama.cpp reads. The first
    super-block has d = 0: its groups are constants −dmin·m."""
    qtype = gguf.GGMLQuantizationType[kind]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    at, dmin_at, mean = K_FIELDS[kind]

    def set_f16(offset, values):
        raw[..., offset:offset + 2] = values.astype(np.float16)[..., None].view(np.uint8)

    set_f16(at, np.ones(raw.shape[:2]))
    if dmin_at is not None:
        set_f16(dmin_at, np.full(raw.shape[:2], mean))
    unit = gguf.quants.dequantize(raw.reshape(rows, -1), qtype).std()
    d = np.abs(rng.normal(1.0, 0.3, raw.shape[:2])) * std / unit
    d[0, 0] = 0.0
    set_f16(at, d)
    if dmin_at is not None:
        set_f16(dmin_at, np.abs(rng.normal(1.0, 0.3, raw.shape[:2])) * mean * std / unit)
    return raw.reshape(*shape[:-1], -1)


def stack_experts(tensors: dict) -> dict:
    """Per-expert tensors `….mlp.experts.{e}.{proj}.weight` stacked [E, N, K] as `….mlp.experts.{proj}.weight`,
    as llama.cpp's converter writes them (ffn_*_exps)."""
    stacked, experts = {}, {}
    for name, tensor in tensors.items():
        prefix, found, rest = name.partition(".experts.")
        index, _, proj = rest.partition(".")
        if found and index.isdigit():
            experts.setdefault(f"{prefix}.experts.{proj}", {})[int(index)] = tensor
        else:
            stacked[name] = tensor
    for name, by_index in experts.items():
        stacked[name] = np.stack([by_index[e] for e in range(len(by_index))])
    return stacked


# model_type → general.architecture, where they differ (dense Granite 4.0 is written as granite)
GGUF_ARCH = {"gemma3_text": "gemma3", "gemma4_text": "gemma4", "qwen3_5_text": "qwen35", "olmo3": "olmo2",
             "granitemoehybrid": "granite", "ministral3": "mistral3", "qwen3_moe": "qwen3moe", "qwen3_5_moe_text": "qwen35moe",
             "qwen3_5_moe": "qwen35moe", "lfm2_moe": "lfm2moe", "gpt_oss": "gpt-oss"}
# The architectures built on Qwen3.5's and LFM2's hybrids, written as those are.
QWEN35 = ("qwen35", "qwen35moe")
LFM2 = ("lfm2", "lfm2moe")
# The end of a reference's fused tensor's name → the GGUF tensors it is made of, joined along their rows (axis −2;
# gpt-oss's alternate, in [E, in, out]).
FUSED_IN_REFERENCE = {"shared_mlp.input_linear.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),  # Granite 4.0's
                      "shared_mlp.output_linear.weight": ("mlp.down_proj.weight",),
                      "experts.gate_up_proj": ("experts.gate_proj.weight", "experts.up_proj.weight"),  # transformers 5's
                      "experts.down_proj": ("experts.down_proj.weight",),
                      "experts.gate_up_proj_bias": ("experts.gate_proj.bias", "experts.up_proj.bias"),  # gpt-oss's
                      "experts.down_proj_bias": ("experts.down_proj.bias",)}
# Where llama.cpp stores an RMSNorm that scales by (1 + w) as 1 + w: every norm but these.
PLUS_ONE_NORMS = {"gemma2": (), "gemma3": (), "qwen35": (".linear_attn.norm.",), "qwen35moe": (".linear_attn.norm.",)}
# Architectures whose q and k rows llama.cpp's converter interleaves for its NORM rope.
PERMUTED_QK = ("llama", "granite", "granitehybrid", "mistral3")
# Granite 4.0's names for a Mamba-2 layer (transformers 5 saves the second)
MAMBA_LAYERS = {"mamba", "linear_attention"}
# Qwen3.5's tensors whose value heads llama.cpp reorders, and the axis and band of them that holds the heads.
VALUE_HEAD_AXES = {"in_proj_qkv": 0, "in_proj_z": 0, "in_proj_b": 0, "in_proj_a": 0, "conv1d": 0, "dt_bias": 0,
                   "A_log": 0, "out_proj": 1}
# HF names llama.cpp gives other names per architecture, renamed before GGUF_NAMES: Gemma's and OLMo's
# extra norms (llama's post_attention_layernorm is the norm before the MLP), GLM-4's.
GEMMA_NORMS = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"}
RENAMES = {
    "gemma2": GEMMA_NORMS, "gemma3": GEMMA_NORMS, "gemma4": GEMMA_NORMS,
    "qwen35": {"post_attention_layernorm": "post_attention_norm"},
    "qwen35moe": {"post_attention_layernorm": "post_attention_norm"},
    "gpt-oss": {"post_attention_layernorm": "post_attention_norm"},
    "olmo2": {"post_attention_layernorm": "post_attention_norm", "post_feedforward_layernorm": "post_ffw_norm"},
    "glm4": {"post_self_attn_layernorm": "post_attention_norm", "post_mlp_layernorm": "post_ffw_norm"},
}


def gguf_arch(config: dict) -> str:
    """general.architecture for a checkpoint's config: Granite 4.0 with Mamba-2 layers or experts is granitehybrid."""
    model_type = config["model_type"]
    if model_type == "granitemoehybrid" and (config.get("num_local_experts") or set(config.get("layer_types") or []) & MAMBA_LAYERS):
        return "granitehybrid"
    return GGUF_ARCH.get(model_type, model_type)


def to_gguf_name(name: str, arch: str) -> str:
    parts = name.split(".")
    layer = parts[2] if parts[1] == "layers" else None
    for old, new in RENAMES.get(arch, {}).items():
        name = name.replace(f".{old}.", f".{new}.")
    return GGUF_NAMES[name.replace(f".{layer}.", ".{}.", 1) if layer else name].format(layer)


def stored_as(name: str, arch: str) -> str | None:
    """The GGUF name of the HF tensor `name`, None where the file has no tensor of that name."""
    try:
        return to_gguf_name(name, arch)
    except KeyError:
        return None


def value_head_order(name: str, tensor: np.ndarray, config: dict, to_gguf: bool) -> np.ndarray:
    """Qwen3.5's value heads in llama.cpp's order (to_gguf) or back: Qwen groups the value heads by the key
    head they read ([Hk, Hv/Hk] heads), llama.cpp tiles them ([Hv/Hk, Hk])."""
    part = name.split(".")[-2] if name.endswith((".weight", ".bias")) else name.split(".")[-1]
    key_heads, value_heads = config["linear_num_key_heads"], config["linear_num_value_heads"]
    if part not in VALUE_HEAD_AXES or ".linear_attn." not in name or key_heads == value_heads:
        return tensor
    start = 2 * key_heads * config["linear_key_head_dim"] if part in ("in_proj_qkv", "conv1d") else 0
    outer, inner = (key_heads, value_heads // key_heads) if to_gguf else (value_heads // key_heads, key_heads)
    return synthetic.regroup_value_heads(np.asarray(tensor), VALUE_HEAD_AXES[part], start, outer, inner)


def dequantized_reference(checkpoint: Path, path: Path):
    """transformers' model of `checkpoint`, each tensor the GGUF holds in blocks replaced by gguf-py's
    dequantization of them (llama's q/k rows put back in order): the file's weights, in a reference
    that takes config and rope from the checkpoint — transformers' own GGUF loader reads no head_dim
    from a qwen3 file and ignores rope_freqs."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    arch = gguf_arch(model.config.to_dict())
    stored = {tensor.name: tensor for tensor in gguf.GGUFReader(path).tensors}
    state = model.state_dict()
    for name, value in state.items():
        fused = next((f for f in FUSED_IN_REFERENCE if name.endswith(f".{f}")), None)
        if fused and stored_as(name, arch) not in stored:  # apart in the file (Gemma 4's experts are as they are)
            parts = [name[:-len(fused)] + part for part in FUSED_IN_REFERENCE[fused]]
        else:
            fused, parts = None, [name]
        tensors = [stored.get(to_gguf_name(part, arch)) for part in parts]
        if any(t is None or t.tensor_type.name in ("F32", "F16", "BF16") for t in tensors):
            continue
        shapes = [tuple(int(n) for n in reversed(t.shape.tolist())) for t in tensors]
        parts = [gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape) for t, shape in zip(tensors, shapes)]
        if arch == "gpt-oss" and fused:  # experts [E, in, out], gate and up columns alternating
            w = np.swapaxes(np.stack(parts, axis=-2).reshape(*parts[0].shape[:-2], -1, parts[0].shape[-1]), -1, -2)
        else:
            w = np.concatenate(parts, axis=-2)
        w = w.reshape(value.shape)
        if arch in QWEN35:
            w = value_head_order(name, w, model.config.to_dict(), to_gguf=False)
        if arch in PERMUTED_QK and (".self_attn.q_proj." in name or ".self_attn.k_proj." in name):
            heads = model.config.num_attention_heads if "q_proj" in name else model.config.num_key_value_heads
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        value.copy_(torch.from_numpy(np.ascontiguousarray(w, np.float32)))
    return model


def gemma4_metadata(writer, config: dict) -> None:
    """What llama.cpp's converter writes for Gemma 4: both head sizes, the shared-KV layers, the per-layer
    embedding's width, the MLP's width per layer (doubled on the shared layers), KV heads per layer where the
    full layers have their own, and rope_freqs marking the full layers' rotated pairs (1) and the rest (1e30)."""
    layers, shared = config["num_hidden_layers"], config.get("num_kv_shared_layers", 0)
    full = [i for i, t in enumerate(config["layer_types"]) if t == "full_attention"]
    per_layer = {int(k): v for k, v in (config.get("per_layer_config") or {}).items()}
    full_head_dim = per_layer.get(full[0], {}).get("head_dim", config["head_dim"])
    writer.add_key_length(full_head_dim)
    writer.add_value_length(full_head_dim)
    writer.add_key_length_swa(config["head_dim"])
    writer.add_value_length_swa(config["head_dim"])
    writer.add_shared_kv_layers(shared)
    writer.add_embedding_length_per_layer_input(config.get("hidden_size_per_layer_input") or 0)
    width = config["intermediate_size"]
    writer.add_feed_forward_length([width * (2 if config.get("use_double_wide_mlp") and i >= layers - shared else 1)
                                    for i in range(layers)])
    full_kv = per_layer.get(full[0], {}).get("num_key_value_heads")
    if full_kv:
        writer.add_head_count_kv([full_kv if t == "full_attention" else config["num_key_value_heads"]
                                  for t in config["layer_types"]])
    else:
        writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_dimension_count(full_head_dim)
    writer.add_rope_dimension_count_swa(config["head_dim"])
    rotated = int(full_head_dim * config["rope_parameters"]["full_attention"]["partial_rotary_factor"] / 2)
    writer.add_tensor("rope_freqs.weight", np.array([1.0] * rotated + [1e30] * (full_head_dim // 2 - rotated), np.float32))


def llama3_rope_freqs(rope: dict, head_dim: int) -> np.ndarray:
    """What llama.cpp's converter stores as rope_freqs for Llama 3.1 rope scaling: per frequency,
    the divisor — 1 above the high-frequency bound, `factor` below the low one, a smooth blend between."""
    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    old, low, high, factor = (rope["original_max_position_embeddings"], rope["low_freq_factor"],
                              rope["high_freq_factor"], rope["factor"])
    divisors = []
    for wavelength in 2 * np.pi / freqs:
        if wavelength < old / high:
            divisors.append(1.0)
        elif wavelength > old / low:
            divisors.append(factor)
        else:
            smooth = (old / wavelength - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, np.float32)


def write_gguf(checkpoint: Path, out: Path, tokenizer_gguf: Path, block_types: dict[str, str],
               sampling: dict[str, float] | None = None) -> Path:
    """`sampling`: general.sampling.* values to write (llama.cpp's recommended sampler settings)."""
    config = json.loads((checkpoint / "config.json").read_text())
    arch = config["model_type"]
    tensors = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        tensors.update({k: v.astype(np.float32) for k, v in load_file(file).items()})

    arch = gguf_arch(config)
    head = config.get("mtp_num_hidden_layers", 0)
    if head:  # Qwen3.5's multi-token-prediction head: blocks after the model's, as llama.cpp's converter writes it
        assert head == 1, "llama.cpp takes one MTP block"
        layers = config["num_hidden_layers"]
        own = {"fc": "eh_proj", "pre_fc_norm_embedding": "enorm", "pre_fc_norm_hidden": "hnorm", "norm": "shared_head.norm"}
        for name in [n for n in tensors if n.startswith("mtp.")]:
            rest = name.removeprefix("mtp.")
            new = (f"model.layers.{layers + int(rest.split('.')[1])}.{rest.split('.', 2)[2]}" if rest.startswith("layers.")
                   else f"model.layers.{layers}.{own[rest.removesuffix('.weight')]}.weight")
            tensors[new] = tensors.pop(name)
    if arch in PLUS_ONE_NORMS:  # llama.cpp stores (1 + w) norms as 1 + w
        tensors = {name: tensor + 1 if name.endswith("norm.weight") and not any(n in name for n in PLUS_ONE_NORMS[arch])
                   else tensor for name, tensor in tensors.items()}
    if arch in QWEN35:  # the decay rate A = −exp(A_log) itself, value heads in llama.cpp's order
        tensors = {name: -np.exp(tensor) if name.endswith("A_log") else tensor for name, tensor in tensors.items()}
        tensors = {name: value_head_order(name, tensor, config, to_gguf=True) for name, tensor in tensors.items()}
    if arch in ("granite", "granitehybrid"):  # Granite 4.0's fused shared MLP as three projections (a shared expert's
        shared = "mlp.shared_expert" if config.get("num_local_experts") else "mlp"  # where there are experts)
        for name in [n for n in tensors if ".shared_mlp." in n]:
            tensor, layer = tensors.pop(name), name.split(".shared_mlp.")[0]
            if name.endswith("input_linear.weight"):
                tensors[f"{layer}.{shared}.gate_proj.weight"], tensors[f"{layer}.{shared}.up_proj.weight"] = np.split(tensor, 2)
            else:
                tensors[f"{layer}.{shared}.down_proj.weight"] = tensor
    if arch == "granitehybrid":  # experts' gate and up apart; Mamba-2's A itself, D [H, 1], its norm [groups, inner / groups]
        groups = config.get("mamba_n_groups", 1)
        for name in list(tensors):
            layer = name.split(".block_sparse_moe.")[0].split(".mamba.")[0]
            if name.endswith("block_sparse_moe.input_linear.weight"):
                gate, up = np.split(tensors.pop(name), 2, axis=1)
                tensors[f"{layer}.block_sparse_moe.experts.gate_proj.weight"] = gate
                tensors[f"{layer}.block_sparse_moe.experts.up_proj.weight"] = up
            elif name.endswith("block_sparse_moe.output_linear.weight"):
                tensors[f"{layer}.block_sparse_moe.experts.down_proj.weight"] = tensors.pop(name)
            elif name.endswith("block_sparse_moe.router.layer.weight"):
                tensors[f"{layer}.block_sparse_moe.router.weight"] = tensors.pop(name)
            elif name.endswith("mamba.A_log"):
                tensors[name] = -np.exp(tensors[name])[:, None]
            elif name.endswith("mamba.D"):
                tensors[name] = tensors[name][:, None]
            elif name.endswith("mamba.norm.weight"):
                tensors[name] = tensors[name].reshape(groups, -1)
    if arch == "gpt-oss":  # experts [E, out, in], gate and up apart (the checkpoint's alternate in [E, in, out])
        for name in [n for n in tensors if ".mlp.experts." in n]:
            tensor, experts = tensors.pop(name), name.split(".mlp.experts.")[0] + ".mlp.experts"
            if name.endswith("gate_up_proj"):
                gate_up = np.swapaxes(tensor, 1, 2)
                tensors[f"{experts}.gate_proj.weight"], tensors[f"{experts}.up_proj.weight"] = gate_up[:, 0::2], gate_up[:, 1::2]
            elif name.endswith("gate_up_proj_bias"):
                tensors[f"{experts}.gate_proj.bias"], tensors[f"{experts}.up_proj.bias"] = tensor[:, 0::2], tensor[:, 1::2]
            elif name.endswith("down_proj"):
                tensors[f"{experts}.down_proj.weight"] = np.swapaxes(tensor, 1, 2)
            else:
                tensors[f"{experts}.down_proj.bias"] = tensor
    tensors = {name: tensor[:, 0] if tensor.ndim == 3 and tensor.shape[1] == 1 else tensor  # conv taps [C, K]
               for name, tensor in stack_experts(tensors).items()}

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_block_count(config["num_hidden_layers"] + head)
    if head:
        writer.add_uint32(f"{arch}.nextn_predict_layers", head)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    if arch in LFM2:
        writer.add_feed_forward_length(int(tensors["model.layers.0.feed_forward.w1.weight"].shape[0]))
    elif arch == "granite" or arch == "granitehybrid" and not config.get("num_local_experts"):
        writer.add_feed_forward_length(config["shared_intermediate_size"])
    elif arch != "gemma4":
        writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    if arch in LFM2:  # per layer, 0 for a convolution layer; the MLP's width as its tensors have it
        layer_types = config["layer_types"]
        writer.add_head_count_kv([config["num_key_value_heads"] if t == "full_attention" else 0 for t in layer_types])
        writer.add_uint32(f"{arch}.shortconv.l_cache", config["conv_L_cache"])
        if arch == "lfm2moe":
            writer.add_leading_dense_block_count(config["num_dense_layers"])
            writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        writer.add_layer_norm_rms_eps(config["norm_eps"])
    else:
        if arch not in ("gemma4", "granitehybrid"):  # per layer there (gemma4_metadata, below)
            writer.add_head_count_kv(config["num_key_value_heads"])
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("num_experts") or config.get("num_local_experts"):
        writer.add_expert_count(config.get("num_experts", config.get("num_local_experts")))
        writer.add_expert_used_count(config.get("num_experts_per_tok") or config["top_k_experts"])
        if arch != "granitehybrid":  # whose experts are feed_forward_length wide
            writer.add_expert_feed_forward_length(config.get("moe_intermediate_size") or config["intermediate_size"])
        if config.get("shared_expert_intermediate_size"):
            writer.add_expert_shared_feed_forward_length(config["shared_expert_intermediate_size"])
    if arch in QWEN35:
        writer.add_ssm_conv_kernel(config["linear_conv_kernel_dim"])
        writer.add_ssm_state_size(config["linear_key_head_dim"])
        writer.add_ssm_group_count(config["linear_num_key_heads"])
        writer.add_ssm_time_step_rank(config["linear_num_value_heads"])
        writer.add_ssm_inner_size(config["linear_value_head_dim"] * config["linear_num_value_heads"])
        interval = config["layer_types"].index("full_attention") + 1  # llama.cpp knows only this pattern
        assert all((t == "full_attention") == ((i + 1) % interval == 0) for i, t in enumerate(config["layer_types"]))
        writer.add_full_attention_interval(interval)
        # Multimodal rope's sections of the rotated pairs (text positions are the same in each): all in one here.
        rotated = int(config["head_dim"] * config["rope_parameters"].get("partial_rotary_factor", 0.25))
        writer.add_rope_dimension_sections([rotated // 2, 0, 0, 0])
    rope = config.get("rope_parameters") or {}
    if arch in ("gemma3", "gemma4", "olmo2") and "full_attention" in rope:  # the full layers' rope; the sliding ones' base
        if arch != "gemma3":  # llama.cpp fixes Gemma 3's sliding layers' base at 10 000
            writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
        rope = rope["full_attention"]
    if "sliding_window" in config and arch in ("gemma2", "gemma3", "gemma4", "olmo2", "gpt-oss"):
        writer.add_sliding_window(config["sliding_window"])
        if arch != "gemma3":  # Gemma 3's is every 6th layer full, which llama.cpp assumes
            writer.add_sliding_window_pattern([t == "sliding_attention" for t in config["layer_types"]])
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        if arch == "mistral3":
            writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
            writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
            if rope.get("mscale_all_dim"):
                writer.add_rope_scaling_yarn_log_mul(rope["mscale_all_dim"])
    if rope.get("llama_4_scaling_beta"):
        writer.add_attn_temperature_scale(rope["llama_4_scaling_beta"])
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if arch == "granitehybrid":  # a Mamba-2 layer has no KV heads; NoPE as llama.cpp's converter marks it
        writer.add_head_count_kv([0 if t in MAMBA_LAYERS else config["num_key_value_heads"] for t in config["layer_types"]])
        inner = config["mamba_n_heads"] * config["mamba_d_head"]
        writer.add_ssm_conv_kernel(config["mamba_d_conv"])
        writer.add_ssm_state_size(config["mamba_d_state"])
        writer.add_ssm_group_count(config["mamba_n_groups"])
        writer.add_ssm_inner_size(inner)
        writer.add_ssm_time_step_rank(config["mamba_n_heads"])
        writer.add_rope_scaling_finetuned(config.get("position_embedding_type") == "rope")
        if config.get("num_local_experts"):
            writer.add_expert_shared_feed_forward_length(config["shared_intermediate_size"])
    if arch in ("granite", "granitehybrid"):
        writer.add_embedding_scale(config["embedding_multiplier"])
        writer.add_residual_scale(config["residual_multiplier"])
        writer.add_attention_scale(config["attention_multiplier"])
        writer.add_logit_scale(config["logits_scaling"])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    if arch == "gemma4":
        gemma4_metadata(writer, config)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    partial = config.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0))
    if partial != 1.0 and arch != "gemma4":
        writer.add_rope_dimension_count(int(head_dim * partial))
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_freqs(rope, head_dim))
    source = gguf.GGUFReader(tokenizer_gguf)
    for key in TOKENIZER_KEYS:
        field = source.fields[key]
        value = field.contents()
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)

    for key, value in (sampling or {}).items():
        (writer.add_int32 if isinstance(value, int) else writer.add_float32)(f"general.sampling.{key}", value)

    for name, tensor in tensors.items():
        gguf_name = to_gguf_name(name, arch)
        if arch in PERMUTED_QK and gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
            tensor = _permute(tensor, config["num_attention_heads"])
        elif arch in PERMUTED_QK and gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
            tensor = _permute(tensor, config["num_key_value_heads"])
        kind = block_types.get(gguf_name.split(".")[-2], "F32") if tensor.ndim >= 2 and not name.endswith("bias") else "F32"
        qtype = gguf.GGMLQuantizationType[kind]
        if kind in K_FIELDS:
            data = random_k_blocks(kind, tensor.shape, float(tensor.std()), rng)
        else:
            data = gguf.quants.quantize(tensor, qtype) if kind != "F32" else tensor
        writer.add_tensor(gguf_name, data, raw_dtype=qtype if kind != "F32" else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
