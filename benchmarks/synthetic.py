"""Random-weight checkpoints with real models' compute shapes, for measuring at real size with no
download: bf16 safetensors in shards, config.json, and the default model's tokenizer (SmolLM2's,
49152 tokens, ChatML template) so every size shares one tokenizer and prompts stay comparable.

    python benchmarks/synthetic.py SHAPE OUT_DIR                      # SHAPE: one of the names below
    python benchmarks/synthetic.py SHAPE OUT.gguf [--quantize Q4_K_M]  # the same weights as a GGUF
    python benchmarks/synthetic.py SHAPE OUT.gguf --from CHECKPOINT --convert-hf-to-gguf SCRIPT [--quantize Q4_K_M]
                                   [--llama-cpp PYTHON]   # for the shapes llama.cpp's converter writes

Then `ovchat convert OUT_DIR -o MODEL_DIR` and measure MODEL_DIR. Replies are nonsense; timings,
memory and the cost of a precision setting are what they measure.

Each architecture is described once, by a class below: its tensors and their random values, its
config.json, and how llama.cpp's converter writes it (metadata, tensor names, the values it changes).
  Llama   every layer attention (llama, Qwen2.5, Phi-3, … shapes: what they compute is llama's)
  Qwen35  Qwen3.5's text model: Gated DeltaNet layers and gated full attention, three to one
  Lfm2    LFM2: gated short-convolution layers and attention layers
  Gemma4  Gemma 4 E2B / E4B's text model: per-layer embeddings, shared-KV layers, two head sizes
  Qwen3Moe       Qwen3-MoE: Qwen3's attention, softmax-routed experts in every layer
  Lfm2Moe        LFM2-MoE: LFM2's layers, dense MLPs first, then sigmoid-routed experts
  GraniteHybrid  Granite 4.0 -H: Mamba-2 and NoPE attention layers, routed experts beside a shared MLP
Projections are N(0, 0.02) (routers too, so a token's experts are as good as random: a decoded token
reads k different experts per layer, as a trained model's mostly do); norms are the identity (1; 0 for
Qwen3.5's norms, which scale by 1 + w, but 1 for its gated norm); Qwen3.5's and Mamba-2's A_log =
log U(1, 16), dt_bias 1 (Mamba-2's D 1, its convolution bias 0); convolution taps N(0, 0.02).

A .gguf is written tensor by tensor (a 4 B model never sits in memory whole) as llama.cpp's
convert_hf_to_gguf.py --outtype f16 writes the architecture: projections and embeddings F16, 1-D
tensors and convolution taps F32 (the taps squeezed to [C, K]), and the values changed as it changes
them (llama's q/k rows interleaved per head; Qwen3.5's (1 + w) norms stored as 1 + w, A = −exp(A_log),
the DeltaNet value heads in llama.cpp's tiled order). With --quantize it is then quantized by
llama.cpp itself (llama-cpp-python's llama_model_quantize) into OUT.TYPE.gguf: the file people
download, for comparing import and runtimes on one set of weights. The mixtures of experts and Mamba-2
hybrids are left to llama.cpp's own convert_hf_to_gguf.py (`--from CHECKPOINT --convert-hf-to-gguf
SCRIPT`; it stacks the per-expert tensors, splits Granite's fused ones, reorders Mamba-2's), run by
this interpreter (it needs torch); quantizing needs llama-cpp-python, in this interpreter or
`--llama-cpp PYTHON`'s.

Vocabularies larger than the tokenizer. The hybrids keep their real vocabulary sizes (their tied
embedding is a large share of the bytes read per token) under SmolLM2's 49152 tokens, and a random
model picks the ids past the tokenizer most of the time (80 % of Qwen3.5's). OpenVINO GenAI copes:
its detokenizer drops unknown ids. llama.cpp does not: it refuses a file whose token list is shorter
than token_embd ("tensor 'token_embd.weight' has wrong shape"). So the GGUF's token list is padded
to the vocabulary with "[PAD<id>]" entries, as llama.cpp's converter pads a vocabulary it finds
shorter than the model's (Qwen's is). That converter marks them UNUSED, which print nothing: a random
reply would be mostly silent in llama.cpp's stream, and bench.py times llama.cpp's chat turns by their
streamed text. Here they are NORMAL tokens, and the checkpoint's tokenizer gets the same entries in
its BPE vocabulary (no merge makes them, so text tokenizes as before), so both runtimes print the
same text for the same ids and stream a piece per token, as a trained model's replies do.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB = 49152  # SmolLM2's tokenizer
SHARD_BYTES = 2 << 30
BF16 = ml_dtypes.bfloat16


def normal(dims, rng: np.random.Generator) -> np.ndarray:
    array = rng.standard_normal(dims, np.float32)
    array *= 0.02  # in place: the 4 B shapes' embedding is 2.5 GB in f32
    return array.astype(BF16)


@dataclass(frozen=True)
class Llama:
    """Every layer attention then a SwiGLU MLP; lm_head untied. llama.cpp's converter interleaves the
    rotary halves of each head's q and k rows. The hybrids below reuse its parts."""

    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = VOCAB

    gguf_arch = "llama"
    # HF name → GGUF name; a layer's tensors by their names after "model.layers.{i}." / "blk.{i}.".
    GGUF_NAMES = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight", "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }

    # The layer's two norms, its MLP's projections and the final norm, by their HF names; the hybrids rename them.
    NORMS = ("input_layernorm", "post_attention_layernorm")
    MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    FINAL_NORM = "model.norm.weight"
    TIED = False

    def layer_types(self) -> list[str]:
        return ["full_attention"] * self.layers

    def tensors(self):
        """(HF name, shape), in checkpoint order: every layer its norms, its token mixer (mixer()), its MLP."""
        yield "model.embed_tokens.weight", (self.vocab, self.hidden)
        for i, kind in enumerate(self.layer_types()):
            p = f"model.layers.{i}."
            for norm in self.NORMS:
                yield p + f"{norm}.weight", (self.hidden,)
            yield from self.mixer(p, kind)
            yield from self.mlp(p)
        yield self.FINAL_NORM, (self.hidden,)
        if not self.TIED:
            yield "lm_head.weight", (self.vocab, self.hidden)

    def mixer(self, p: str, kind: str):
        yield from self.attention(p, self.heads * self.head_dim)

    def attention(self, p: str, q_rows: int, out: str = "o_proj"):
        yield p + "self_attn.q_proj.weight", (q_rows, self.hidden)
        yield p + "self_attn.k_proj.weight", (self.kv_heads * self.head_dim, self.hidden)
        yield p + "self_attn.v_proj.weight", (self.kv_heads * self.head_dim, self.hidden)
        yield p + f"self_attn.{out}.weight", (self.hidden, self.heads * self.head_dim)

    def mlp(self, p: str):
        gate, up, down = self.MLP
        yield p + f"{gate}.weight", (self.ffn, self.hidden)
        yield p + f"{up}.weight", (self.ffn, self.hidden)
        yield p + f"{down}.weight", (self.hidden, self.ffn)

    def initial(self, name: str, dims: tuple, rng: np.random.Generator) -> np.ndarray:
        """The random bf16 value of tensor `name`: norms the identity, the rest N(0, 0.02)."""
        return np.ones(dims, BF16) if len(dims) == 1 else normal(dims, rng)

    def config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "intermediate_size": self.ffn, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096, "rope_theta": 10000.0, "vocab_size": self.vocab,
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
        }

    def gguf_metadata(self, writer) -> None:
        writer.add_block_count(self.layers)
        writer.add_context_length(4096)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.heads)
        writer.add_head_count_kv(self.kv_heads)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_freq_base(10000.0)
        writer.add_rope_dimension_count(self.head_dim)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_vocab_size(self.vocab)

    def gguf_name(self, name: str) -> str:
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            return f"blk.{layer}.{self.GGUF_NAMES[rest]}"
        return self.GGUF_NAMES[name]

    def gguf_extra_tensors(self) -> dict:
        """GGUF tensors llama.cpp's converter adds that the checkpoint has not (name → f32 array)."""
        return {}

    def to_gguf(self, name: str, array: np.ndarray) -> np.ndarray:
        """The f32 values llama.cpp's converter stores for HF tensor `name`."""
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # rotary halves interleaved per head
            n = self.heads if "q_proj" in name else self.kv_heads
            array = array.reshape(n, 2, self.head_dim // 2, self.hidden).swapaxes(1, 2).reshape(array.shape)
        return array


@dataclass(frozen=True)
class Qwen35(Llama):
    """Qwen3.5's text model (Qwen3_5ForCausalLM, llama.cpp's qwen35): layer i is full attention when
    (i + 1) % 4 == 0, Gated DeltaNet otherwise. Attention layers are Qwen3's with an output gate (q_proj
    twice as tall: per head, q then the gate) and rotary over a quarter of each head; every RMSNorm but
    the DeltaNet's gated one scales by 1 + w; embeddings tied. llama.cpp's converter stores those norms
    as 1 + w, A = −exp(A_log) as `ssm_a`, and the DeltaNet's value heads tiled (value head j reads key
    head j mod Hk) where Qwen groups them (j // (Hv / Hk))."""

    linear_key_heads: int = 16
    linear_value_heads: int = 32
    linear_key_dim: int = 128
    linear_value_dim: int = 128
    conv_kernel: int = 4
    rope_sections: tuple = (11, 11, 10)  # multimodal rope's split of the rotated pairs (text reads them alike)
    context: int = 262144

    gguf_arch = "qwen35"
    TIED = True
    interval = 4  # full_attention_interval: the only layer pattern llama.cpp's qwen35 knows
    partial_rotary = 0.25
    rope_theta = 10_000_000.0
    GGUF_NAMES = {
        **{k: v for k, v in Llama.GGUF_NAMES.items() if k != "post_attention_layernorm.weight"},
        "post_attention_layernorm.weight": "post_attention_norm.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "linear_attn.in_proj_qkv.weight": "attn_qkv.weight", "linear_attn.in_proj_z.weight": "attn_gate.weight",
        "linear_attn.in_proj_b.weight": "ssm_beta.weight", "linear_attn.in_proj_a.weight": "ssm_alpha.weight",
        "linear_attn.conv1d.weight": "ssm_conv1d.weight", "linear_attn.dt_bias": "ssm_dt.bias",
        "linear_attn.A_log": "ssm_a", "linear_attn.norm.weight": "ssm_norm.weight",
        "linear_attn.out_proj.weight": "ssm_out.weight",
    }
    # DeltaNet tensors holding the value heads → (their axis, whether q and k's channels come first)
    VALUE_HEADS = {"in_proj_qkv.weight": (0, True), "conv1d.weight": (0, True), "in_proj_z.weight": (0, False),
                   "in_proj_b.weight": (0, False), "in_proj_a.weight": (0, False), "dt_bias": (0, False),
                   "A_log": (0, False), "out_proj.weight": (1, False)}

    def __post_init__(self):
        rotated_pairs = int(self.head_dim * self.partial_rotary) // 2
        assert sum(self.rope_sections) == rotated_pairs, "the rope sections cover the rotated pairs"
        assert self.linear_key_dim == self.linear_value_dim, "llama.cpp's qwen35 assumes equal key and value head dims"

    def layer_types(self) -> list[str]:
        return ["full_attention" if (i + 1) % self.interval == 0 else "linear_attention" for i in range(self.layers)]

    def mixer(self, p: str, kind: str):
        if kind == "full_attention":
            yield from self.attention(p, 2 * self.heads * self.head_dim)  # q and its gate
            yield p + "self_attn.q_norm.weight", (self.head_dim,)
            yield p + "self_attn.k_norm.weight", (self.head_dim,)
            return
        key, value = self.linear_key_heads * self.linear_key_dim, self.linear_value_heads * self.linear_value_dim
        p += "linear_attn."
        yield p + "in_proj_qkv.weight", (2 * key + value, self.hidden)
        yield p + "in_proj_z.weight", (value, self.hidden)
        yield p + "in_proj_b.weight", (self.linear_value_heads, self.hidden)
        yield p + "in_proj_a.weight", (self.linear_value_heads, self.hidden)
        yield p + "conv1d.weight", (2 * key + value, 1, self.conv_kernel)
        yield p + "dt_bias", (self.linear_value_heads,)
        yield p + "A_log", (self.linear_value_heads,)
        yield p + "norm.weight", (self.linear_value_dim,)
        yield p + "out_proj.weight", (self.hidden, value)

    def initial(self, name, dims, rng):
        if name.endswith(".A_log"):  # decay rates A = exp(A_log) in [1, 16], as transformers initialises them
            return np.log(rng.uniform(1, 16, dims)).astype(BF16)
        if name.endswith((".dt_bias", ".linear_attn.norm.weight")):
            return np.ones(dims, BF16)
        if len(dims) == 1:  # the (1 + w) norms
            return np.zeros(dims, BF16)
        return normal(dims, rng)

    def config(self) -> dict:
        return {
            "architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "layer_types": self.layer_types(), "intermediate_size": self.ffn,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "linear_num_key_heads": self.linear_key_heads, "linear_num_value_heads": self.linear_value_heads,
            "linear_key_head_dim": self.linear_key_dim, "linear_value_head_dim": self.linear_value_dim,
            "linear_conv_kernel_dim": self.conv_kernel, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "max_position_embeddings": self.context, "attention_bias": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta,
                                "partial_rotary_factor": self.partial_rotary, "mrope_section": list(self.rope_sections),
                                "mrope_interleaved": True},
            "vocab_size": self.vocab, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        }

    def gguf_metadata(self, writer) -> None:
        writer.add_block_count(self.layers)
        writer.add_context_length(self.context)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.heads)
        writer.add_head_count_kv(self.kv_heads)
        writer.add_rope_dimension_sections([*self.rope_sections, 0])
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_ssm_conv_kernel(self.conv_kernel)
        writer.add_ssm_state_size(self.linear_key_dim)
        writer.add_ssm_group_count(self.linear_key_heads)
        writer.add_ssm_time_step_rank(self.linear_value_heads)
        writer.add_ssm_inner_size(self.linear_value_dim * self.linear_value_heads)
        writer.add_full_attention_interval(self.interval)
        writer.add_rope_dimension_count(int(self.head_dim * self.partial_rotary))

    def to_gguf(self, name, array):
        if name.endswith("norm.weight") and ".linear_attn." not in name:
            array = array + 1
        if name.endswith(".A_log"):
            array = -np.exp(array)
        if ".linear_attn." in name and (at := self.VALUE_HEADS.get(name.split(".linear_attn.")[1])):
            axis, after_qk = at
            start = 2 * self.linear_key_heads * self.linear_key_dim if after_qk else 0
            array = regroup_value_heads(array, axis, start, self.linear_key_heads,
                                        self.linear_value_heads // self.linear_key_heads)
        return array


def regroup_value_heads(array: np.ndarray, axis: int, start: int, outer: int, inner: int) -> np.ndarray:
    """The value heads on `axis` (from index `start`) as [outer, inner] → [inner, outer]: Qwen's grouping by key
    head [Hk, Hv/Hk] into llama.cpp's tiling [Hv/Hk, Hk] (outer = Hk), or back (outer = Hv/Hk)."""
    if outer == 1 or inner == 1:
        return array
    array = np.moveaxis(array, axis, 0)
    heads = array[start:]
    heads = heads.reshape(outer, inner, -1, *heads.shape[1:]).swapaxes(0, 1).reshape(heads.shape)
    return np.moveaxis(np.concatenate([array[:start], heads]), 0, axis)


@dataclass(frozen=True)
class Lfm2(Llama):
    """LFM2 (Lfm2ForCausalLM, llama.cpp's lfm2): attention at `attention_layers` (llama's, with an
    RMSNorm over each head of q and k), gated short convolutions over `conv_cache` steps elsewhere; a
    SwiGLU MLP `ffn` wide, which config.json states as Liquid's intermediate_size (its ⅔, rounded up
    to 256); the final norm named embedding_norm; embeddings tied. llama.cpp's converter keeps every
    value, writes the MLP's real width and per layer KV head counts, 0 for a convolution layer."""

    attention_layers: tuple = ()
    conv_cache: int = 3
    context: int = 128000

    gguf_arch = "lfm2"
    NORMS = ("operator_norm", "ffn_norm")
    MLP = ("feed_forward.w1", "feed_forward.w3", "feed_forward.w2")
    FINAL_NORM = "model.embedding_norm.weight"
    TIED = True
    rope_theta = 1_000_000.0
    GGUF_NAMES = {  # llama's, and LFM2's own names
        **Llama.GGUF_NAMES, "model.embedding_norm.weight": "token_embd_norm.weight",
        "operator_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
        "self_attn.out_proj.weight": "attn_output.weight",
        "self_attn.q_layernorm.weight": "attn_q_norm.weight", "self_attn.k_layernorm.weight": "attn_k_norm.weight",
        "conv.in_proj.weight": "shortconv.in_proj.weight", "conv.conv.weight": "shortconv.conv.weight",
        "conv.out_proj.weight": "shortconv.out_proj.weight", "feed_forward.w1.weight": "ffn_gate.weight",
        "feed_forward.w3.weight": "ffn_up.weight", "feed_forward.w2.weight": "ffn_down.weight",
    }

    def __post_init__(self):
        assert self.head_dim * self.heads == self.hidden, "LFM2's head dim is hidden / heads"
        # Liquid's rule takes ⅔ of config.json's intermediate_size (× 1.0), rounded up to 256
        assert self.ffn % 256 == 0 and int(2 * (self.ffn * 3 // 2) / 3) == self.ffn, "a width config.json can state"

    def layer_types(self) -> list[str]:
        return ["full_attention" if i in self.attention_layers else "conv" for i in range(self.layers)]

    def mixer(self, p: str, kind: str):
        if kind == "full_attention":
            yield from self.attention(p, self.heads * self.head_dim, out="out_proj")
            yield p + "self_attn.q_layernorm.weight", (self.head_dim,)
            yield p + "self_attn.k_layernorm.weight", (self.head_dim,)
            return
        yield p + "conv.in_proj.weight", (3 * self.hidden, self.hidden)  # B, C, x̃
        yield p + "conv.conv.weight", (self.hidden, 1, self.conv_cache)
        yield p + "conv.out_proj.weight", (self.hidden, self.hidden)

    def config(self) -> dict:
        return {
            "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "layer_types": self.layer_types(),
            "intermediate_size": self.ffn * 3 // 2, "block_auto_adjust_ff_dim": True, "block_multiple_of": 256,
            "block_ffn_dim_multiplier": 1.0, "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "conv_L_cache": self.conv_cache, "conv_bias": False, "norm_eps": 1e-5,
            "max_position_embeddings": self.context,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "vocab_size": self.vocab, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 2, "torch_dtype": "bfloat16",
        }

    def gguf_metadata(self, writer) -> None:
        writer.add_block_count(self.layers)
        writer.add_context_length(self.context)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.heads)
        writer.add_head_count_kv([self.kv_heads if t == "full_attention" else 0 for t in self.layer_types()])
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(self.vocab)
        writer.add_shortconv_l_cache(self.conv_cache)

    def to_gguf(self, name, array):
        return array  # q and k rows too: llama.cpp rotates LFM2's heads in halves, as transformers does


@dataclass(frozen=True)
class Gemma4(Llama):
    """Gemma 4's text model (Gemma4ForCausalLM, llama.cpp's gemma4) as E2B / E4B have it: every
    `full_every`-th layer full attention with heads `global_head_dim` wide and proportional rope over a
    quarter of each head, the others sliding with `head_dim`; the last `shared_layers` layers take the
    keys and values of the last earlier layer of their kind (no k/v projections of their own) and have
    MLPs twice as wide; per-layer embeddings `per_layer` wide for every layer (a second table, read a
    row per token, and a projection of the embedding), each layer gating, projecting and norming its
    slice; layer scalars; norms scale by w; embeddings tied; logits soft-capped at 30. llama.cpp's
    converter keeps every value and adds rope_freqs (1 for the rotated pairs, 1e30 for the others)."""

    global_head_dim: int = 512
    per_layer: int = 256
    shared_layers: int = 20
    full_every: int = 5
    sliding_window: int = 512
    context: int = 131072

    gguf_arch = "gemma4"
    NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
             "post_per_layer_input_norm")
    TIED = True
    GGUF_NAMES = {
        **{k: v for k, v in Llama.GGUF_NAMES.items() if k != "post_attention_layernorm.weight"},
        "post_attention_layernorm.weight": "post_attention_norm.weight", "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight", "post_per_layer_input_norm.weight": "post_norm.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "per_layer_input_gate.weight": "inp_gate.weight", "per_layer_projection.weight": "proj.weight",
        "layer_scalar": "layer_output_scale.weight", "model.embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
        "model.per_layer_model_projection.weight": "per_layer_model_proj.weight",
        "model.per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
    }

    def layer_types(self) -> list[str]:  # the last layer full, as Gemma 4 always has it
        return ["full_attention" if (i + 1) % self.full_every == 0 or i == self.layers - 1 else "sliding_attention"
                for i in range(self.layers)]

    def _shared(self, p: str) -> bool:
        return int(p.split(".")[2]) >= self.layers - self.shared_layers

    def tensors(self):
        yield from super().tensors()
        yield "model.embed_tokens_per_layer.weight", (self.vocab, self.layers * self.per_layer)
        yield "model.per_layer_model_projection.weight", (self.layers * self.per_layer, self.hidden)
        yield "model.per_layer_projection_norm.weight", (self.per_layer,)

    def mixer(self, p: str, kind: str):
        d = self.global_head_dim if kind == "full_attention" else self.head_dim
        yield p + "self_attn.q_proj.weight", (self.heads * d, self.hidden)
        yield p + "self_attn.q_norm.weight", (d,)
        if not self._shared(p):
            yield p + "self_attn.k_proj.weight", (self.kv_heads * d, self.hidden)
            yield p + "self_attn.v_proj.weight", (self.kv_heads * d, self.hidden)
            yield p + "self_attn.k_norm.weight", (d,)
        yield p + "self_attn.o_proj.weight", (self.hidden, self.heads * d)
        yield p + "per_layer_input_gate.weight", (self.per_layer, self.hidden)
        yield p + "per_layer_projection.weight", (self.hidden, self.per_layer)
        yield p + "layer_scalar", (1,)

    def mlp(self, p: str):
        width = self.ffn * (2 if self._shared(p) else 1)
        yield p + "mlp.gate_proj.weight", (width, self.hidden)
        yield p + "mlp.up_proj.weight", (width, self.hidden)
        yield p + "mlp.down_proj.weight", (self.hidden, width)

    def config(self) -> dict:
        return {
            "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "layer_types": self.layer_types(), "intermediate_size": self.ffn,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "global_head_dim": self.global_head_dim, "hidden_size_per_layer_input": self.per_layer,
            "vocab_size_per_layer_input": self.vocab, "num_kv_shared_layers": self.shared_layers,
            "use_double_wide_mlp": True, "sliding_window": self.sliding_window, "final_logit_softcapping": 30.0,
            "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "max_position_embeddings": self.context,
            "rope_parameters": {
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
            "vocab_size": self.vocab, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0, "torch_dtype": "bfloat16",
        }

    def gguf_metadata(self, writer) -> None:
        writer.add_block_count(self.layers)
        writer.add_context_length(self.context)
        writer.add_embedding_length(self.hidden)
        first_shared = self.layers - self.shared_layers
        writer.add_feed_forward_length([self.ffn * (2 if i >= first_shared else 1) for i in range(self.layers)])
        writer.add_head_count(self.heads)
        writer.add_head_count_kv(self.kv_heads)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_key_length(self.global_head_dim)
        writer.add_value_length(self.global_head_dim)
        writer.add_key_length_swa(self.head_dim)
        writer.add_value_length_swa(self.head_dim)
        writer.add_rope_freq_base(1e6)
        writer.add_rope_freq_base_swa(1e4)
        writer.add_rope_dimension_count(self.global_head_dim)
        writer.add_rope_dimension_count_swa(self.head_dim)
        writer.add_sliding_window(self.sliding_window)
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in self.layer_types()])
        writer.add_shared_kv_layers(self.shared_layers)
        writer.add_embedding_length_per_layer_input(self.per_layer)
        writer.add_final_logit_softcapping(30.0)
        writer.add_vocab_size(self.vocab)

    def gguf_extra_tensors(self) -> dict:
        rotated = self.global_head_dim // 8  # a quarter of the head's pairs
        return {"rope_freqs.weight": np.array([1.0] * rotated + [1e30] * (self.global_head_dim // 2 - rotated), np.float32)}

    def gguf_name(self, name: str) -> str:
        return self.GGUF_NAMES[name] if name in self.GGUF_NAMES else super().gguf_name(name)

    def to_gguf(self, name, array):
        return array  # llama.cpp rotates Gemma's heads in halves, as transformers does


@dataclass(frozen=True)
class Qwen3Moe(Llama):
    """Qwen3-MoE (Qwen3MoeForCausalLM, llama.cpp's qwen3moe): Qwen3's attention (an RMSNorm over each
    head of q and k) and, in every layer, `experts` SwiGLU experts `expert_ffn` wide of which a softmax
    router (`mlp.gate`) picks `experts_per_token`, renormalised; lm_head untied. Stored as the hub
    stores it, one tensor per expert and projection. `ffn` is config.json's intermediate_size, which
    no layer uses (no mlp_only_layers). Its GGUF is llama.cpp's own convert_hf_to_gguf.py's
    (`llama_cpp_gguf`): that converter stacks the experts."""

    experts: int = 128
    experts_per_token: int = 8
    expert_ffn: int = 768
    context: int = 40960

    gguf_arch = None  # written by llama.cpp's converter, not by write_gguf
    rope_theta = 1_000_000.0

    def mixer(self, p: str, kind: str):
        yield from self.attention(p, self.heads * self.head_dim)
        yield p + "self_attn.q_norm.weight", (self.head_dim,)
        yield p + "self_attn.k_norm.weight", (self.head_dim,)

    def mlp(self, p: str):
        yield p + "mlp.gate.weight", (self.experts, self.hidden)
        for e in range(self.experts):
            yield from self.expert(f"{p}mlp.experts.{e}.", ("gate_proj", "up_proj", "down_proj"))

    def expert(self, p: str, names: tuple[str, str, str]):
        """One SwiGLU expert's gate, up and down projections under `names`."""
        gate, up, down = names
        yield p + f"{gate}.weight", (self.expert_ffn, self.hidden)
        yield p + f"{up}.weight", (self.expert_ffn, self.hidden)
        yield p + f"{down}.weight", (self.hidden, self.expert_ffn)

    def config(self) -> dict:
        return {
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "intermediate_size": self.ffn, "moe_intermediate_size": self.expert_ffn,
            "num_experts": self.experts, "num_experts_per_tok": self.experts_per_token, "norm_topk_prob": True,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim, "hidden_act": "silu",
            "rms_norm_eps": 1e-6, "max_position_embeddings": self.context, "rope_theta": self.rope_theta,
            "attention_bias": False, "vocab_size": self.vocab, "tie_word_embeddings": False, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "bfloat16",
        }


@dataclass(frozen=True)
class Lfm2Moe(Lfm2):
    """LFM2-MoE (Lfm2MoeForCausalLM, llama.cpp's lfm2moe): LFM2's layers, the first `dense_layers` with a
    dense SwiGLU MLP `ffn` wide (config.json's intermediate_size as it is: no ⅔ rule here), the others with
    `experts` SwiGLU experts `expert_ffn` wide of which a sigmoid router with a load-balancing bias picks
    `experts_per_token`, renormalised. One tensor per expert and projection, as the hub stores them; the
    expert bias 0. Its GGUF is llama.cpp's converter's."""

    experts: int = 32
    experts_per_token: int = 4
    expert_ffn: int = 1792
    dense_layers: int = 2

    gguf_arch = None  # written by llama.cpp's converter, not by write_gguf

    def __post_init__(self):
        assert self.head_dim * self.heads == self.hidden, "LFM2's head dim is hidden / heads"

    def mlp(self, p: str):
        if int(p.split(".")[2]) < self.dense_layers:
            yield from super().mlp(p)
            return
        yield p + "feed_forward.gate.weight", (self.experts, self.hidden)
        yield p + "feed_forward.expert_bias", (self.experts,)
        for e in range(self.experts):
            yield from Qwen3Moe.expert(self, f"{p}feed_forward.experts.{e}.", ("w1", "w3", "w2"))

    def initial(self, name, dims, rng):
        if name.endswith(".expert_bias"):
            return np.zeros(dims, BF16)
        return super().initial(name, dims, rng)

    def config(self) -> dict:
        return {
            "architectures": ["Lfm2MoeForCausalLM"], "model_type": "lfm2_moe", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "layer_types": self.layer_types(), "intermediate_size": self.ffn,
            "moe_intermediate_size": self.expert_ffn, "num_dense_layers": self.dense_layers,
            "num_experts": self.experts, "num_experts_per_tok": self.experts_per_token, "norm_topk_prob": True,
            "use_expert_bias": True, "routed_scaling_factor": 1.0, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "conv_L_cache": self.conv_cache, "conv_bias": False,
            "norm_eps": 1e-5, "max_position_embeddings": self.context,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "vocab_size": self.vocab, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0, "torch_dtype": "bfloat16",
        }


@dataclass(frozen=True)
class GraniteHybrid(Llama):
    """Granite 4.0 -H with experts (GraniteMoeHybridForCausalLM, llama.cpp's granitehybrid): Mamba-2 layers
    and, at `attention_layers`, attention without rope (NoPE); in every layer `experts` SwiGLU experts
    `ffn` wide (config.json's intermediate_size), gate and up fused per expert as the hub stores them
    (`input_linear` [E, 2·ffn, H]), of which a softmax over the top `experts_per_token` router logits picks,
    beside a shared SwiGLU MLP `shared_ffn` wide (fused `input_linear` too); Granite's multipliers;
    embeddings tied. The Mamba-2 mixer: in_proj to the gate z, x, B, C (`groups` groups of `state`) and one
    dt per head, a causal convolution of `conv_kernel` taps (with bias) over x, B, C, `mamba_heads` heads
    of `mamba_head_dim`, a gated RMSNorm, out_proj. A = exp(A_log) in U(1, 16), D and dt_bias 1 (as
    transformers initialises them), the convolution's bias 0. Its GGUF is llama.cpp's converter's."""

    attention_layers: tuple = ()
    experts: int = 64
    experts_per_token: int = 6
    shared_ffn: int = 1024
    mamba_heads: int = 48
    mamba_head_dim: int = 64
    state: int = 128
    groups: int = 1
    conv_kernel: int = 4
    context: int = 131072

    gguf_arch = None  # written by llama.cpp's converter, not by write_gguf
    TIED = True

    def layer_types(self) -> list[str]:
        return ["attention" if i in self.attention_layers else "mamba" for i in range(self.layers)]

    def mixer(self, p: str, kind: str):
        if kind == "attention":
            yield from self.attention(p, self.heads * self.head_dim)
            return
        inner, conv = self.mamba_heads * self.mamba_head_dim, self.mamba_heads * self.mamba_head_dim + 2 * self.groups * self.state
        p += "mamba."
        yield p + "in_proj.weight", (inner + conv + self.mamba_heads, self.hidden)  # z, then x B C, then dt
        yield p + "conv1d.weight", (conv, 1, self.conv_kernel)
        yield p + "conv1d.bias", (conv,)
        yield p + "dt_bias", (self.mamba_heads,)
        yield p + "A_log", (self.mamba_heads,)
        yield p + "D", (self.mamba_heads,)
        yield p + "norm.weight", (inner,)
        yield p + "out_proj.weight", (self.hidden, inner)

    def mlp(self, p: str):
        yield p + "block_sparse_moe.router.layer.weight", (self.experts, self.hidden)
        yield p + "block_sparse_moe.input_linear.weight", (self.experts, 2 * self.ffn, self.hidden)
        yield p + "block_sparse_moe.output_linear.weight", (self.experts, self.hidden, self.ffn)
        yield p + "shared_mlp.input_linear.weight", (2 * self.shared_ffn, self.hidden)
        yield p + "shared_mlp.output_linear.weight", (self.hidden, self.shared_ffn)

    def initial(self, name, dims, rng):
        if name.endswith(".A_log"):
            return np.log(rng.uniform(1, 16, dims)).astype(BF16)
        if name.endswith(".conv1d.bias"):
            return np.zeros(dims, BF16)
        if name.endswith(".conv1d.weight") or len(dims) > 1:
            return normal(dims, rng)
        return np.ones(dims, BF16)  # norms, D, dt_bias

    def config(self) -> dict:
        return {
            "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "hidden_size": self.hidden,
            "num_hidden_layers": self.layers, "layer_types": self.layer_types(), "intermediate_size": self.ffn,
            "shared_intermediate_size": self.shared_ffn, "num_local_experts": self.experts,
            "num_experts_per_tok": self.experts_per_token, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "attention_bias": False, "hidden_act": "silu",
            "position_embedding_type": "nope", "rope_theta": 10000.0, "max_position_embeddings": self.context,
            "mamba_n_heads": self.mamba_heads, "mamba_d_head": self.mamba_head_dim, "mamba_d_state": self.state,
            "mamba_n_groups": self.groups, "mamba_d_conv": self.conv_kernel, "mamba_expand": 2,
            "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False,
            "embedding_multiplier": 12.0, "attention_multiplier": 0.0078125, "residual_multiplier": 0.22,
            "logits_scaling": 6.0, "rms_norm_eps": 1e-5, "normalization_function": "rmsnorm",
            "vocab_size": self.vocab, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
            "pad_token_id": 0, "torch_dtype": "bfloat16",
        }


# name → the architecture at the compute shapes of the model the name says:
# (hidden, layers, FFN, heads, KV heads, head dim, …)
SHAPES = {
    "smollm2-360m": Llama(960, 32, 2560, 15, 5, 64),
    "qwen2.5-0.5b": Llama(896, 24, 4864, 14, 2, 64),
    "llama-3.2-1b": Llama(2048, 16, 8192, 32, 8, 64),
    "smollm2-1.7b": Llama(2048, 24, 8192, 32, 32, 64),
    "qwen2.5-3b": Llama(2048, 36, 11008, 16, 2, 128),
    "llama-3.2-3b": Llama(3072, 28, 8192, 24, 8, 128),
    "phi-3-mini": Llama(3072, 32, 8192, 32, 32, 96),
    "qwen3-4b": Llama(2560, 36, 9728, 32, 8, 128),  # heads × head dim (4096) wider than hidden, as Qwen3's
    "qwen3.5-0.8b": Qwen35(1024, 24, 3584, 8, 2, 256, vocab=248320, linear_key_heads=16, linear_value_heads=16),
    "qwen3.5-4b": Qwen35(2560, 32, 9216, 16, 4, 256, vocab=248320, linear_key_heads=16, linear_value_heads=32),
    "lfm2-1.2b": Lfm2(2048, 16, 8192, 32, 8, 64, vocab=65536, attention_layers=(2, 5, 8, 10, 12, 14)),
    "gemma-4-e2b": Gemma4(1536, 35, 6144, 8, 1, 256, vocab=262144),
    # Qwen3-30B-A3B with 12 of its 48 layers (every layer alike), all else as published
    "qwen3-30b-a3b-12l": Qwen3Moe(2048, 12, 6144, 32, 4, 128, vocab=151936),
    "lfm2-8b-a1b": Lfm2Moe(2048, 24, 7168, 32, 8, 64, vocab=65536, attention_layers=(2, 6, 10, 14, 18, 21)),
    "granite-4.0-h-tiny": GraniteHybrid(1536, 40, 512, 12, 4, 128, vocab=100352, attention_layers=(5, 15, 25, 35)),
    # for the tests; the hybrids' vocabularies outgrow the tokenizer, as the real ones do
    "tiny": Llama(64, 2, 128, 4, 2, 32),
    "tiny-qwen3.5": Qwen35(64, 4, 128, 4, 2, 32, vocab=VOCAB + 64, linear_key_heads=2, linear_value_heads=4,
                           linear_key_dim=16, linear_value_dim=16, rope_sections=(4, 0, 0), context=4096),
    "tiny-lfm2": Lfm2(64, 3, 256, 4, 2, 16, vocab=VOCAB + 64, attention_layers=(1,), context=4096),
    "tiny-qwen3-moe": Qwen3Moe(64, 2, 128, 4, 2, 32, vocab=VOCAB + 64, experts=8, experts_per_token=2, expert_ffn=32,
                               context=4096),
    "tiny-lfm2-moe": Lfm2Moe(64, 4, 256, 4, 2, 16, vocab=VOCAB + 64, attention_layers=(2,), experts=8, experts_per_token=2,
                             expert_ffn=32, context=4096),
    "tiny-granite-h": GraniteHybrid(64, 3, 32, 4, 2, 16, vocab=VOCAB + 64, attention_layers=(1,), experts=8, experts_per_token=2,
                                    shared_ffn=64, mamba_heads=8, mamba_head_dim=16, state=16, context=4096),
    "tiny-gemma4": Gemma4(64, 5, 128, 4, 2, 32, vocab=VOCAB + 64, global_head_dim=64, per_layer=32, shared_layers=2,
                          full_every=3, sliding_window=16, context=4096),
}


def weights(shape: str):
    """(name, bf16 array) in checkpoint order; the same values for every writer."""
    spec, rng = SHAPES[shape], np.random.default_rng(0)
    for name, dims in spec.tensors():
        yield name, spec.initial(name, dims, rng)


def pad_tokens(count: int, vocab: int) -> list[str]:
    """The tokens given ids `count` (the tokenizer's size) to `vocab` − 1: see the module's docstring."""
    return [f"[PAD{i}]" for i in range(count, vocab)]


def write_checkpoint(shape: str, out: Path) -> Path:
    from convert.gguf_source import read_gguf
    from ovgenai_chat.engine import default_gguf

    spec = SHAPES[shape]
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
    total = sum(int(np.prod(dims)) for _, dims in spec.tensors())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps(spec.config(), indent=2))
    read_gguf(default_gguf()).hf_tokenizer().save_pretrained(out)
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    ids = tokenizer["model"]["vocab"]  # BPE's vocabulary, token → id
    if len(ids) < spec.vocab:
        ids.update({token: i for i, token in enumerate(pad_tokens(len(ids), spec.vocab), start=len(ids))})
        (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    print(f"{out}: {shape} shapes, {total / 1e9:.2f} B parameters, {len(shards)} shards")
    return out


def gguf_layout(dims: tuple) -> tuple[tuple, type]:
    """A tensor's shape and type in the GGUF, as llama.cpp's converter forces them: 1-D tensors and
    convolution taps in F32, the taps [C, 1, K] squeezed to [C, K]; the rest F16."""
    if len(dims) == 3:
        return (dims[0], dims[2]), np.float32
    return dims, np.float32 if len(dims) == 1 else np.float16


def write_gguf(shape: str, out: Path, quantize: str | None) -> Path:
    """An F16 GGUF of `shape`'s weights, written tensor by tensor, with the default model's tokenizer
    (its token list padded to the vocabulary); then llama.cpp's quantization of it, if asked."""
    import gguf

    from ovgenai_chat.engine import default_gguf

    spec = SHAPES[shape]
    writer = gguf.GGUFWriter(out, spec.gguf_arch)
    spec.gguf_metadata(writer)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    source = gguf.GGUFReader(default_gguf())
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            value = field.contents()
            value_type = field.types[-1] if field.types else None
            if key == "tokenizer.ggml.tokens":
                value = value + pad_tokens(len(value), spec.vocab)
            elif key == "tokenizer.ggml.token_type":
                value = value + [int(gguf.TokenType.NORMAL)] * (spec.vocab - len(value))
            if isinstance(value, list):
                writer.add_array(key, value)
            elif isinstance(value, str):
                writer.add_string(key, value)
            elif value_type == gguf.GGUFValueType.BOOL:
                writer.add_bool(key, value)
            else:
                writer.add_uint32(key, value)
    extra = spec.gguf_extra_tensors()
    for name, dims in spec.tensors():
        dims, dtype = gguf_layout(dims)
        dtype = np.dtype(dtype)
        writer.add_tensor_info(spec.gguf_name(name), dims, dtype, int(np.prod(dims)) * dtype.itemsize)
    for name, array in extra.items():
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, value in weights(shape):
        dims, dtype = gguf_layout(value.shape)
        array = spec.to_gguf(name, value.astype(np.float32).reshape(dims))
        writer.write_tensor_data(array.astype(dtype))
    for array in extra.values():
        writer.write_tensor_data(array)
    writer.close()
    print(f"{out}: {shape} shapes, F16")
    return quantize_gguf(out, out.with_suffix(f".{quantize}.gguf"), quantize) if quantize else out


def llama_cpp_gguf(checkpoint: Path, out: Path, convert_script: Path) -> Path:
    """The F16 GGUF llama.cpp's own convert_hf_to_gguf.py makes of `checkpoint`, for the architectures whose
    GGUF this module does not write (gguf_arch None: it stacks experts, splits Granite's fused ones, reorders
    Mamba-2's tensors). Run by this interpreter, which has the torch and transformers that script needs."""
    import subprocess

    done = subprocess.run([sys.executable, str(convert_script), str(checkpoint), "--outtype", "f16", "--outfile", str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"llama.cpp's converter failed on {checkpoint}: {done.stderr.strip().splitlines()[-1:]}")
    print(f"{out}: llama.cpp's convert_hf_to_gguf.py, F16")
    return out


QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def quantize_gguf(f16: Path, out: Path, kind: str, python: str | Path = sys.executable) -> Path:
    """llama.cpp's quantization of `f16` to `kind` (Q4_K_M, …), by `python`'s llama-cpp-python."""
    import subprocess

    if subprocess.run([str(python), "-c", QUANTIZE, str(f16), str(out), kind]).returncode != 0:
        sys.exit(f"llama.cpp could not quantize {f16} to {kind}")
    print(f"{out}: {kind}, {out.stat().st_size / 1e9:.2f} GB")
    return out


def cached_models(shape: str, cache: Path, quantize: str | None = "Q4_K_M", convert_script: Path | None = None,
                  llama_cpp_python: str | Path = sys.executable) -> tuple[Path, Path | None]:
    """(int4 model directory, GGUF for llama.cpp) of `shape`, built into `cache` the first time: the
    checkpoint, `ovchat convert` of it with the default preset, the F16 GGUF of the same weights (written
    here, or by llama.cpp's `convert_script` for the shapes this module leaves to it) and llama.cpp's
    `quantize` of it by `llama_cpp_python` (None when that interpreter has no llama-cpp-python, or the
    shape needs a `convert_script` not given). The checkpoint and the F16 GGUF are deleted once what is
    made from them exists."""
    import shutil
    import subprocess

    spec = SHAPES[shape]
    cache.mkdir(parents=True, exist_ok=True)
    model_dir, checkpoint = cache / "int4", cache / "checkpoint"
    quantized = cache / f"{shape}.{quantize}.gguf" if quantize else None
    if quantized and not quantized.is_file():
        if spec.gguf_arch is None and convert_script is None:
            print(f"no GGUF of {shape}: llama.cpp's convert_hf_to_gguf.py writes it (--convert-hf-to-gguf)", file=sys.stderr)
            quantized = None
        elif subprocess.run([str(llama_cpp_python), "-c", "import llama_cpp"], capture_output=True).returncode != 0:
            quantized = None
    has_model = (model_dir / "openvino_model.xml").is_file()
    if not has_model or (quantized and not quantized.is_file() and spec.gguf_arch is None):
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_checkpoint(shape, checkpoint)
    if not has_model:
        subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "convert", str(checkpoint), "-o", str(model_dir),
                        "--force"], check=True)
    if quantized and not quantized.is_file():
        f16 = cache / f"{shape}.gguf"
        if spec.gguf_arch is None:
            llama_cpp_gguf(checkpoint, f16, convert_script)
        else:
            write_gguf(shape, f16, None)
        quantize_gguf(f16, quantized, quantize, llama_cpp_python)
        f16.unlink()
    shutil.rmtree(checkpoint, ignore_errors=True)
    return model_dir, quantized


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="shapes: " + ", ".join(SHAPES))
    parser.add_argument("shape", choices=SHAPES, metavar="SHAPE")
    parser.add_argument("out", type=Path, help="a checkpoint directory, or OUT.gguf")
    parser.add_argument("--quantize", metavar="TYPE", help="also llama.cpp's quantization of the GGUF (Q4_K_M, …)")
    parser.add_argument("--from", dest="checkpoint", type=Path, help="the checkpoint of SHAPE llama.cpp's converter reads")
    parser.add_argument("--convert-hf-to-gguf", type=Path, metavar="SCRIPT", help="llama.cpp's convert_hf_to_gguf.py")
    parser.add_argument("--llama-cpp", default=sys.executable, metavar="PYTHON",
                        help="an interpreter with llama-cpp-python, which quantizes (default: this one)")
    args = parser.parse_args()
    if args.out.suffix != ".gguf":
        write_checkpoint(args.shape, args.out)
    elif SHAPES[args.shape].gguf_arch is not None:
        f16 = write_gguf(args.shape, args.out, None)
        if args.quantize:
            quantize_gguf(f16, f16.with_suffix(f".{args.quantize}.gguf"), args.quantize, args.llama_cpp)
    elif args.checkpoint is None or args.convert_hf_to_gguf is None:
        parser.error(f"{args.shape}'s GGUF is llama.cpp's converter's: give --from CHECKPOINT and --convert-hf-to-gguf SCRIPT")
    else:
        f16 = llama_cpp_gguf(args.checkpoint, args.out, args.convert_hf_to_gguf)
        if args.quantize:
            quantize_gguf(f16, f16.with_suffix(f".{args.quantize}.gguf"), args.quantize, args.llama_cpp)


if __name__ == "__main__":
    main()
