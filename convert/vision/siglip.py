"""SigLIP's vision transformer (Zhai et al., 2023) and Gemma 3's image tower built on it.

The ViT is the plain one: a patch embedding (a Conv2d whose stride is its kernel), a learned position
per patch, pre-LayerNorm encoder layers with bidirectional attention and a GELU MLP, and a final
LayerNorm. Gemma 3 reads its output through Gemma3MultiModalProjector: the patch grid average-pooled
down to `mm_tokens_per_image` tokens, a Gemma RMSNorm, and one projection into the text model's width.
GenAI's VLMPipeline runs the result as `openvino_vision_embeddings_model.xml` on the image it resized and
normalised in C++, and takes the output's second dimension as the number of image tokens.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import rms_norm, vector, weight
from .blocks import TowerWeights, activation, encoder_attention, layer_norm

# SiglipVisionConfig's defaults, for the keys a checkpoint's vision_config leaves out (transformers fills
# them in the same way when it builds the model).
SIGLIP_VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=16,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)

# Where a Gemma 3 checkpoint keeps the tower: Google's layout (and transformers 5's in memory when it
# loads one), transformers 5's in memory for a model it built (SiglipVisionModel no longer has a
# `vision_model` level), transformers 4's, and what transformers 5.25's save_pretrained writes (its
# llava-style renaming reversed: no `model.` root, and no `vision_model` level either).
GEMMA3_TOWER_PREFIXES = ("model.vision_tower.vision_model.", "model.vision_tower.",
                         "vision_tower.vision_model.", "vision_tower.")
GEMMA3_PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")

# Tensors a tower may carry that the image features do not use: SigLIP's attention-pooling head (the
# contrastive model's image embedding) and the position ids buffer older checkpoints saved.
UNUSED_TOWER_TENSORS = ("head.", "embeddings.position_ids")


def siglip_vision_config(vision_config: dict) -> dict:
    """The vision config with SiglipVisionConfig's defaults under the keys it sets."""
    return {**SIGLIP_VISION_DEFAULTS, **vision_config}


def _square_side(size) -> int:
    """An image or patch size as one side: an int, or a [height, width] pair that must be square."""
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"a non-square size {list(size)} is not supported")
        size = size[0]
    return int(size)


def patches_per_side(vision_config: dict) -> int:
    config = siglip_vision_config(vision_config)
    return _square_side(config["image_size"]) // _square_side(config["patch_size"])


def patch_embedding(pixel_values, w: TowerWeights, patch: int) -> ov.Output:
    """[B, C, H, W] → [B, (H/p)·(W/p), D], row-major over the patch grid: a convolution whose stride is its
    kernel, as in the checkpoint. Its kernel goes through `compress` as the matrix it is, [D, C·p·p]."""
    name = f"{w.prefix}patch_embedding.weight"
    kernel = w["patch_embedding.weight"]
    out_channels, in_channels = kernel.shape[:2]
    matrix = weight(w.compress(name, kernel.reshape(out_channels, -1), "linear"))
    kernel = ops.reshape(matrix, vector([out_channels, in_channels, patch, patch]), special_zero=False)
    x = ops.convolution(pixel_values, kernel, strides=[patch, patch], pads_begin=[0, 0], pads_end=[0, 0],
                        dilations=[1, 1], auto_pad="valid", name=name)
    x = ops.add(x, ops.reshape(weight(w["patch_embedding.bias"]), vector([1, out_channels, 1, 1]), special_zero=False))
    x = ops.reshape(x, vector([0, out_channels, -1]), special_zero=True)
    return ops.transpose(x, vector([0, 2, 1])).output(0)


def embeddings(pixel_values, w: TowerWeights, config: dict) -> ov.Output:
    """Patch embeddings plus the learned position of each patch. The position table has one row per
    patch of an `image_size` image, so the input must be that size (GenAI resizes to it)."""
    x = patch_embedding(pixel_values, w, _square_side(config["patch_size"]))
    return ops.add(x, weight(w["position_embedding.weight"])).output(0)


def self_attention(x, w: TowerWeights, heads: int) -> ov.Output:
    """Multi-head attention of every patch to every patch, with biased projections; scaled by 1/√head_dim."""
    q, k, v = (w.linear(x, name) for name in ("q_proj", "k_proj", "v_proj"))
    return w.linear(encoder_attention(q, k, v, heads), "out_proj")


def mlp(x, w: TowerWeights, hidden_act: str) -> ov.Output:
    return w.linear(activation(w.linear(x, "fc1"), hidden_act), "fc2")


def encoder_layer(x, w: TowerWeights, config: dict) -> ov.Output:
    """x + attention(LN(x)), then + MLP(LN(·)): SiglipEncoderLayer."""
    eps = config["layer_norm_eps"]
    normed = layer_norm(x, w["layer_norm1.weight"], w["layer_norm1.bias"], eps)
    x = ops.add(x, self_attention(normed, w.sub("self_attn."), config["num_attention_heads"]))
    normed = layer_norm(x, w["layer_norm2.weight"], w["layer_norm2.bias"], eps)
    return ops.add(x, mlp(normed, w.sub("mlp."), config["hidden_act"])).output(0)


def siglip_encoder(pixel_values, w: TowerWeights, vision_config: dict) -> ov.Output:
    """SiglipVisionModel's last_hidden_state, [B, patches, D] f32: embeddings, the encoder layers and
    post_layernorm. `w` is rooted where `embeddings.`, `encoder.` and `post_layernorm.` begin; the
    attention-pooling head, which the image features do not use, is left in the checkpoint."""
    config = siglip_vision_config(vision_config)
    x = embeddings(pixel_values, w.sub("embeddings."), config)
    for i in range(config["num_hidden_layers"]):
        x = encoder_layer(x, w.sub(f"encoder.layers.{i}."), config)
    return layer_norm(x, w["post_layernorm.weight"], w["post_layernorm.bias"], config["layer_norm_eps"])


def average_pool_patches(x, side: int, kernel: int) -> ov.Output:
    """[B, side², D] → [B, (side/kernel)², D]: the patch grid averaged over kernel×kernel windows, tokens
    row-major as Gemma3MultiModalProjector's AvgPool2d and flatten leave them."""
    hidden = x.get_partial_shape()[2].get_length()
    grid = ops.reshape(ops.transpose(x, vector([0, 2, 1])), vector([0, hidden, side, side]), special_zero=True)
    pooled = ops.avg_pool(grid, strides=[kernel, kernel], pads_begin=[0, 0], pads_end=[0, 0],
                          kernel_shape=[kernel, kernel], exclude_pad=True)
    pooled = ops.reshape(pooled, vector([0, hidden, -1]), special_zero=True)
    return ops.transpose(pooled, vector([0, 2, 1])).output(0)


def gemma3_projector(x, w: TowerWeights, side: int, tokens_per_image: int, eps: float) -> ov.Output:
    """Gemma3MultiModalProjector: pool to `tokens_per_image` soft tokens, Gemma RMSNorm (1 + w), then
    @ mm_input_projection_weight. That weight is stored [vision, text], the transpose of a Linear's,
    so it goes to `compress` as [text, vision] and is applied by linear()."""
    tokens_per_side = int(round(tokens_per_image ** 0.5))
    if tokens_per_side ** 2 != tokens_per_image or side % tokens_per_side:
        raise ValueError(f"{tokens_per_image} image tokens do not pool evenly from a {side}×{side} patch grid")
    x = average_pool_patches(x, side, side // tokens_per_side)
    x = rms_norm(x, w["mm_soft_emb_norm.weight"], eps, plus_one=True)
    name = f"{w.prefix}mm_input_projection_weight"
    projection = np.ascontiguousarray(w["mm_input_projection_weight"].T)
    return ops.matmul(x, weight(w.compress(name, projection, "linear")), transpose_a=False, transpose_b=True,
                      name=name).output(0)


def _prefix_holding(weights, prefixes: tuple[str, ...], name: str) -> str:
    """The first of `prefixes` under which the checkpoint has `name`."""
    for prefix in prefixes:
        if prefix + name in weights:
            return prefix
    raise KeyError(f"checkpoint has no {name} under any of {', '.join(prefixes)}")


def _take_unused(weights, prefix: str) -> None:
    """Drop the tower's tensors the features do not use; anything else left is a layout we misread."""
    for name in [name for name in weights if name.startswith(prefix)]:
        if name[len(prefix):].startswith(UNUSED_TOWER_TENSORS):
            weights.discard(name)
    left = [name for name in weights if name.startswith(prefix)]
    if left:
        raise ValueError(f"vision tensors the graph did not use: {', '.join(sorted(left)[:5])}")


def gemma3_vision(config: dict, weights, compress) -> ov.Model:
    """Gemma 3's openvino_vision_embeddings_model: `pixel_values` f32 [B, 3, H, W] (H = W = image_size)
    → `last_hidden_state` f32 [B, mm_tokens_per_image, text hidden], Gemma3Model.get_image_features'
    pooler_output. `config` is the checkpoint's whole config.json; the tower's and the projector's
    tensors are taken from `weights` as they are used."""
    vision_config = siglip_vision_config(config.get("vision_config") or {})
    tower = TowerWeights(weights, _prefix_holding(weights, GEMMA3_TOWER_PREFIXES, "embeddings.patch_embedding.weight"),
                         compress)
    projector = TowerWeights(weights, _prefix_holding(weights, GEMMA3_PROJECTOR_PREFIXES, "mm_input_projection_weight"),
                             compress)

    pixel_values = ops.parameter([-1, vision_config["num_channels"], -1, -1], np.float32, name="pixel_values")
    pixel_values.output(0).get_tensor().set_names({"pixel_values"})
    features = siglip_encoder(pixel_values, tower, vision_config)
    image_embeds = gemma3_projector(features, projector, patches_per_side(vision_config),
                                    config.get("mm_tokens_per_image") or 256, vision_config["layer_norm_eps"])
    image_embeds.get_tensor().set_names({"last_hidden_state"})
    _take_unused(weights, tower.prefix)
    _take_unused(weights, projector.prefix)
    return ov.Model([ops.result(image_embeds)], [pixel_values], "gemma3_vision_embeddings")
