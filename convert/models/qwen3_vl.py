"""Qwen3-VL's language model: Qwen3's layers, rotated by interleaved M-RoPE (positions in rows t, h, w,
graph.multimodal_angles) and, after each of its first layers, the image features of the vision
tower's matching deepstack merger added at the image tokens' positions (DeepStack, Meng et al., 2024)."""

from dataclasses import dataclass

import openvino as ov
import openvino.opset13 as ops

from ..graph import F32, scalar, vector
from ..vision.qwen import qwen_vision
from . import base
from .llama import transformer_block

# Qwen3VLTextConfig's defaults, for keys a hub config leaves out.
DEFAULTS = dict(vocab_size=151_936, head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=128_000)
POSITION_ROWS = 3  # GenAI sends M-RoPE positions as [3, B, T]


@dataclass
class ModelArgs(base.ModelArgs):
    deepstack_levels: int = 0  # how many first layers get a deepstack merger's features added

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        text = base.text_config(config)
        params = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
        params.setdefault("rope_theta", text.get("rope_theta", 500_000.0))
        params.setdefault("mrope_section", [24, 20, 20])
        levels = len((config.get("vision_config") or {}).get("deepstack_visual_indexes", [8, 16, 24]))
        return super().from_config({**DEFAULTS, **text, "rope_parameters": params, "rope_scaling": None,
                                    "deepstack_levels": levels})


def sanitize(weights, args: ModelArgs) -> None:
    base.keep_language_model(weights, ("visual.",))


def vision_models(config: dict, weights, compress) -> dict:
    return qwen_vision(config, weights, compress)


def multimodal_inputs(args: ModelArgs) -> dict:
    """Where the image tokens are (`visual_pos_masks`) and each deepstack level's features for them."""
    return {"visual_pos_masks": ops.parameter([-1, -1], ov.Type.boolean, name="visual_pos_masks"),
            "deepstack_visual_embeds": ops.parameter([-1, -1, args.hidden_size], F32, name="deepstack_visual_embeds")}


def add_deepstack(h, level: int, ctx) -> ov.Output:
    """h + the level's image features at the image tokens' positions, in order. GenAI sends a mask [B, T]
    (or [1, N] for paged attention's N tokens, and [B, 1] with no image) and features [levels, images'
    tokens, H] (one zero row with no image): h is flattened to tokens, the mask broadcast to as many."""
    hidden = h.get_partial_shape()[-1].get_length()
    tokens = ops.reshape(h, vector([-1, hidden]), special_zero=False)
    count = ops.gather(ops.shape_of(tokens), vector([0]), scalar(0))
    is_image = ops.broadcast(ops.reshape(ctx.inputs["visual_pos_masks"], vector([-1]), special_zero=False), count)
    nth_image = ops.maximum(ops.subtract(ops.cumsum(ops.convert(is_image, ov.Type.i64), scalar(0)), scalar(1)), scalar(0))
    features = ops.gather(ops.gather(ctx.inputs["deepstack_visual_embeds"], scalar(level), scalar(0)), nth_image, scalar(0))
    added = ops.multiply(features, ops.unsqueeze(ops.convert(is_image, F32), scalar(1)))
    return ops.reshape(ops.add(tokens, added), ops.shape_of(h), special_zero=False).output(0)


def decoder_layer(x, w, args, ctx):
    h = transformer_block(x, w, args, ctx, args.rope, qk_norm="rms")
    if "deepstack_visual_embeds" in ctx.inputs and w.layer < args.deepstack_levels:
        h = add_deepstack(h, w.layer, ctx)
    return h
