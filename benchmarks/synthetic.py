"""A random-weight llama checkpoint with a real model's compute shapes, for measuring at real size with
no download: bf16 safetensors in shards, config.json, and the default model's tokenizer (SmolLM2's,
vocab 49152, ChatML template) so every size shares one tokenizer and prompts stay comparable.

    python benchmarks/synthetic.py SHAPE OUT_DIR        # SHAPE: one of the names below

Then `ovchat convert OUT_DIR -o MODEL_DIR` and measure MODEL_DIR. The weights are N(0, 0.02) (norms 1),
so replies are nonsense; timings, memory and the cost of a precision setting are what they measure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name → (hidden, layers, FFN, heads, KV heads): the compute shapes of the model the name says.
SHAPES = {
    "smollm2-360m": (960, 32, 2560, 15, 5),
    "qwen2.5-0.5b": (896, 24, 4864, 14, 2),
    "llama-3.2-1b": (2048, 16, 8192, 32, 8),
    "smollm2-1.7b": (2048, 24, 8192, 32, 32),
    "qwen2.5-3b": (2048, 36, 11008, 16, 2),
    "phi-3-mini": (3072, 32, 8192, 32, 32),
}
VOCAB = 49152
SHARD_BYTES = 2 << 30


def tensors(hidden: int, layers: int, ffn: int, heads: int, kv_heads: int):
    head_dim = hidden // heads
    yield "model.embed_tokens.weight", (VOCAB, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "self_attn.q_proj.weight", (heads * head_dim, hidden)
        yield p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.o_proj.weight", (hidden, heads * head_dim)
        yield p + "mlp.gate_proj.weight", (ffn, hidden)
        yield p + "mlp.up_proj.weight", (ffn, hidden)
        yield p + "mlp.down_proj.weight", (hidden, ffn)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (VOCAB, hidden)


def write_checkpoint(shape: str, out: Path) -> Path:
    from convert.gguf_source import read_gguf
    from ovgenai_chat.engine import default_gguf

    hidden, layers, ffn, heads, kv_heads = SHAPES[shape]
    out.mkdir(parents=True, exist_ok=False)
    rng = np.random.default_rng(0)
    shards, shard, size, weight_map = [], {}, 0, {}

    def flush():
        nonlocal shard, size
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(shard, out / name)
        weight_map.update({key: name for key in shard})
        shards.append(name)
        shard, size = {}, 0

    for name, dims in tensors(hidden, layers, ffn, heads, kv_heads):
        if len(dims) == 1:
            value = np.ones(dims, ml_dtypes.bfloat16)
        else:
            value = (rng.standard_normal(dims, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        shard[name] = value
        size += value.nbytes
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    total = sum(int(np.prod(dims)) for _, dims in tensors(hidden, layers, ffn, heads, kv_heads))
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "num_hidden_layers": layers, "intermediate_size": ffn, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": hidden // heads, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "vocab_size": VOCAB,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }, indent=2))
    read_gguf(default_gguf()).hf_tokenizer().save_pretrained(out)
    print(f"{out}: {shape} shapes, {total / 1e9:.2f} B parameters, {len(shards)} shards")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        sys.exit(__doc__ + "\nshapes: " + ", ".join(SHAPES))
    write_checkpoint(sys.argv[1], Path(sys.argv[2]))
