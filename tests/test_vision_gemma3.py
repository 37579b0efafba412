"""Gemma 3's vision tower (SigLIP + Gemma3MultiModalProjector) as convert/vision/siglip.py builds it,
against transformers' Gemma3Model.get_image_features on a tiny random checkpoint: the same pixel values
must give the same image embeddings, whatever layout the checkpoint names its tensors in."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
import torch
import transformers

from convert.graph import keep
from convert.sources import Checkpoint
from convert.vision.siglip import gemma3_vision

# 56 / 14 = 4×4 patches, pooled 2×2 into 4 image tokens.
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56,
              patch_size=14)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=300)
TOKENS_PER_IMAGE = 4
VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")

# The names each source writes, from the names transformers 5.25's save_pretrained gives a model it built
# (vision_tower.*, multi_modal_projector.*; SiglipVisionModel has no vision_model level any more).
LAYOUTS = {
    "transformers-5-saved": {},
    "google": {"vision_tower.": "model.vision_tower.vision_model.",
               "multi_modal_projector.": "model.multi_modal_projector."},
    "transformers-5-in-memory": {"vision_tower.": "model.vision_tower.",
                                 "multi_modal_projector.": "model.multi_modal_projector."},
    "transformers-4": {"vision_tower.": "vision_tower.vision_model."},
}


def tiny_gemma3(dtype=torch.float32) -> transformers.Gemma3ForConditionalGeneration:
    """A tiny Gemma 3 whose vision weights are all random and of order one: transformers initialises
    biases, the projection and the Gemma norm to zero, which would test nothing."""
    config = transformers.Gemma3Config(text_config=TEXT, vision_config=VISION, mm_tokens_per_image=TOKENS_PER_IMAGE,
                                       boi_token_index=297, eoi_token_index=298, image_token_index=299)
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "vision_tower" not in name and "multi_modal_projector" not in name:
                continue
            if "layer_norm" in name or "layernorm" in name:
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
            else:
                param.normal_(0.0, 0.2)
    return model.to(dtype)


def image_features(model, pixel_values: np.ndarray) -> np.ndarray:
    """transformers' reference: get_image_features' pooler_output, in f32."""
    with torch.no_grad():
        return model.float().model.get_image_features(torch.from_numpy(pixel_values)).pooler_output.numpy()


def save(model, path):
    model.save_pretrained(path)
    return path


def convert(path, layout: dict | None = None, compress=keep) -> ov.Model:
    """The vision IR from the checkpoint at `path`, its tensors renamed to `layout` first; every vision
    tensor must have been used."""
    checkpoint = Checkpoint(path, json.loads((path / "config.json").read_text()))
    weights = checkpoint.weights()
    for old, new in (layout or {}).items():
        weights.rename_prefix(old, new)
    model = gemma3_vision(checkpoint.config, weights, compress)
    assert not [name for name in weights if name.startswith(VISION_PREFIXES)]
    return model


def run(model: ov.Model, pixel_values: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"pixel_values": pixel_values})["last_hidden_state"]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    scale = np.abs(expected).max()
    assert scale > 0.1  # not vanishing, so the comparison means something
    assert np.abs(actual - expected).max() < 1e-4 * scale


def random_pixels(batch: int, seed: int = 1) -> np.ndarray:
    """Pixel values as GenAI feeds them: an image normalised with mean and std 0.5, so in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 3, 56, 56)).astype(np.float32)


@pytest.fixture(scope="module")
def hf_model():
    return tiny_gemma3()


@pytest.fixture(scope="module")
def checkpoint(hf_model, tmp_path_factory):
    return save(hf_model, tmp_path_factory.mktemp("gemma3-vision"))


@pytest.fixture(scope="module")
def ir(checkpoint):
    return convert(checkpoint)


def test_contract(ir):
    """What GenAI's gemma3 VisionEncoder needs: `pixel_values` [B, 3, H, W] with B, H, W dynamic, one
    f32 output [B, image tokens, text hidden] named as optimum names it."""
    (pixel_values,) = ir.inputs
    assert pixel_values.get_names() == {"pixel_values"}
    assert pixel_values.get_element_type() == ov.Type.f32
    assert str(pixel_values.get_partial_shape()) == "[?,3,?,?]"
    (output,) = ir.outputs
    assert "last_hidden_state" in output.get_names()
    assert output.get_element_type() == ov.Type.f32
    assert str(output.get_partial_shape()) == f"[?,{TOKENS_PER_IMAGE},{TEXT['hidden_size']}]"


def test_random_pixels(ir, hf_model):
    pixels = random_pixels(1)
    assert_close(run(ir, pixels), image_features(hf_model, pixels))


def test_batch_of_two_images(ir, hf_model):
    pixels = random_pixels(2, seed=2)
    out = run(ir, pixels)
    assert_close(out, image_features(hf_model, pixels))
    assert np.abs(out[0] - out[1]).max() > 0.1  # each image its own embeddings


def test_real_image(ir, hf_model):
    """A photo through transformers' own Gemma 3 preprocessing (resize, /255, mean and std 0.5)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB")
    processor = transformers.Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    pixels = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
    assert pixels.shape == (1, 3, 56, 56)
    assert_close(run(ir, pixels), image_features(hf_model, pixels))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tensor_name_layouts(checkpoint, hf_model, layout):
    pixels = random_pixels(1, seed=3)
    assert_close(run(convert(checkpoint, LAYOUTS[layout]), pixels), image_features(hf_model, pixels))


def test_bf16_checkpoint(tmp_path):
    """bf16 weights are read as stored and computed in f32, as transformers does with them widened."""
    model = tiny_gemma3(torch.bfloat16)
    ir = convert(save(model, tmp_path))
    pixels = random_pixels(1, seed=4)
    assert_close(run(ir, pixels), image_features(model, pixels))


def test_int8_weights(checkpoint, hf_model):
    """Every projection, the patch embedding's kernel included, goes through the compress hook; int8 per
    channel keeps the embeddings' direction."""
    from convert.compress import WeightCompression

    ir = convert(checkpoint, compress=WeightCompression("int8", -1, 1.0, False).compress)
    int8 = [op for op in ir.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.u8]
    # q, k, v, out, fc1, fc2 per layer, the patch embedding and the projection
    assert len(int8) >= 6 * VISION["num_hidden_layers"] + 2
    pixels = random_pixels(2, seed=5)
    out, expected = run(ir, pixels).ravel(), image_features(hf_model, pixels).ravel()
    cosine = out @ expected / (np.linalg.norm(out) * np.linalg.norm(expected))
    assert cosine > 0.999
