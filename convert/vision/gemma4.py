"""Gemma 4's vision tower (E2B, E4B, 31B: transformers' Gemma4VisionModel) and `embed_vision`, as the
`openvino_vision_embeddings_model.xml` GenAI's VLMPipeline loads for model_type gemma4.

GenAI (visual_language/gemma4/classes.cpp) resizes an image so its sides are multiples of k·p (k the
pooling kernel, p the patch size), cuts it into p×p patches in row-major order, each patch's pixels in
HWC order and /255, and pads the list to max_soft_tokens·k² rows:

- `pixel_values` f32 [1, max_patches, 3·p²], the last dimension static: GenAI reads it from the compiled
  model to choose this "unmerged" layout (3·(k·p)² would be the merged one);
- `image_position_ids` i64 [1, max_patches, 2], each row the patch's (x, y), padding rows (−1, −1).

max_patches is dynamic: images and video frames have their own max_soft_tokens (280 and 70 by
default), so one model serves both. The output `last_hidden_state` f32 [N_valid/k², text hidden] holds
the soft tokens of the real patches only, in HF's order (the pooled cell kx + (columns/k)·ky); GenAI
takes every row it gets.

The graph drops the padding rows first (a Gather of the rows whose position is not (−1, −1)). In HF
they are masked out of attention as keys and zeroed before pooling, so no real patch's result depends
on them: dropping them is exact, and saves the encoder their work (and the mask).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import F32, apply_rope, attend, embedding, linear, rms_norm, scalar, split_heads, vector, weight
from .blocks import TowerWeights, activation

TOWER, EMBEDDER = "model.vision_tower.", "model.embed_vision."
# Gemma4VisionConfig's defaults, for keys a config.json leaves out.
DEFAULTS = dict(num_hidden_layers=16, num_attention_heads=12, head_dim=64, hidden_activation="gelu_pytorch_tanh",
                rms_norm_eps=1e-6, pooling_kernel_size=3, standardize=False, use_clipped_linears=False)


def gemma4_vision(config: dict, weights, compress) -> ov.Model:
    """The vision embeddings model of a gemma4 checkpoint (`config`: the whole config.json): patches and
    their positions in, the language model's image embeddings out. Takes every `model.vision_tower.*`
    and `model.embed_vision.*` tensor from `weights`; each projection goes through
    `compress(name, tensor, "linear")`, the position table through `compress(…, "embedding")`."""
    vision = {**DEFAULTS, **config["vision_config"]}
    tower = TowerWeights(weights, TOWER, compress)
    proj = _patch_projection(config["vision_config"], tower)
    pixel_values = ops.parameter([1, -1, proj.shape[1]], F32, name="pixel_values")
    position_ids = ops.parameter([1, -1, 2], np.int64, name="image_position_ids")

    pixels, positions = real_patches(pixel_values, position_ids)
    h = patch_embeddings(pixels, positions, proj, tower.sub("patch_embedder."))
    cos_sin = axial_rope(positions, vision["head_dim"], _rope_theta(vision))
    for i in range(vision["num_hidden_layers"]):
        h = encoder_layer(h, cos_sin, tower.sub(f"encoder.layers.{i}."), vision)
    h = pool(h, positions, vision["pooling_kernel_size"], vision["hidden_size"])
    if vision["standardize"]:
        h = ops.multiply(ops.subtract(h, weight(tower["std_bias"])), weight(tower["std_scale"])).output(0)
    out = embed_vision(h, TowerWeights(weights, EMBEDDER, compress), vision["rms_norm_eps"])

    out.get_tensor().set_names({"last_hidden_state"})
    for param in (pixel_values, position_ids):
        param.output(0).get_tensor().set_names({param.get_friendly_name()})
    return ov.Model([ops.result(out)], [pixel_values, position_ids], "gemma4_vision_embeddings")


def _patch_projection(vision: dict, tower: TowerWeights) -> np.ndarray:
    """input_proj's weight [H, 3·p²]. GenAI takes p from config.json's vision_config.patch_size (14 when it
    is missing) and refuses a model whose pixel_values are not 3·p² wide, so the two must agree."""
    proj = tower["patch_embedder.input_proj.weight"]
    patch_size = vision.get("patch_size", 14)
    if proj.shape[1] != 3 * patch_size**2:
        raise ValueError(f"gemma4 vision: patches of {proj.shape[1]} values, but GenAI will cut "
                         f"{patch_size}-pixel ones (config.json vision_config.patch_size)")
    return proj


def _rope_theta(vision: dict) -> float:
    """The axial rope's base (rope_parameters, as transformers 5 saves it; 100 by default)."""
    rope = vision.get("rope_parameters") or {}
    if rope.get("rope_type", "axial") != "axial":
        raise ValueError(f"gemma4 vision: rope type {rope['rope_type']!r}; the tower has axial rope only")
    return rope.get("rope_theta", vision.get("rope_theta", 100.0))


def real_patches(pixel_values, position_ids) -> tuple[ov.Output, ov.Output]:
    """The rows of the patches that are not padding ([1, N, 3·p²] and their positions [N, 2]): HF's
    padding is a position of (−1, −1)."""
    padding = ops.reduce_logical_and(ops.equal(position_ids, scalar(-1)), vector([-1]), keep_dims=False)  # [1, N]
    # NonZero lists the (batch, row) indices of the real patches, [2, Nv]: keep the rows.
    rows = ops.gather(ops.non_zero(ops.logical_not(padding), output_type="i64"), scalar(1), scalar(0))
    pixels = ops.gather(pixel_values, rows, scalar(1))
    positions = ops.gather(ops.squeeze(position_ids, vector([0])), rows, scalar(0))
    return pixels.output(0), positions.output(0)


def patch_embeddings(pixels, positions, proj: np.ndarray, w: TowerWeights) -> ov.Output:
    """input_proj(2·(pixels − ½)) + the x row of the position table + its y row: Gemma 4 feeds pixels in
    [0, 1] and rescales them in the model. The table [2, P, H] goes through `compress` as one [2P, H]
    embedding, the y rows after the x ones."""
    pixels = ops.multiply(ops.subtract(pixels, scalar(0.5, np.float32)), scalar(2.0, np.float32))
    key = w.prefix + "input_proj.weight"
    h = linear(pixels, w.compress(key, proj, "linear"), name=w.prefix + "input_proj")
    key = w.prefix + "position_embedding_table"
    table = w["position_embedding_table"]
    per_axis = table.shape[1]
    table = weight(w.compress(key, table.reshape(2 * per_axis, table.shape[2]), "embedding"))
    x, y = (ops.gather(positions, scalar(axis), scalar(1)) for axis in (0, 1))
    x_rows, y_rows = embedding(table, x, key + ".x"), embedding(table, ops.add(y, scalar(per_axis)), key + ".y")
    return ops.add(h, ops.add(x_rows, y_rows)).output(0)


def axial_rope(positions, head_dim: int, theta: float) -> tuple:
    """cos and sin per axis, [1, 1, Nv, d/2] each: x rotates the first half of every head and y the
    second, each half as ordinary rope (rotate_half) with the frequencies θ^(−j/(d/2)), j = 0, 2, ….
    (HF's Gemma4VisionRotaryEmbedding with apply_multidimensional_rope.)"""
    if head_dim % 4:
        raise ValueError(f"gemma4 vision: head_dim {head_dim} is not a multiple of 4 (two axes of rope pairs)")
    half = head_dim // 2
    inv_freq = (1.0 / theta ** (np.arange(0, half, 2, dtype=np.float32) / half)).astype(np.float32)
    tables = []
    for axis in (0, 1):
        pos = ops.convert(ops.gather(positions, scalar(axis), scalar(1)), F32)  # [Nv]
        angles = ops.multiply(ops.unsqueeze(pos, scalar(1)), ops.constant(inv_freq.reshape(1, -1)))
        angles = ops.reshape(ops.concat([angles, angles], -1), vector([1, 1, -1, half]), special_zero=False)
        tables.append((ops.cos(angles).output(0), ops.sin(angles).output(0)))
    return tuple(tables)


def rope_2d(x, cos_sin, head_dim: int) -> ov.Output:
    """x [1, H, Nv, d] with its first half rotated by the x positions and its second by the y ones."""
    half = head_dim // 2
    parts = ops.split(x, scalar(-1), 2).outputs()
    rotated = [apply_rope(part, cos, sin, half, half) for part, (cos, sin) in zip(parts, cos_sin)]
    return ops.concat(rotated, -1).output(0)


def clippable_linear(x, w: TowerWeights, name: str) -> ov.Output:
    """Gemma4ClippableLinear: the input clamped to [input_min, input_max], the projection (no bias), the
    output clamped to [output_min, output_max], where the checkpoint has those bounds
    (use_clipped_linears); an infinite bound is no clamp and is left out."""
    bounds = {b: w.weights.pop(f"{w.prefix}{name}.{b}", None)
              for b in ("input_min", "input_max", "output_min", "output_max")}
    x = _clamp(x, bounds["input_min"], bounds["input_max"])
    return _clamp(w.linear(x, f"{name}.linear"), bounds["output_min"], bounds["output_max"])


def _clamp(x, low, high) -> ov.Output:
    """x clamped to the finite ones of the bounds (scalars as stored, or None)."""
    low, high = (None if b is None else np.asarray(b).astype(np.float32).reshape(()) for b in (low, high))
    if low is not None and np.isfinite(low):
        x = ops.maximum(x, ops.constant(low))
    if high is not None and np.isfinite(high):
        x = ops.minimum(x, ops.constant(high))
    return x if isinstance(x, ov.Output) else x.output(0)


def attention(x, cos_sin, w: TowerWeights, vision: dict) -> ov.Output:
    """Bidirectional attention over the real patches, unscaled (scale 1): q and k RMS-normed per head
    with a weight, v without one, q and k rotated by the 2-D rope."""
    heads, d, eps = vision["num_attention_heads"], vision["head_dim"], vision["rms_norm_eps"]
    kv_heads = vision.get("num_key_value_heads", heads)

    def heads_first(t):
        return ops.transpose(t, vector([0, 2, 1, 3])).output(0)

    q = rms_norm(split_heads(clippable_linear(x, w, "q_proj"), heads, d), w["q_norm.weight"], eps)
    k = rms_norm(split_heads(clippable_linear(x, w, "k_proj"), kv_heads, d), w["k_norm.weight"], eps)
    v = rms_norm(split_heads(clippable_linear(x, w, "v_proj"), kv_heads, d), None, eps)
    q, k = rope_2d(heads_first(q), cos_sin, d), rope_2d(heads_first(k), cos_sin, d)
    out = attend(q, k, heads_first(v), scalar(0.0, np.float32), scale=1.0)
    return clippable_linear(out, w, "o_proj")


def mlp(x, w: TowerWeights, vision: dict) -> ov.Output:
    """down(act(gate(x)) · up(x)), every projection clippable."""
    gate = activation(clippable_linear(x, w, "gate_proj"), vision["hidden_activation"])
    return clippable_linear(ops.multiply(gate, clippable_linear(x, w, "up_proj")), w, "down_proj")


def encoder_layer(x, cos_sin, w: TowerWeights, vision: dict) -> ov.Output:
    """Gemma's sandwich: each of attention and MLP between a norm before and a norm after, then added."""
    eps = vision["rms_norm_eps"]

    def norm(h, name):
        return rms_norm(h, w[f"{name}.weight"], eps)

    attended = attention(norm(x, "input_layernorm"), cos_sin, w.sub("self_attn."), vision)
    h = ops.add(x, norm(attended, "post_attention_layernorm"))
    mixed = mlp(norm(h, "pre_feedforward_layernorm"), w.sub("mlp."), vision)
    return ops.add(h, norm(mixed, "post_feedforward_layernorm")).output(0)


def pool(h, positions, k: int, hidden: int) -> ov.Output:
    """Gemma4VisionPooler: the mean of each k×k cell of patches, by position, times √hidden → [Nv/k², H].

    Patch (x, y) falls in cell ⌊x/k⌋ + (columns/k)·⌊y/k⌋, columns = max x + 1; the mean is a product
    with the [Nv, cells] matrix of 1/k² where a patch is in a cell, as HF's one-hot."""
    x, y = (ops.gather(positions, scalar(axis), scalar(1)) for axis in (0, 1))
    cells_per_row = ops.divide(ops.add(ops.reduce_max(x, scalar(0), keep_dims=False), scalar(1)), scalar(k))
    cell = ops.add(ops.divide(x, scalar(k)), ops.multiply(cells_per_row, ops.divide(y, scalar(k))))  # [Nv]
    patches = ops.gather(ops.shape_of(positions), scalar(0), scalar(0))
    cells = ops.range(scalar(0), ops.divide(patches, scalar(k * k)), scalar(1), output_type="i64")
    member = ops.equal(ops.unsqueeze(cell, scalar(1)), ops.unsqueeze(cells, scalar(0)))  # [Nv, cells]
    share = ops.select(member, scalar(1.0 / (k * k), np.float32), scalar(0.0, np.float32))
    pooled = ops.matmul(share, ops.squeeze(h, vector([0])), transpose_a=True, transpose_b=False)
    return ops.multiply(pooled, scalar(hidden**0.5, np.float32)).output(0)


def embed_vision(h, w: TowerWeights, eps: float) -> ov.Output:
    """Gemma4MultimodalEmbedder: RMSNorm without a scale, then the projection to the text width."""
    return w.linear(rms_norm(h, None, eps), "embedding_projection")
