"""Tiny GGUF files written from the tiny HF checkpoints with the `gguf` package, as llama.cpp's
converter writes them (llama's q/k rows permuted), each projection in a chosen block type."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

# HF name → GGUF name; {} is the layer.
GGUF_NAMES = {
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
}

# Every block type the import keeps, plus plain float tensors.
BLOCK_TYPES = {
    "attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q8_0", "attn_output": "F16",
    "ffn_gate": "Q4_0", "ffn_up": "Q4_1", "ffn_down": "BF16", "token_embd": "Q8_0", "output": "Q8_0",
}
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.chat_template")


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rows → llama.cpp's rows (the rotary halves of each head interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(checkpoint: Path, out: Path, tokenizer_gguf: Path, block_types: dict[str, str]) -> Path:
    config = json.loads((checkpoint / "config.json").read_text())
    arch = config["model_type"]
    tensors = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        tensors.update({k: v.astype(np.float32) for k, v in load_file(file).items()})

    writer = gguf.GGUFWriter(out, arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))
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

    for name, tensor in tensors.items():
        parts = name.split(".")
        layer = parts[2] if parts[1] == "layers" else None
        gguf_name = GGUF_NAMES[name.replace(f".{layer}.", ".{}.", 1) if layer else name].format(layer)
        if arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
            tensor = _permute(tensor, config["num_attention_heads"])
        elif arch == "llama" and gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
            tensor = _permute(tensor, config["num_key_value_heads"])
        kind = block_types.get(gguf_name.split(".")[-2], "F32") if tensor.ndim == 2 else "F32"
        qtype = gguf.GGMLQuantizationType[kind]
        data = gguf.quants.quantize(tensor, qtype) if kind != "F32" else tensor
        writer.add_tensor(gguf_name, data, raw_dtype=qtype if kind != "F32" else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
