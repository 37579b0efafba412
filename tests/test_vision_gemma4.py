"""Gemma 4's vision embeddings IR (convert/vision/gemma4.py) against transformers' get_image_features on a
tiny random Gemma4ForConditionalGeneration, fed a real photo as GenAI's C++ (gemma4/classes.cpp) cuts it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from convert.graph import keep  # noqa: E402
from convert.sources import Checkpoint  # noqa: E402
from convert.vision.gemma4 import gemma4_vision  # noqa: E402

PATCH, KERNEL, MAX_SOFT_TOKENS = 16, 3, 70  # 70: the smallest budget HF's processor allows


def genai_size(height: int, width: int) -> tuple[int, int]:
    """get_aspect_ratio_preserving_size of gemma4/classes.cpp: ≈ max_patches·p² pixels, sides multiples of k·p."""
    max_patches = MAX_SOFT_TOKENS * KERNEL**2
    factor = math.sqrt(max_patches * PATCH**2 / (height * width))
    side = KERNEL * PATCH
    return int(math.floor(factor * height / side)) * side, int(math.floor(factor * width / side)) * side


def genai_inputs(resized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """extract_patches and the position ids of gemma4/classes.cpp for an HWC u8 image already resized:
    /255, patches row-major, each patch's pixels HWC, padded with zeros (positions −1) to max_patches."""
    height, width, _ = resized.shape
    rows, cols = height // PATCH, width // PATCH
    max_patches = MAX_SOFT_TOKENS * KERNEL**2
    image = resized.astype(np.float32) / np.float32(255.0)
    patches = image.reshape(rows, PATCH, cols, PATCH, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)
    pixel_values = np.zeros((1, max_patches, 3 * PATCH**2), np.float32)
    pixel_values[0, :rows * cols] = patches
    positions = np.full((1, max_patches, 2), -1, np.int64)
    for py in range(rows):
        for px in range(cols):
            positions[0, py * cols + px] = (px, py)
    return pixel_values, positions


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """scikit-learn's sample photo (427×640 RGB; scikit-learn comes with NNCF)."""
    from PIL import Image

    sklearn = pytest.importorskip("sklearn")
    return np.asarray(Image.open(Path(sklearn.__file__).parent / "datasets/images/china.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Gemma 4 with a vision tower (clipped linears, some bounds finite, standardize on),
    saved as a checkpoint; returns (directory, the torch model)."""
    torch.manual_seed(0)
    config = transformers.Gemma4Config(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, global_head_dim=32, hidden_size_per_layer_input=8,
                         vocab_size=300, vocab_size_per_layer_input=300, sliding_window=16,
                         layer_types=["sliding_attention", "full_attention"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, head_dim=16, patch_size=PATCH, pooling_kernel_size=KERNEL,
                           position_embedding_size=64, use_clipped_linears=True, standardize=True,
                           initializer_range=0.2),
        audio_config=None, initializer_range=0.2)
    model = transformers.Gemma4ForConditionalGeneration(config).eval()
    tower = model.model.vision_tower
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("norm.weight"):  # ones at init: make each norm's scale count
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=generator))
        tower.std_bias.copy_(0.5 * torch.randn(tower.std_bias.shape, generator=generator))
        tower.std_scale.copy_(1 + 0.3 * torch.randn(tower.std_scale.shape, generator=generator))
        # Layer 0's clippable linears clamp (bounds that bind on some values); layer 1 keeps ±inf.
        for name, module in tower.encoder.layers[0].named_modules():
            if hasattr(module, "input_min"):
                module.input_min.fill_(-1.5), module.input_max.fill_(1.2)
                module.output_min.fill_(-1.0), module.output_max.fill_(0.8)
    path = tmp_path_factory.mktemp("gemma4-vision")
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def inputs(photo, tiny):
    """What GenAI feeds for the photo, checked against HF's own processor on the same resized pixels."""
    from PIL import Image

    height, width = genai_size(*photo.shape[:2])
    resized = np.asarray(Image.fromarray(photo).resize((width, height), Image.BICUBIC))
    pixel_values, positions = genai_inputs(resized)

    processor = transformers.Gemma4ImageProcessorPil(max_soft_tokens=MAX_SOFT_TOKENS, patch_size=PATCH,
                                                     pooling_kernel_size=KERNEL)
    hf = processor(Image.fromarray(resized), return_tensors="np")  # already the target size: not resized again
    assert (height, width) == (288, 480) and (hf["image_position_ids"] == positions).all()
    np.testing.assert_allclose(hf["pixel_values"], pixel_values, rtol=0, atol=1e-7)
    return pixel_values, positions


def reference(model, pixel_values, positions) -> np.ndarray:
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=torch.from_numpy(pixel_values),
                                             image_position_ids=torch.from_numpy(positions))
    return torch.cat(out.pooler_output).numpy()


def run(path: Path, compress, pixel_values, positions) -> np.ndarray:
    checkpoint = Checkpoint(path, json.loads((path / "config.json").read_text()))
    weights = checkpoint.weights()
    model = gemma4_vision(checkpoint.config, weights, compress)
    left = [name for name in weights if name.startswith(("model.vision_tower.", "model.embed_vision."))]
    assert not left, left
    params = [(p.get_friendly_name(), str(p.get_partial_shape()), p.get_element_type()) for p in model.get_parameters()]
    assert params == [("pixel_values", "[1,?,768]", ov.Type.f32), ("image_position_ids", "[1,?,2]", ov.Type.i64)]
    assert model.output(0).get_any_name() == "last_hidden_state" and model.output(0).get_element_type() == ov.Type.f32
    ov.save_model(model, path / "vision.xml", compress_to_fp16=False)  # as convert writes f32 and int8 IRs
    compiled = ov.Core().compile_model(path / "vision.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"pixel_values": pixel_values, "image_position_ids": positions})[0]


def test_matches_transformers(tiny, inputs):
    path, model = tiny
    expected = reference(model, *inputs)
    got = run(path, keep, *inputs)
    assert expected.shape == got.shape == (60, 64)  # 18×30 patches → 6×10 soft tokens, text width
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_padding_rows_do_not_matter(tiny, inputs):
    """A frame's smaller budget (video: 70 where images have 280) or more padding gives the same tokens."""
    path, model = tiny
    pixel_values, positions = inputs
    padded_pixels = np.concatenate([pixel_values, np.random.default_rng(0).random((1, 99, 768), np.float32)], 1)
    padded_positions = np.concatenate([positions, np.full((1, 99, 2), -1, np.int64)], 1)
    got = run(path, keep, padded_pixels, padded_positions)
    expected = reference(model, *inputs)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_int8_weights_stay_close(tiny, inputs):
    from convert.compress import WeightCompression

    path, model = tiny
    expected = reference(model, *inputs).ravel()
    got = run(path, WeightCompression("int8", -1, 1.0, False).compress, *inputs).ravel()
    cosine = float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine > 0.999, cosine
