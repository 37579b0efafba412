"""convert.vision.qwen against transformers: tiny random Qwen3.5 and Qwen3-VL checkpoints, real RGB
images through transformers' PIL image processor, and the three IRs run with GenAI's C++ glue
re-done in numpy (visual_language/qwen2vl and qwen3_vl classes.cpp): patches in merge-window order,
the position table's bilinear corners and weights, their weighted sum permuted by merge window and
added to the patch embeddings, the 2-D rope angles, the block-diagonal additive mask."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
import torch
import transformers

from convert.compress import WeightCompression
from convert.graph import keep
from convert.sources import Checkpoint
from convert.vision.qwen import qwen_vision

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=256, initializer_range=0.2)
QWEN3_5_TEXT = dict(TEXT, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=8, linear_conv_kernel_dim=4,
                    layer_types=["linear_attention", "full_attention"])
VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, spatial_merge_size=2, temporal_patch_size=2,
              out_hidden_size=64, initializer_range=0.2)
# model_type → (config, images' (height, width): multiples of patch·merge, so the processor keeps their size)
CASES = {
    "qwen3_5": (lambda: transformers.Qwen3_5Config(
        text_config=QWEN3_5_TEXT, vision_config=dict(VISION, patch_size=16, num_position_embeddings=64)),
        [(64, 96), (96, 128)]),
    "qwen3_vl": (lambda: transformers.Qwen3VLConfig(
        text_config=TEXT, vision_config=dict(VISION, patch_size=14, num_position_embeddings=16,
                                             deepstack_visual_indexes=[0, 1])),
        [(56, 84), (84, 112)]),
}
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(checkpoint path, config.json, the transformers model, image sizes) for one model type; the
    tower's biases and norms randomized too (transformers initialises them to 0 and 1)."""
    model_type = request.param
    make_config, sizes = CASES[model_type]
    torch.manual_seed(0)
    model = transformers.AutoModelForImageTextToText.from_config(make_config()).eval()
    with torch.no_grad():
        for name, param in model.model.visual.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2)
            elif "norm" in name:
                param.normal_(1, 0.2)
    path = tmp_path_factory.mktemp(model_type)
    model.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == model_type
    return path, config, model, sizes


def gradient_image(height: int, width: int) -> np.ndarray:
    """An RGB uint8 image [H, W, 3]: horizontal, vertical and diagonal ramps."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / (width - 1), y / (height - 1), ((x + 2 * y) % 37) / 36], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def processor(vision: dict):
    """transformers' PIL image processor as the checkpoint's preprocessor_config would set it up, with
    a pixel range that keeps the test images' size."""
    return transformers.Qwen2VLImageProcessorPil(
        patch_size=vision["patch_size"], temporal_patch_size=2, merge_size=vision["spatial_merge_size"],
        size={"shortest_edge": 16 * 16, "longest_edge": 1024 * 1024})


# --- GenAI's C++ glue, in numpy -------------------------------------------------------------------------------

def genai_patches(image: np.ndarray, proc, vision: dict) -> tuple[np.ndarray, tuple[int, int, int]]:
    """encode_with_imagepreprocess_cpp: normalize, the image twice as two frames, the 9-D reshape and its
    transpose (0, 3, 6, 4, 7, 2, 1, 5, 8): patches in merge-window order, each flattened (C, T, p, p)."""
    p, m, t = vision["patch_size"], vision["spatial_merge_size"], 2
    x = (image.astype(np.float32) / 255 - np.float32(proc.image_mean)) / np.float32(proc.image_std)
    frames = np.stack([x.transpose(2, 0, 1)] * t)  # [T, C, H, W]
    c, h, w = frames.shape[1:]
    gh, gw = h // p, w // p
    patches = frames.reshape(1, t, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(patches.reshape(gh * gw, c * t * p * p)), (1, gh, gw)


def genai_pos_indices_weights(grids, num_position_embeddings: int) -> tuple[np.ndarray, np.ndarray]:
    """get_position_interpolation_indices_and_weights: the four corners (floor/ceil of h, of w) of each
    patch on the table's √n grid, in row-major patch order, and their bilinear weights, in f32."""
    side = int(np.sqrt(num_position_embeddings))
    indices, weights = [], []
    for t, h, w in grids:
        h_idx = np.arange(h, dtype=np.float32) * (np.float32(side - 1) / np.float32(h - 1) if h > 1 else np.float32(0))
        w_idx = np.arange(w, dtype=np.float32) * (np.float32(side - 1) / np.float32(w - 1) if w > 1 else np.float32(0))
        hf, wf = h_idx.astype(np.int64), w_idx.astype(np.int64)
        hc, wc = np.minimum(hf + 1, side - 1), np.minimum(wf + 1, side - 1)
        dh, dw = (h_idx - hf)[:, None], (w_idx - wf)[None, :]
        corners = [hf[:, None] * side + wf, hf[:, None] * side + wc, hc[:, None] * side + wf, hc[:, None] * side + wc]
        bilinear = [(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw]
        for _ in range(t):
            indices.append(np.stack([np.broadcast_to(c, (h, w)).reshape(-1) for c in corners]))
            weights.append(np.stack([np.broadcast_to(b, (h, w)).reshape(-1) for b in bilinear]).astype(np.float32))
    return np.concatenate(indices, axis=1), np.concatenate(weights, axis=1)


def merge_window_order(grids, merge: int) -> np.ndarray:
    """permute_with_spatial_merge_and_add's source row for each destination row: row-major patches
    reordered by merge window."""
    order, offset = [], 0
    for t, h, w in grids:
        grid = np.arange(t * h * w).reshape(t, h // merge, merge, w // merge, merge).transpose(0, 1, 3, 2, 4)
        order.append(grid.reshape(-1) + offset)
        offset += t * h * w
    return np.concatenate(order)


def genai_rotary(grids, merge: int, dim: int) -> np.ndarray:
    """get_rotary_pos_emb: per patch (merge-window order) the h position's dim/2 angles then the w
    position's, theta 10000, inverse frequencies θ^(−i/(dim/2)) in f32."""
    inv_freq = (1.0 / np.power(np.float32(10000), np.arange(dim // 2, dtype=np.float32) / np.float32(dim // 2)))
    inv_freq = inv_freq.astype(np.float32)
    rows = []
    for t, h, w in grids:
        hpos = np.arange(h).reshape(h // merge, merge, 1, 1).repeat(w // merge, 2).repeat(merge, 3)
        wpos = np.arange(w).reshape(1, 1, w // merge, merge).repeat(h // merge, 0).repeat(merge, 1)
        hpos, wpos = hpos.transpose(0, 2, 1, 3).reshape(-1), wpos.transpose(0, 2, 1, 3).reshape(-1)
        for _ in range(t):
            rows.append(np.concatenate([hpos[:, None] * inv_freq, wpos[:, None] * inv_freq], axis=1))
    return np.concatenate(rows).astype(np.float32)


def genai_mask(grids) -> np.ndarray:
    """get_attention_mask: [1, N, N], 0 within each image (each frame of a video), −inf elsewhere."""
    lengths = [h * w for t, h, w in grids for _ in range(t)]
    mask = np.full((sum(lengths), sum(lengths)), -np.inf, np.float32)
    start = 0
    for n in lengths:
        mask[start:start + n, start:start + n] = 0
        start += n
    return mask[None]


def run_genai(compiled: dict, images, proc, vision: dict, config: dict) -> dict[str, np.ndarray]:
    """The tower's outputs for `images` as VLMPipeline computes them around the three IRs."""
    merge = vision["spatial_merge_size"]
    embeds, grids = [], []
    for image in images:  # each image is encoded on its own, then the embeddings are concatenated
        patches, grid = genai_patches(image, proc, vision)
        embeds.append(compiled["vision_embeddings"]({"hidden_states": patches})[0])
        grids.append(grid)
    hidden = np.concatenate(embeds)

    indices, weights = genai_pos_indices_weights(grids, vision["num_position_embeddings"])
    corners = compiled["vision_embeddings_pos"]({"input": indices})[0]  # [4, N, D]
    weighted = sum(corners[i] * weights[i][:, None] for i in range(4))
    hidden = hidden + weighted[merge_window_order(grids, merge)]

    merger = compiled["vision_embeddings_merger"]
    dim = merger.create_infer_request().get_tensor("rotary_pos_emb").get_shape()[1]
    out = merger({"hidden_states": hidden, "attention_mask": genai_mask(grids),
                  "rotary_pos_emb": genai_rotary(grids, merge, dim)})
    result = {"last_hidden_state": out["last_hidden_state"]}
    if config["model_type"] == "qwen3_vl":
        result["deepstack_feature_lists"] = out["deepstack_feature_lists"]
    return result


# --- the tests ------------------------------------------------------------------------------------------------

def build(path, config, compress=keep, rename=None):
    weights = Checkpoint(path, config).weights()
    if rename:
        weights.rename_prefix(*rename)
    models = qwen_vision(config, weights, compress)
    assert not [n for n in weights if "visual." in n], "vision tensors left unused"
    return models


def compile_all(models) -> dict:
    core = ov.Core()
    return {role: core.compile_model(model, "CPU", F32) for role, model in models.items()}


def reference(model, images, proc) -> tuple[dict[str, np.ndarray], dict]:
    inputs = proc(images=list(images), return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    ref = {"last_hidden_state": torch.cat(out.pooler_output).numpy()}
    if getattr(out, "deepstack_features", None):
        ref["deepstack_feature_lists"] = np.stack([torch.cat(f).numpy() for f in out.deepstack_features])
    return ref, inputs


def relative_error(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_interfaces(case):
    """Names, element types and shapes GenAI relies on: one parameter on the patch embedding, the pos
    model's `input` and single rank-3 output, the merger's inputs with a static rope width, f32 outputs."""
    path, config, model, _ = case
    vision = config["vision_config"]
    models = build(path, config)
    hidden, head_dim = vision["hidden_size"], vision["hidden_size"] // vision["num_heads"]
    patch_dim = 3 * 2 * vision["patch_size"] ** 2

    embed = models["vision_embeddings"]
    assert [p.get_friendly_name() for p in embed.get_parameters()] == ["hidden_states"]
    assert embed.input("hidden_states").get_partial_shape() == ov.PartialShape([-1, patch_dim])
    assert embed.output(0).get_partial_shape() == ov.PartialShape([-1, hidden])

    pos = models["vision_embeddings_pos"]
    assert pos.input("input").get_element_type() == ov.Type.i64
    assert len(pos.outputs) == 1 and pos.output(0).get_partial_shape() == ov.PartialShape([4, -1, hidden])

    merger = models["vision_embeddings_merger"]
    assert merger.input("hidden_states").get_partial_shape() == ov.PartialShape([-1, hidden])
    assert merger.input("attention_mask").get_partial_shape() == ov.PartialShape([1, -1, -1])
    rope = merger.input("rotary_pos_emb").get_partial_shape()
    assert rope[1].is_static and rope[1].get_length() == head_dim // 2
    names = {o.get_any_name() for o in merger.outputs}
    expected = {"last_hidden_state"} | ({"deepstack_feature_lists"} if config["model_type"] == "qwen3_vl" else set())
    assert names == expected
    for m in models.values():
        assert all(o.get_element_type() == ov.Type.f32 for o in m.outputs)
    # GenAI reads the rope width from a fresh request's tensor: 0 if the dimension were dynamic.
    compiled = ov.Core().compile_model(merger, "CPU", F32)
    assert compiled.create_infer_request().get_tensor("rotary_pos_emb").get_shape()[1] == head_dim // 2


@pytest.mark.parametrize("count", [1, 2])
def test_matches_transformers(case, count):
    """One image, then two of different sizes at once: the final embeddings (and Qwen3-VL's deepstack
    features) equal transformers' get_image_features."""
    path, config, model, sizes = case
    vision = config["vision_config"]
    proc = processor(vision)
    images = [gradient_image(*size) for size in sizes[:count]]
    ref, inputs = reference(model, images, proc)

    # the numpy patchify is the processor's layout (sizes kept, so no resampling is involved)
    patches = np.concatenate([genai_patches(image, proc, vision)[0] for image in images])
    np.testing.assert_allclose(patches, inputs["pixel_values"].numpy(), atol=1e-5)
    assert [list(genai_patches(im, proc, vision)[1]) for im in images] == inputs["image_grid_thw"].tolist()

    got = run_genai(compile_all(build(path, config)), images, proc, vision, config)
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        assert relative_error(got[name], ref[name]) < 1e-4, name


def test_int8_and_legacy_names(case):
    """With NNCF's int8 hook (and the checkpoint under transformers 4.x's `visual.*` names) the
    projections are stored in int8 and the embeddings stay close to transformers'."""
    path, config, model, sizes = case
    vision = config["vision_config"]
    proc = processor(vision)
    images = [gradient_image(*size) for size in sizes]
    ref, _ = reference(model, images, proc)

    compress = WeightCompression("int8", -1, 1.0, False).compress
    models = build(path, config, compress, rename=("model.visual.", "visual."))
    int8 = [op for op in models["vision_embeddings_merger"].get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)]
    assert len(int8) >= 4 * vision["depth"]
    got = run_genai(compile_all(models), images, proc, vision, config)
    for name in ref:
        a, b = got[name].reshape(-1), ref[name].reshape(-1)
        cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert cosine > 0.999, (name, cosine)
