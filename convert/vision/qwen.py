"""The vision tower of Qwen3-VL (`qwen3_vl`) and Qwen3.5 (`qwen3_5`, `qwen3_5_moe`), as the three models GenAI's
VLMPipeline runs around its own C++ (visual_language/qwen2vl, qwen3_vl, qwen3_5 classes.cpp):

- vision_embeddings: the patch embedding. One parameter `hidden_states` [N, 3·T·p²], each row a patch
  flattened (channel, frame, y, x) with the patches in merge-window order; GenAI swaps that parameter
  for its own resize/normalize/patchify subgraph, so there may be exactly one.
- vision_embeddings_pos: the learned position table. `input` [4, N], the four bilinear corners of each
  patch on the table's square grid → [4, N, hidden]; GenAI appends the weighted sum of the corners,
  reorders the result by merge window and adds it to the patch embeddings itself.
- vision_embeddings_merger: the ViT blocks and the merger(s). `hidden_states` [N, hidden] (patches plus
  positions), `attention_mask` [1, N, N] (0 within an image, −inf across), `rotary_pos_emb` [N, head_dim/2]
  (GenAI's 2-D rope angles: the row's h frequencies then its w frequencies; GenAI reads their count
  from this input's static second dimension) → `last_hidden_state` [N/4, out_hidden] and, for Qwen3-VL,
  `deepstack_feature_lists` [n_deepstack, N/4, out_hidden] for the language model's first layers.

Everything GenAI computes in C++ (patch order, rope angles, the block-diagonal mask, the position
table's interpolation) stays out of the graphs; the graphs are what transformers' Qwen3VLVisionModel
does between those points, as optimum-intel's Qwen3VLVisionEmbMergerPatcher exports it.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import apply_rope, embedding, linear, split_heads, vector
from .blocks import TowerWeights, activation, encoder_attention, layer_norm

# transformers' Qwen3VLVisionConfig / Qwen3_5VisionConfig defaults, for keys a config.json leaves out.
DEFAULTS = dict(depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304, num_heads=16,
                in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=3584,
                num_position_embeddings=2304)
DEEPSTACK_DEFAULT = {"qwen3_vl": [8, 16, 24], "qwen3_5": [], "qwen3_5_moe": []}
PREFIX = "model.visual."
NORM_EPS = 1e-6  # every LayerNorm of the tower (nn.LayerNorm(..., eps=1e-6))
GENAI_ROPE_THETA = 10000.0  # get_rotary_pos_emb in qwen2vl/classes.cpp


def vision_args(config: dict) -> dict:
    """The vision_config with transformers' defaults filled in; `deepstack` the block indexes whose
    outputs feed Qwen3-VL's deepstack mergers (none for Qwen3.5)."""
    model_type = config.get("model_type")
    if model_type not in DEEPSTACK_DEFAULT:
        raise ValueError(f"no Qwen vision tower for model_type {model_type!r}")
    vision = {**DEFAULTS, **(config.get("vision_config") or {})}
    deepstack = vision.get("deepstack_visual_indexes", DEEPSTACK_DEFAULT[model_type])
    vision["deepstack"] = list(deepstack) if model_type == "qwen3_vl" else []
    if vision["temporal_patch_size"] != 2:
        raise ValueError("GenAI asserts temporal_patch_size == 2 for Qwen vision towers")
    theta = (vision.get("rope_parameters") or {}).get("rope_theta", GENAI_ROPE_THETA)
    if theta != GENAI_ROPE_THETA:  # GenAI computes the rope angles in C++ with a fixed base
        raise ValueError(f"GenAI's Qwen vision rope has theta {GENAI_ROPE_THETA:g}; this tower's is {theta:g}")
    vision["head_dim"] = vision["hidden_size"] // vision["num_heads"]
    return vision


def qwen_vision(config: dict, weights, compress) -> dict[str, ov.Model]:
    """The tower's three models by GenAI role, from `config` (the whole config.json) and the
    `model.visual.*` tensors of `weights` (transformers 4.x's `visual.*` too), each taken as used;
    every projection passes through `compress(name, tensor, "linear")`, the position table through
    `compress(name, tensor, "embedding")`."""
    args = vision_args(config)
    weights.rename_prefix("visual.", PREFIX)
    w = TowerWeights(weights, PREFIX, compress)
    models = {
        "vision_embeddings": patch_embedding(w, args),
        "vision_embeddings_pos": position_table(w, args),
        "vision_embeddings_merger": blocks_and_mergers(w, args),
    }
    left = [name for name in weights if name.startswith(PREFIX)]
    if left:
        raise ValueError(f"vision tensors the Qwen tower does not use: {', '.join(sorted(left))}")
    return models


def _named(output: ov.Output, name: str) -> ov.Output:
    output.get_tensor().set_names({name})
    return output


def _parameter(shape, dtype, name: str):
    param = ops.parameter(shape, dtype, name=name)
    _named(param.output(0), name)
    return param


def _model(outputs: dict[str, ov.Output], params, name: str) -> ov.Model:
    results = [ops.result(_named(out, key)) for key, out in outputs.items()]
    return ov.Model(results, params, name)


def patch_embedding(w: TowerWeights, args: dict) -> ov.Model:
    """The Conv3d whose kernel equals its stride, i.e. one matrix product per patch: its weight
    [hidden, C, T, p, p] flattened to [hidden, C·T·p²] matches the processor's patch layout."""
    patch_dim = args["in_channels"] * args["temporal_patch_size"] * args["patch_size"] ** 2
    patches = _parameter([-1, patch_dim], np.float32, "hidden_states")
    name = PREFIX + "patch_embed.proj.weight"
    kernel = w["patch_embed.proj.weight"]
    kernel = w.compress(name, kernel.reshape(kernel.shape[0], patch_dim), "linear")
    embedded = linear(patches, kernel, w["patch_embed.proj.bias"], name=PREFIX + "patch_embed.proj")
    return _model({"last_hidden_state": embedded}, [patches], "vision_embeddings")


def position_table(w: TowerWeights, args: dict) -> ov.Model:
    """The learned position table's rows for the bilinear corners GenAI picks on its √n × √n grid."""
    corners = _parameter([4, -1], np.int64, "input")
    name = PREFIX + "pos_embed.weight"
    table = w.compress(name, w["pos_embed.weight"], "embedding")
    rows = embedding(table, corners, name=PREFIX + "pos_embed")
    return _model({"last_hidden_state": rows}, [corners], "vision_embeddings_pos")


def rope_tables(angles) -> tuple[ov.Output, ov.Output]:
    """cos and sin [N, 1, head_dim] of GenAI's angles [N, head_dim/2] repeated over both halves
    (the vision rope rotates the whole head), broadcast over the heads."""
    emb = ops.unsqueeze(ops.concat([angles, angles], axis=-1), vector([1]))
    return ops.cos(emb).output(0), ops.sin(emb).output(0)


def attention(x, cos, sin, mask, w: TowerWeights, args: dict) -> ov.Output:
    """Bidirectional attention within each image (the mask), q and k rotated by the 2-D rope; the
    fused qkv projection's output is [q | k | v], each heads × head_dim."""
    heads, head_dim = args["num_heads"], args["head_dim"]
    q, k, v = ops.split(w.linear(x, "attn.qkv"), -1, 3).outputs()

    def rotated(t):
        t = apply_rope(split_heads(t, heads, head_dim), cos, sin, head_dim, head_dim)
        return ops.reshape(t, vector([0, 0, heads * head_dim]), special_zero=True).output(0)

    out = encoder_attention(rotated(q), rotated(k), v, heads, mask)
    return w.linear(out, "attn.proj")


def vision_block(x, cos, sin, mask, w: TowerWeights, args: dict) -> ov.Output:
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
    h = layer_norm(x, w["norm1.weight"], w["norm1.bias"], NORM_EPS)
    x = ops.add(x, attention(h, cos, sin, mask, w, args)).output(0)
    h = layer_norm(x, w["norm2.weight"], w["norm2.bias"], NORM_EPS)
    h = w.linear(activation(w.linear(h, "mlp.linear_fc1"), args["hidden_act"]), "mlp.linear_fc2")
    return ops.add(x, h).output(0)


def patch_merger(x, w: TowerWeights, args: dict, postshuffle_norm: bool) -> ov.Output:
    """Each merge window's merge² patches (consecutive rows) concatenated into one token, then a
    GELU MLP to the language model's width. The final merger normalizes each patch before the
    concatenation; the deepstack mergers normalize the concatenated token."""
    merged = args["hidden_size"] * args["spatial_merge_size"] ** 2
    gamma, beta = w["norm.weight"], w["norm.bias"]
    if not postshuffle_norm:
        x = layer_norm(x, gamma, beta, NORM_EPS)
    x = ops.reshape(x, vector([-1, merged]), special_zero=False).output(0)
    if postshuffle_norm:
        x = layer_norm(x, gamma, beta, NORM_EPS)
    x = activation(w.linear(x, "linear_fc1"), "gelu")
    return w.linear(x, "linear_fc2")


def blocks_and_mergers(w: TowerWeights, args: dict) -> ov.Model:
    """The ViT blocks over every image's patches at once (the mask keeps images apart), the final
    merger and, after the blocks `args["deepstack"]` names, Qwen3-VL's deepstack mergers."""
    hidden_states = _parameter([-1, args["hidden_size"]], np.float32, "hidden_states")
    mask = _parameter([1, -1, -1], np.float32, "attention_mask")
    angles = _parameter([-1, args["head_dim"] // 2], np.float32, "rotary_pos_emb")
    cos, sin = rope_tables(angles)

    x = ops.unsqueeze(hidden_states, vector([0])).output(0)  # [1, N, hidden]: one sequence of all patches
    deepstack = []
    for i in range(args["depth"]):
        x = vision_block(x, cos, sin, mask, w.sub(f"blocks.{i}."), args)
        if i in args["deepstack"]:
            ds = args["deepstack"].index(i)
            deepstack.append(patch_merger(x, w.sub(f"deepstack_merger_list.{ds}."), args, postshuffle_norm=True))
    outputs = {"last_hidden_state": patch_merger(x, w.sub("merger."), args, postshuffle_norm=False)}
    if deepstack:
        stacked = ops.concat([ops.unsqueeze(d, vector([0])) for d in deepstack], axis=0)
        outputs["deepstack_feature_lists"] = stacked.output(0)
    return _model(outputs, [hidden_states, mask, angles], "vision_embeddings_merger")
