"""GGUF file → config, weights and tokenizer, read with the `gguf` package.

Q4_0, Q4_1 and Q8_0 blocks are kept as they are: their 4/8-bit values become OpenVINO u4/i4/i8
constants with the block's scale (and offset) per 32 weights, so the model computes with the very
weights llama.cpp does. Other block types are dequantized and compressed like any checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sources import SourceError, Weights

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
BLOCK = 32  # weights per Q4_0 / Q4_1 / Q8_0 block
KEPT_BLOCKS = ("Q4_0", "Q4_1", "Q8_0")
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
}


@dataclass
class BlockQuantized:
    """Weights [rows, cols] stored as GGUF blocks of 32: w = scale · (q − zero_point).

    `values` are packed two per byte (u4/i4, low nibble first, as OpenVINO packs them) or one per
    byte (i8), shaped [rows, cols/32, 32 (or 16 packed)]; `scale` and `zero_point` are f32
    [rows, cols/32, 1] (f32 keeps Q4_1's offset exact: as an f16 zero point it is off by 1e-3)."""

    element_type: str  # "u4", "i4" or "i8"
    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    shape: tuple[int, int]

    def take_rows(self, order: np.ndarray) -> "BlockQuantized":
        zero_point = None if self.zero_point is None else self.zero_point[order]
        return BlockQuantized(self.element_type, self.values[order], self.scale[order], zero_point, self.shape)


def _pack_nibbles(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint8) & 0x0F
    return values[..., 0::2] | (values[..., 1::2] << 4)


def _decode_blocks(kind: str, raw: np.ndarray, rows: int, cols: int) -> BlockQuantized:
    blocks = raw.reshape(rows, cols // BLOCK, -1)
    scale = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    if kind == "Q8_0":
        values = blocks[..., 2:].copy().view(np.int8)
        return BlockQuantized("i8", values, scale, None, (rows, cols))
    # Q4: 16 bytes hold weights j (low nibbles) and j + 16 (high nibbles) of the block.
    packed = blocks[..., 4:] if kind == "Q4_1" else blocks[..., 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)
    if kind == "Q4_0":  # w = d · (q − 8)
        return BlockQuantized("i4", _pack_nibbles(q.astype(np.int8) - 8), scale, None, (rows, cols))
    offset = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)  # Q4_1: w = d · q + m
    with np.errstate(divide="ignore", invalid="ignore"):
        zero_point = np.where(scale != 0, -offset / scale, 0).astype(np.float32)
    return BlockQuantized("u4", _pack_nibbles(q), scale, zero_point, (rows, cols))


def _unpermute(rows: int, n_heads: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation (rotary pairs interleaved per head)."""
    return np.arange(rows).reshape(n_heads, rows // n_heads // 2, 2).swapaxes(1, 2).reshape(-1)


@dataclass(frozen=True)
class GGUFTensorRef:
    reader: object
    index: int
    dequantize: bool
    permute_heads: int | None = None

    def load(self):
        import gguf

        tensor = self.reader.tensors[self.index]
        kind = tensor.tensor_type.name
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists the fastest axis first
        keep_blocks = kind in KEPT_BLOCKS and not self.dequantize and len(shape) == 2
        if keep_blocks:
            array = _decode_blocks(kind, np.asarray(tensor.data), *shape)
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
        return array


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


@dataclass
class GGUFCheckpoint:
    """A GGUF file, offering what convert needs from any checkpoint."""

    path: Path
    config: dict
    reader: object
    tensor_refs: dict

    def check_weights(self) -> None:
        pass  # GGUFReader validated the file when it opened it

    def generation_config(self) -> dict:
        return {}  # a GGUF has none; convert fills in the metadata's token ids

    def weights(self, dtype=None, dequantize: bool = False) -> Weights:
        """Blocks kept unless `dequantize`; then compression re-quantizes everything. Otherwise it
        may only touch the tensors of block types that had to be dequantized: float tensors stay."""
        refs = {name: GGUFTensorRef(self.reader, ref.index, dequantize, ref.permute_heads)
                for name, ref in self.tensor_refs.items()}
        dequantized = {name for name, ref in self.tensor_refs.items()
                       if self.reader.tensors[ref.index].tensor_type.name not in KEPT_BLOCKS + FLOATS}
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
            backend, extra = convert_gguf_tokenizer(self.config["model_type"], grouped["tokenizer"])
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
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SourceError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", heads))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    config = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 4096)),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "vocab_size": int(_field(reader, f"{arch}.vocab_size", len(tokens))),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    if arch == "qwen2":
        config["use_sliding_window"] = False

    refs = {}
    for index, tensor in enumerate(reader.tensors):
        name, layer = tensor.name, None
        parts = name.split(".")
        if parts[0] == "blk":
            layer, name = parts[1], ".".join(["blk", "{}", *parts[2:]])
        if name not in NAMES:
            if name == "rope_freqs.weight":
                raise SourceError(f"{path.name} has rope_freqs (llama3 rope scaling), which is not supported yet")
            raise SourceError(f"{path.name} has a tensor this {arch} graph does not know: {tensor.name}")
        permute = None
        if arch == "llama" and name in ("blk.{}.attn_q.weight", "blk.{}.attn_q.bias"):
            permute = heads
        elif arch == "llama" and name in ("blk.{}.attn_k.weight", "blk.{}.attn_k.bias"):
            permute = kv_heads
        refs[NAMES[name].format(layer)] = GGUFTensorRef(reader, index, False, permute)
    return GGUFCheckpoint(path, config, reader, refs)
