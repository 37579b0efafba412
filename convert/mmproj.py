"""A vision-language model as llama.cpp ships it: the model GGUF (the language model) plus an `mmproj`
GGUF (general.architecture "clip": the vision tower `v.*`, the projector `mm.*`, metadata `clip.*`),
read together as one multimodal checkpoint in Hugging Face's terms.

The language model is read as any GGUF is (gguf_source.py, its blocks kept); the tower's tensors are
renamed to the HF names convert/vision reads, a config.json is synthesized from both files' metadata
(the model GGUF's text config, the mmproj's vision config, the image tokens from the vocabulary) and a
preprocessor_config.json from the mmproj's image size, mean and std.

Supported projector: Gemma 3's ("gemma3", llama.cpp's Gemma3VisionModel: SigLIP, then the average pool,
the soft-embedding RMSNorm and the input projection of Gemma3MultiModalProjector).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .gguf_source import GGUFCheckpoint, GGUFTensorRef, _field, read_gguf
from .sources import SourceError, Weights

SUPPORTED_PROJECTORS = ("gemma3",)

TOWER = "vision_tower.vision_model."  # transformers 4's layout of Gemma 3's tower, which siglip.py reads
PROJECTOR = "multi_modal_projector."
# mmproj name → HF name, as llama.cpp's Gemma3VisionModel maps them (gguf.constants' MODEL_TENSOR.V_*); {} is
# the layer. Every tensor keeps HF's orientation: GGUF lists a tensor's axes fastest first, so numpy reads
# each back in the shape torch wrote (the patch kernel [D, C, p, p], the position table [patches, D], each
# linear [out, in], and mm.input_projection [vision, text] as Gemma 3 stores it; llama.cpp transposes it
# before its mul_mat).
GEMMA3_NAMES = {
    "v.patch_embd.weight": TOWER + "embeddings.patch_embedding.weight",
    "v.patch_embd.bias": TOWER + "embeddings.patch_embedding.bias",
    "v.position_embd.weight": TOWER + "embeddings.position_embedding.weight",
    **{f"v.blk.{{}}.{gguf}.{kind}": f"{TOWER}encoder.layers.{{}}.{hf}.{kind}"
       for gguf, hf in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                        ("attn_out", "self_attn.out_proj"), ("ln1", "layer_norm1"), ("ln2", "layer_norm2"),
                        ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2"))
       for kind in ("weight", "bias")},
    "v.post_ln.weight": TOWER + "post_layernorm.weight",
    "v.post_ln.bias": TOWER + "post_layernorm.bias",
    "mm.input_projection.weight": PROJECTOR + "mm_input_projection_weight",
    "mm.soft_emb_norm.weight": PROJECTOR + "mm_soft_emb_norm.weight",
}
# llama.cpp stores the Gemma RMSNorm's (1 + w) as 1 + w.
PLUS_ONE = ("mm.soft_emb_norm.weight",)
# The model GGUF's architecture each projector goes with.
LANGUAGE_ARCH = {"gemma3": "gemma3"}
# Gemma 3's image tokens, in its vocabulary as Google ships it.
GEMMA3_IMAGE_TOKENS = {"boi_token_index": "<start_of_image>", "image_token_index": "<image_soft_token>",
                       "eoi_token_index": "<end_of_image>"}
GEMMA3_POOL = 4  # clip.vision.projector.scale_factor where the file leaves it out: 896 / 14 / 4 → 16² = 256 tokens


@dataclass
class MultimodalGGUF(GGUFCheckpoint):
    """The model GGUF's checkpoint with the mmproj's tower beside it (`vision_refs`, by HF name)."""

    mmproj: Path = None
    vision_refs: dict = field(default_factory=dict)
    preprocessor: dict = field(default_factory=dict)

    def weights(self, dtype=None, dequantize: bool = False) -> Weights:
        """The language model's tensors as GGUFCheckpoint gives them (blocks kept unless `dequantize`) and
        the tower's, any block type of which is dequantized: the tower is compressed like a checkpoint's."""
        to_compress = super().weights(dtype, dequantize).to_compress
        refs = {name: replace(ref, dequantize=dequantize) for name, ref in self.tensor_refs.items()}
        return Weights({**refs, **self.vision_refs}, dtype, to_compress)

    def write_files(self, out: Path, hf_tokenizer) -> None:
        super().write_files(out, hf_tokenizer)
        (out / "preprocessor_config.json").write_text(json.dumps(self.preprocessor, indent=2) + "\n")


def is_mmproj(reader) -> bool:
    return _field(reader, "general.architecture") == "clip"


def open_with_mmproj(source, mmproj) -> MultimodalGGUF:
    """SOURCE (a model .gguf) and MMPROJ (llama.cpp's mmproj .gguf) as one multimodal checkpoint."""
    from gguf import GGUFReader

    source, mmproj = Path(source).expanduser(), Path(mmproj).expanduser()
    supported = f"supported projector type: {', '.join(SUPPORTED_PROJECTORS)}"
    if source.suffix != ".gguf" or not source.is_file():
        raise SourceError(f"--mmproj goes with a model .gguf file, not {source} ({supported})")
    if not mmproj.is_file():
        raise SourceError(f"--mmproj {mmproj}: no such file")
    try:
        reader = GGUFReader(mmproj)
    except Exception as e:  # as read_gguf: many exception types on a bad file
        raise SourceError(f"{mmproj.name} is not a readable GGUF file ({e})") from None
    if not is_mmproj(reader):
        raise SourceError(f"{mmproj.name} is not an mmproj file (general.architecture "
                          f"{_field(reader, 'general.architecture')!r}, not 'clip'); {supported}")
    projector = _field(reader, "clip.vision.projector_type") or _field(reader, "clip.projector_type")
    if projector not in SUPPORTED_PROJECTORS or not _field(reader, "clip.has_vision_encoder", False):
        raise SourceError(f"{mmproj.name}: projector type {projector!r} is not supported; {supported}")
    language = read_gguf(source)
    if language.arch != LANGUAGE_ARCH[projector]:
        raise SourceError(f"{mmproj.name} is a {projector} projector, but {source.name} is a {language.arch} model")
    config, preprocessor = _gemma3_config(reader, language, mmproj.name)
    return MultimodalGGUF(language.path, language.arch, config, language.reader, language.tensor_refs,
                          mmproj=mmproj, vision_refs=_vision_refs(reader, mmproj.name), preprocessor=preprocessor)


def _vision_refs(reader, file_name: str) -> dict:
    refs = {}
    for index, tensor in enumerate(reader.tensors):
        parts = tensor.name.split(".")
        layer, name = None, tensor.name
        if parts[:2] == ["v", "blk"]:
            layer, name = parts[2], ".".join(["v", "blk", "{}", *parts[3:]])
        if name not in GEMMA3_NAMES:
            raise SourceError(f"{file_name} has a tensor the gemma3 projector does not know: {tensor.name}")
        refs[GEMMA3_NAMES[name].format(layer)] = GGUFTensorRef(reader, index, True,
                                                               shift=-1.0 if name in PLUS_ONE else 0.0)
    return refs


def _f32(value) -> float:
    """A float the file stores in f32, as the shortest decimal that reads back as it (1e-06, not 9.99e-07)."""
    return float(str(np.float32(value)))


def _gemma3_config(reader, language: GGUFCheckpoint, file_name: str) -> tuple[dict, dict]:
    """config.json as transformers' Gemma3Config has it, and the image processor's settings."""
    def clip(key, default=None):
        value = _field(reader, f"clip.vision.{key}", default)
        if value is None:
            raise SourceError(f"{file_name} has no clip.vision.{key}")
        return value

    image_size, patch_size = int(clip("image_size")), int(clip("patch_size"))
    vision = {"model_type": "siglip_vision_model", "hidden_size": int(clip("embedding_length")),
              "intermediate_size": int(clip("feed_forward_length")), "num_hidden_layers": int(clip("block_count")),
              "num_attention_heads": int(clip("attention.head_count")), "image_size": image_size,
              "patch_size": patch_size, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
              "layer_norm_eps": _f32(clip("attention.layer_norm_epsilon", 1e-6)), "vision_use_head": False}
    side = image_size // patch_size
    pool = int(clip("projector.scale_factor", GEMMA3_POOL))
    if pool < 1 or side % pool:
        raise SourceError(f"{file_name}: a {side}×{side} patch grid does not pool evenly by {pool}")
    projection_dim = _field(reader, "clip.vision.projection_dim")
    if projection_dim is not None and int(projection_dim) != language.config["hidden_size"]:
        raise SourceError(f"{file_name} projects to width {projection_dim}, but {language.path.name}'s model is "
                          f"{language.config['hidden_size']} wide: not this model's projector")
    tokens = _field(language.reader, "tokenizer.ggml.tokens") or []
    ids = {key: tokens.index(token) if token in tokens else None for key, token in GEMMA3_IMAGE_TOKENS.items()}
    missing = [GEMMA3_IMAGE_TOKENS[key] for key, value in ids.items() if value is None]
    if missing:
        raise SourceError(f"{language.path.name}'s vocabulary has no {', '.join(missing)}: not a Gemma 3 vision model")
    text = dict(language.config)
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
              "vision_config": vision, "mm_tokens_per_image": (side // pool) ** 2, **ids,
              **{key: text[key] for key in ("tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")}}
    mean = [_f32(x) for x in clip("image_mean", [0.5, 0.5, 0.5])]
    std = [_f32(x) for x in clip("image_std", [0.5, 0.5, 0.5])]
    preprocessor = {"image_processor_type": "Gemma3ImageProcessor", "do_convert_rgb": True, "do_resize": True,
                    "size": {"height": image_size, "width": image_size}, "resample": 2,  # bilinear, as GenAI resizes
                    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean,
                    "image_std": std}
    return config, preprocessor
