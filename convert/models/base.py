"""What every supported architecture shares: its arguments read from config.json, and its rope."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property

import numpy as np


class UnsupportedModel(ValueError):
    """The checkpoint asks for something this converter does not build."""


@dataclass
class Rope:
    """Rotary embedding frequencies, as the model's rope_type defines them.

    `long_inv_freq` is set only for longrope: HF switches the whole forward pass to the long
    factors once the sequence grows past `original_max_position_embeddings`.
    """

    inv_freq: np.ndarray
    attention_factor: float = 1.0
    long_inv_freq: np.ndarray | None = None
    original_max_position_embeddings: int | None = None
    # M-RoPE (Qwen-VL): how many frequencies rotate by the (t, h, w) rows of multimodal positions.
    mrope_section: list | None = None

    @property
    def rotary_dim(self) -> int:
        return 2 * len(self.inv_freq)


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    rms_norm_eps: float
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    sliding_window: int | None = None
    layer_types: list | None = None
    final_logit_softcapping: float | None = None
    rope_parameters: dict = field(default_factory=dict)
    # The sliding-window layers' own rope, where the model has one (Gemma 3, OLMo 3); None: the same.
    local_rope_parameters: dict | None = None

    # Set by architectures that differ from llama here: the embedding's scale (Gemma, Granite),
    # norms that scale by (1 + w) (Gemma), the logits' scale (Granite).
    embed_scale = None
    norm_plus_one = False
    logits_scale = None

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        self.check_activation()
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedModel("num_attention_heads must be a multiple of num_key_value_heads")

    def check_activation(self) -> None:
        if self.hidden_act not in ("silu", "swish"):
            raise UnsupportedModel(f"hidden_act {self.hidden_act!r} is not supported (only silu)")

    def window(self, layer: int) -> int | None:
        """The attention window of `layer`: the sliding window where layer_types says
        "sliding_attention" or, without layer_types, everywhere (Mistral); None: full attention."""
        if self.layer_types is None or self.layer_types[layer] == "sliding_attention":
            return self.sliding_window
        return None

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in config.items() if k in known and v is not None}
        args["rope_parameters"] = rope_parameters(config)
        missing = [f.name for f in fields(cls) if f.name not in args and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise UnsupportedModel(f"config.json lacks {', '.join(missing)}")
        return cls(**args)

    @cached_property
    def rope(self) -> Rope:
        """One Rope per model (so its tables are built once and shared by every layer)."""
        return make_rope(self.rope_parameters, self.head_dim, self.max_position_embeddings)

    @cached_property
    def local_rope(self) -> Rope:
        return make_rope(self.local_rope_parameters, self.head_dim, self.max_position_embeddings)

    def layer_rope(self, layer: int) -> Rope | None:
        """The rope of `layer`: the sliding layers' own where the model has one; None: no rotation (NoPE)."""
        if self.local_rope_parameters and self.window(layer) is not None:
            return self.local_rope
        return self.rope


def text_config(config: dict) -> dict:
    """The language model's config: a multimodal checkpoint's text_config (its tie_word_embeddings,
    which decides whether lm_head is stored, is the outer one's where that says), else config itself.
    model_type stays the outer one, which picks the architecture module."""
    if "text_config" not in config:
        return config
    tied = {k: config[k] for k in ("tie_word_embeddings",) if k in config}
    return {**config["text_config"], **tied, "model_type": config["model_type"]}


def keep_language_model(weights, towers: tuple[str, ...] = ("vision_tower.", "multi_modal_projector.")) -> None:
    """A multimodal checkpoint's language model under the text model's names (transformers 5 saves
    it as model.language_model.*, 4.x as language_model.model.*); its other towers (names containing
    one of `towers`) dropped."""
    for old in ("model.language_model.", "language_model.model."):
        weights.rename_prefix(old, "model.")
    weights.rename_prefix("language_model.lm_head.", "lm_head.")
    for name in [n for n in weights if any(tower in n for tower in towers)]:
        weights.discard(name)


def ropes_by_layer_type(config: dict, full: dict, sliding: dict) -> dict:
    """rope_parameters (the full-attention layers') and local_rope_parameters (the sliding layers') from
    transformers 5's per-layer-type `rope_parameters`, for ModelArgs.from_config; `full` and `sliding`
    are what the family's 4.x configs said instead (rope_theta + rope_scaling, a local base), used for
    a kind the config leaves out."""
    nested = config.get("rope_parameters") or {}
    full, local = (rope_parameters({"rope_parameters": nested.get(kind) or legacy,
                                    "rope_theta": legacy.get("rope_theta", 10000.0)})
                   for kind, legacy in (("full_attention", full), ("sliding_attention", sliding)))
    return {"rope_parameters": full, "local_rope_parameters": local}


def rope_parameters(config: dict) -> dict:
    """One dict with rope_type and rope_theta, from transformers 5 (`rope_parameters`) or 4.x
    (`rope_theta` + `rope_scaling`, whose type key was `type` before `rope_type`)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params["rope_type"] = params.pop("type", None) or params.get("rope_type") or "default"
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params.setdefault("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if "original_max_position_embeddings" in config:
        params.setdefault("original_max_position_embeddings", config["original_max_position_embeddings"])
    return params


def make_rope(params: dict, head_dim: int, max_position_embeddings: int) -> Rope:
    rope = _rope_of_type(params, head_dim, max_position_embeddings)
    rope.mrope_section = params.get("mrope_section")
    return rope


def _rope_of_type(params: dict, head_dim: int, max_position_embeddings: int) -> Rope:
    rope_type = params["rope_type"]
    base = float(params["rope_theta"])
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv_freq = 1.0 / base**exponents
    if "freq_factors" in params:  # a GGUF's rope_freqs: llama.cpp divides each frequency by its factor
        inv_freq = inv_freq / np.asarray(params["freq_factors"], np.float64)

    if rope_type == "default":
        return Rope(inv_freq.astype(np.float32))
    if rope_type == "linear":
        return Rope((inv_freq / params["factor"]).astype(np.float32))
    if rope_type == "llama3":
        return Rope(_llama3_inv_freq(inv_freq, params).astype(np.float32))
    if rope_type in ("longrope", "su"):
        return _longrope(params, base, exponents, max_position_embeddings)
    if rope_type == "yarn":
        return _yarn(params, base, dim, max_position_embeddings)
    if rope_type == "proportional":
        return _proportional(params, base, head_dim)
    raise UnsupportedModel(
        f"rope type {rope_type!r} is not supported (default, linear, llama3, longrope, yarn, proportional are)"
    )


def _proportional(params: dict, base: float, head_dim: int) -> Rope:
    """Gemma 4's full-attention rope: the first partial_rotary_factor · head_dim / 2 frequencies of a
    whole head's (base^(−2i / head_dim), not of the rotated part's), the other pairs not rotated
    (frequency 0); rotate_half pairs channel i with i + head_dim / 2 across the whole head."""
    rotated = int(params.get("partial_rotary_factor", 1.0) * head_dim // 2)
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    inv_freq[rotated:] = 0.0
    return Rope((inv_freq / params.get("factor", 1.0)).astype(np.float32))


def _llama3_inv_freq(inv_freq: np.ndarray, params: dict) -> np.ndarray:
    """Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate in between."""
    factor = params["factor"]
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    old_context = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return np.where(is_medium, interpolated, scaled)


def _longrope(params: dict, base: float, exponents: np.ndarray, max_position_embeddings: int) -> Rope:
    original = params["original_max_position_embeddings"]
    factor = params.get("factor") or max_position_embeddings / original
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    short = 1.0 / (np.asarray(params["short_factor"], np.float64) * base**exponents)
    long = 1.0 / (np.asarray(params["long_factor"], np.float64) * base**exponents)
    return Rope(short.astype(np.float32), attention_factor, long.astype(np.float32), original)


def _yarn(params: dict, base: float, dim: int, max_position_embeddings: int) -> Rope:
    original = params["original_max_position_embeddings"]
    factor = params.get("factor") or max_position_embeddings / original

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        if params.get("mscale") and params.get("mscale_all_dim"):
            attention_factor = mscale(factor, params["mscale"]) / mscale(factor, params["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)

    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(params.get("beta_fast") or 32), correction_dim(params.get("beta_slow") or 1)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    inv_freq = (1 / (factor * pos_freqs)) * ramp + (1 / pos_freqs) * extrapolation_weight
    return Rope(inv_freq.astype(np.float32), attention_factor)
