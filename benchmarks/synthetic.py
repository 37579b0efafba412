"""A random-weight llama checkpoint with a real model's compute shapes, for measuring at real size with
no download: bf16 safetensors in shards, config.json, and the default model's tokenizer (SmolLM2's,
vocab 49152, ChatML template) so every size shares one tokenizer and prompts stay comparable.

    python benchmarks/synthetic.py SHAPE OUT_DIR                      # SHAPE: one of the names below
    python benchmarks/synthetic.py SHAPE OUT.gguf [--quantize Q4_K_M]  # the same weights as a GGUF

Then `ovchat convert OUT_DIR -o MODEL_DIR` and measure MODEL_DIR. The weights are N(0, 0.02) (norms 1),
so replies are nonsense; timings, memory and the cost of a precision setting are what they measure.
A .gguf is written in F16 as llama.cpp's converter writes llama (q/k rows interleaved per head), then,
with --quantize, quantized by llama.cpp itself (llama-cpp-python's llama_model_quantize) into
OUT.TYPE.gguf: the file people download, for comparing import and runtimes on one set of weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name → (hidden, layers, FFN, heads, KV heads, head dim): the compute shapes of the model the name says.
SHAPES = {
    "smollm2-360m": (960, 32, 2560, 15, 5, 64),
    "qwen2.5-0.5b": (896, 24, 4864, 14, 2, 64),
    "llama-3.2-1b": (2048, 16, 8192, 32, 8, 64),
    "smollm2-1.7b": (2048, 24, 8192, 32, 32, 64),
    "qwen2.5-3b": (2048, 36, 11008, 16, 2, 128),
    "llama-3.2-3b": (3072, 28, 8192, 24, 8, 128),
    "phi-3-mini": (3072, 32, 8192, 32, 32, 96),
    "qwen3-4b": (2560, 36, 9728, 32, 8, 128),  # heads × head dim (4096) wider than hidden, as Qwen3's
    "tiny": (64, 2, 128, 4, 2, 32),  # for the tests
}
VOCAB = 49152
SHARD_BYTES = 2 << 30


def tensors(hidden: int, layers: int, ffn: int, heads: int, kv_heads: int, head_dim: int):
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


def weights(shape: str):
    """(name, array) in checkpoint order; the same values for every writer."""
    rng = np.random.default_rng(0)
    for name, dims in tensors(*SHAPES[shape]):
        if len(dims) == 1:
            yield name, np.ones(dims, ml_dtypes.bfloat16)
        else:
            yield name, (rng.standard_normal(dims, np.float32) * 0.02).astype(ml_dtypes.bfloat16)


def write_checkpoint(shape: str, out: Path) -> Path:
    from convert.gguf_source import read_gguf
    from ovgenai_chat.engine import default_gguf

    hidden, layers, ffn, heads, kv_heads, head_dim = SHAPES[shape]
    out.mkdir(parents=True, exist_ok=False)
    shards, shard, size, weight_map = [], {}, 0, {}

    def flush():
        nonlocal shard, size
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(shard, out / name)
        weight_map.update({key: name for key in shard})
        shards.append(name)
        shard, size = {}, 0

    for name, value in weights(shape):
        shard[name] = value
        size += value.nbytes
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    total = sum(int(np.prod(dims)) for _, dims in tensors(*SHAPES[shape]))
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "num_hidden_layers": layers, "intermediate_size": ffn, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "vocab_size": VOCAB,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }, indent=2))
    read_gguf(default_gguf()).hf_tokenizer().save_pretrained(out)
    print(f"{out}: {shape} shapes, {total / 1e9:.2f} B parameters, {len(shards)} shards")
    return out


# HF name → GGUF name, as llama.cpp's converter names llama's tensors
GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, layer, *module, _ = name.split(".")
    return f"blk.{layer}.{GGUF_NAMES['.'.join(module)]}.weight"


def write_gguf(shape: str, out: Path, quantize: str | None) -> Path:
    """An F16 GGUF of `shape`'s weights, written tensor by tensor (a 3.8 B model never sits in memory
    whole), with the default model's tokenizer; then llama.cpp's quantization of it, if asked."""
    import gguf

    from ovgenai_chat.engine import default_gguf

    hidden, layers, ffn, heads, kv_heads, head_dim = SHAPES[shape]
    writer = gguf.GGUFWriter(out, "llama")
    for key, value in ((writer.add_block_count, layers), (writer.add_context_length, 4096),
                       (writer.add_embedding_length, hidden), (writer.add_feed_forward_length, ffn),
                       (writer.add_head_count, heads), (writer.add_head_count_kv, kv_heads),
                       (writer.add_layer_norm_rms_eps, 1e-5), (writer.add_rope_freq_base, 10000.0),
                       (writer.add_rope_dimension_count, head_dim), (writer.add_key_length, head_dim),
                       (writer.add_value_length, head_dim), (writer.add_vocab_size, VOCAB)):
        key(value)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    source = gguf.GGUFReader(default_gguf())
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            value = field.contents()
            value_type = field.types[-1] if field.types else None
            if isinstance(value, list):
                writer.add_array(key, value)
            elif isinstance(value, str):
                writer.add_string(key, value)
            elif value_type == gguf.GGUFValueType.BOOL:
                writer.add_bool(key, value)
            else:
                writer.add_uint32(key, value)
    specs = list(tensors(*SHAPES[shape]))
    for name, dims in specs:
        dtype = np.float32 if len(dims) == 1 else np.float16  # llama.cpp keeps norms in F32
        writer.add_tensor_info(gguf_name(name), dims, np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, value in weights(shape):
        array = value.astype(np.float32)
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # rotary halves interleaved, as llama.cpp's converter does
            n = heads if "q_proj" in name else kv_heads
            array = array.reshape(n, 2, head_dim // 2, hidden).swapaxes(1, 2).reshape(array.shape)
        writer.write_tensor_data(array.astype(np.float32 if array.ndim == 1 else np.float16))
    writer.close()
    print(f"{out}: {shape} shapes, F16")
    if not quantize:
        return out
    import ctypes

    import llama_cpp

    quantized = out.with_suffix(f".{quantize}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantize}")
    if llama_cpp.llama_model_quantize(str(out).encode(), str(quantized).encode(), ctypes.byref(params)) != 0:
        sys.exit(f"llama.cpp could not quantize {out} to {quantize}")
    print(f"{quantized}: {quantize}, {quantized.stat().st_size / 1e9:.2f} GB")
    return quantized


def cached_models(shape: str, cache: Path, quantize: str | None = "Q4_K_M") -> tuple[Path, Path | None]:
    """(int4 model directory, GGUF for llama.cpp) of `shape`, built into `cache` the first time: the
    checkpoint, `ovchat convert` of it with the default preset, the F16 GGUF of the same weights and
    llama.cpp's `quantize` of it (None when llama-cpp-python is missing). The checkpoint and the F16
    GGUF are deleted once what is made from them exists."""
    import importlib.util
    import shutil
    import subprocess

    cache.mkdir(parents=True, exist_ok=True)
    model_dir, checkpoint = cache / "int4", cache / "checkpoint"
    if not (model_dir / "openvino_model.xml").is_file():
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_checkpoint(shape, checkpoint)
        subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "convert", str(checkpoint), "-o", str(model_dir),
                        "--force"], check=True)
        shutil.rmtree(checkpoint)
    if not quantize or importlib.util.find_spec("llama_cpp") is None:
        return model_dir, None
    quantized = cache / f"{shape}.{quantize}.gguf"
    if not quantized.is_file():
        f16 = cache / f"{shape}.gguf"
        write_gguf(shape, f16, quantize)
        f16.unlink()
    return model_dir, quantized


if __name__ == "__main__":
    args = sys.argv[1:]
    quantize = None
    if "--quantize" in args:
        at = args.index("--quantize")
        quantize = args[at + 1] if at + 1 < len(args) else None
        args = args[:at] + args[at + 2:]
    if len(args) != 2 or args[0] not in SHAPES or ("--quantize" in sys.argv and not quantize):
        sys.exit(__doc__ + "\nshapes: " + ", ".join(SHAPES))
    out = Path(args[1])
    if out.suffix == ".gguf":
        write_gguf(args[0], out, quantize)
    else:
        write_checkpoint(args[0], out)
