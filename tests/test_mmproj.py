"""A vision-language model as llama.cpp ships it, a model GGUF plus an mmproj GGUF, converted with --mmproj
into GenAI's multimodal layout: both files written with gguf-py from the tiny "gemma3-vision" checkpoint the
way llama.cpp's converter writes them (tensor names from gguf's own MMPROJ name map, its tensor types, its
clip.* metadata), then checked against the conversion of the HF checkpoint itself: the vision IR on the same
pixels, and VLMPipeline's greedy answer about an image."""

from __future__ import annotations

import json
import os
import shutil

import gguf
import numpy as np
import openvino as ov
import openvino_genai
import pytest
from safetensors.numpy import load_file, save_file

import smollm2
from conftest import run_ovchat
from gguf_files import write_gguf
from test_convert import assert_clean_failure
from vision_checkpoints import make_vlm_checkpoint

EXACT = dict(ATTENTION_BACKEND="SDPA", INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32",
             DYNAMIC_QUANTIZATION_GROUP_SIZE="0")
Q8_0_BLOCKS = {kind: "Q8_0" for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
                                         "token_embd")}


@pytest.fixture(scope="module")
def vlm(tmp_path_factory, smollm2_checkpoint):
    """The tiny Gemma 3 VLM as llama.cpp runs a Gemma 3 of its size: llama.cpp makes every 6th layer full
    attention and scales scores by 1/√head_dim whatever the file says, so the reference checkpoint says so
    too (both layers sliding, query_pre_attn_scalar = head_dim); its window is widened past the prompts so
    the answer sees the image and the question (with 8, only the turn's last tokens). Weights the variant's."""
    out = make_vlm_checkpoint("gemma3-vision", tmp_path_factory.mktemp("gemma3-vision"), smollm2_checkpoint)
    config = json.loads((out / "config.json").read_text())
    text = config["text_config"]
    text.update(layer_types=["sliding_attention"] * text["num_hidden_layers"], query_pre_attn_scalar=text["head_dim"],
                sliding_window=256)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _tensors(checkpoint) -> dict[str, np.ndarray]:
    return load_file(checkpoint / "model.safetensors")


def _tokenizer_gguf(checkpoint, out):
    """SmolLM2's GGUF tokenizer with the checkpoint's added tokens (the image tokens) appended as CONTROL
    tokens, as a Gemma 3 GGUF's vocabulary has them, and the checkpoint's chat template."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    source = gguf.GGUFReader(smollm2.gguf_dir() / smollm2.GGUF_NAME)
    tokens = list(source.fields["tokenizer.ggml.tokens"].contents())
    token_types = list(source.fields["tokenizer.ggml.token_type"].contents())
    added = sorted((i, t.content) for i, t in tokenizer.added_tokens_decoder.items() if i >= len(tokens))
    assert [i for i, _ in added] == list(range(len(tokens), len(tokenizer)))
    tokens += [content for _, content in added]
    token_types += [gguf.TokenType.CONTROL] * len(added)
    writer = gguf.GGUFWriter(out, "gemma3")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
        writer.add_string(key, source.fields[key].contents())
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.token_type", [int(t) for t in token_types])
    writer.add_array("tokenizer.ggml.merges", source.fields["tokenizer.ggml.merges"].contents())
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        writer.add_uint32(f"tokenizer.ggml.{key}", getattr(tokenizer, key.replace("padding", "pad")))
    writer.add_string("tokenizer.chat_template", tokenizer.chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write_model_gguf(checkpoint, out, block_types: dict[str, str]):
    """The language model as llama.cpp's converter writes a Gemma 3 VLM's: the text config and the
    language_model tensors, through gguf_files.write_gguf."""
    text_dir = out.parent / f"{out.stem}-text"
    text_dir.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    (text_dir / "config.json").write_text(json.dumps(config["text_config"]))
    prefix = "language_model."
    save_file({name[len(prefix):]: tensor for name, tensor in _tensors(checkpoint).items() if name.startswith(prefix)},
              text_dir / "model.safetensors")
    tokenizer = _tokenizer_gguf(checkpoint, out.parent / f"{out.stem}-tokenizer.gguf")
    return write_gguf(text_dir, out, tokenizer, block_types)


def mmproj_type(name: str, tensor: np.ndarray, outtype: str) -> str:
    """The type llama.cpp's converter gives a Gemma 3 mmproj tensor (HF name): 1-D tensors F32, the
    embeddings F32, the input projection F16 (Gemma3VisionModel.tensor_force_quant), the rest the outtype.
    outtype "all-f32": every tensor F32, a file as exact as the checkpoint."""
    if outtype == "all-f32" or tensor.ndim <= 1 or ".embeddings." in name:
        return "F32"
    return "F16" if "input_projection" in name else outtype.upper()


def _mmproj_tensors(checkpoint) -> dict[str, np.ndarray]:
    """The tower's and projector's tensors under the names llama.cpp's converter reads (Google's layout,
    mm_input_projection_weight as mm_input_projection.weight), without SigLIP's unused head."""
    found = {}
    for name, tensor in _tensors(checkpoint).items():
        if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
            name = "vision_tower.vision_model." + name[len("vision_tower."):]
        if name.startswith("multi_modal_projector.") or (name.startswith("vision_tower.")
                                                          and ".head." not in name):
            found[name.replace("_weight", ".weight")] = tensor
    return found


def write_mmproj(checkpoint, out, outtype: str = "f16", projector: str = "gemma3"):
    """Gemma 3's mmproj as llama.cpp's convert_hf_to_gguf.py --mmproj writes it (Gemma3VisionModel)."""
    config = json.loads((checkpoint / "config.json").read_text())
    vision, text = config["vision_config"], config["text_config"]
    processor = json.loads((checkpoint / "processor_config.json").read_text())
    image = processor["image_processor"]
    writer = gguf.GGUFWriter(out, "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if outtype != "f16" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_clip_has_vision_encoder(True)
    writer.add_vision_projection_dim(text["hidden_size"])
    writer.add_vision_image_size(vision["image_size"])
    writer.add_vision_patch_size(vision["patch_size"])
    writer.add_vision_embedding_length(vision["hidden_size"])
    writer.add_vision_feed_forward_length(vision["intermediate_size"])
    writer.add_vision_block_count(vision["num_hidden_layers"])
    writer.add_vision_head_count(vision["num_attention_heads"])
    writer.add_vision_image_mean(image["image_mean"])
    writer.add_vision_image_std(image["image_std"])
    writer.add_clip_projector_type(projector)
    writer.add_vision_attention_layernorm_eps(vision.get("layer_norm_eps", 1e-6))
    writer.add_vision_use_gelu(True)
    pool = (vision["image_size"] // vision["patch_size"]) // int(processor["image_seq_length"] ** 0.5)
    if pool != 4:
        writer.add_vision_projector_scale_factor(pool)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, vision["num_hidden_layers"])
    for name, tensor in _mmproj_tensors(checkpoint).items():
        if "soft_emb_norm.weight" in name:  # llama.cpp stores Gemma's (1 + w) norm as 1 + w
            tensor = tensor + 1
        kind = mmproj_type(name, tensor, outtype)
        data = tensor.astype(np.float16) if kind == "F16" else tensor.astype(np.float32)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def files_weights(checkpoint, out, block_types: dict[str, str], outtype: str):
    """The checkpoint with each tensor as the two files hold it: the language model's blocks dequantized,
    the tower's f16 tensors rounded to f16 — the reference for a quantized model and an f16 mmproj."""
    shutil.copytree(checkpoint, out)
    mmproj = _mmproj_tensors(checkpoint)
    tensors = {}
    for name, tensor in _tensors(checkpoint).items():
        gguf_kind = name.split(".")[-2] if name.endswith(".weight") else None
        gguf_kind = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                     "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
                     "embed_tokens": "token_embd"}.get(gguf_kind)
        if name.startswith("language_model.") and gguf_kind in block_types:
            qtype = gguf.GGMLQuantizationType[block_types[gguf_kind]]
            tensor = gguf.quants.dequantize(gguf.quants.quantize(tensor, qtype), qtype).reshape(tensor.shape)
        mm_name = name.replace("vision_tower.", "vision_tower.vision_model.").replace("_weight", ".weight")
        if mm_name in mmproj and mmproj_type(mm_name, tensor, outtype) == "F16":
            tensor = tensor.astype(np.float16).astype(np.float32)
        tensors[name] = np.ascontiguousarray(tensor, np.float32)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def files(vlm, tmp_path_factory):
    """files(language, mmproj outtype) → (model.gguf, mmproj.gguf), each written once."""
    made = {}
    root = tmp_path_factory.mktemp("gguf-vlm")

    def get(language: str, outtype: str):
        if (language, outtype) not in made:
            model = root / f"model-{language}.gguf"
            if not model.exists():
                write_model_gguf(vlm, model, {} if language == "f32" else Q8_0_BLOCKS)
            mmproj = root / f"mmproj-{outtype}.gguf"
            if not mmproj.exists():
                write_mmproj(vlm, mmproj, outtype)
            made[language, outtype] = model, mmproj
        return made[language, outtype]

    return get


@pytest.fixture(scope="module")
def hf_converted(vlm, tmp_path_factory):
    from convert import convert

    return convert(vlm, tmp_path_factory.mktemp("hf-ir") / "gemma3-vision", weight_format="fp32")


def vision_output(model_dir, pixels: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model_dir / "openvino_vision_embeddings_model.xml", "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"pixel_values": pixels})["last_hidden_state"]


def random_pixels() -> np.ndarray:
    return np.random.default_rng(3).uniform(-1, 1, (1, 3, 56, 56)).astype(np.float32)


def images() -> list[ov.Tensor]:
    """Two 64×48 RGB pictures (u8 [1, H, W, 3], as GenAI takes one): stripes, and noise."""
    y, x = np.mgrid[0:48, 0:64]
    stripes = np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    noise = np.random.default_rng(1).integers(0, 256, (48, 64, 3)).astype(np.uint8)
    return [ov.Tensor(stripes[None]), ov.Tensor(noise[None])]


def greedy(model_dir, prompt: str = "hello", tokens: int = 12) -> list[list[int]]:
    """VLMPipeline's greedy reply about each of images(), as token ids (its text through the model's tokenizer)."""
    pipe = openvino_genai.VLMPipeline(model_dir, "CPU", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=tokens, ignore_eos=True)
    replies = []
    for image in images():
        text = pipe.generate(prompt, images=[image], generation_config=config).texts[0]
        replies.append(pipe.get_tokenizer().encode(text, add_special_tokens=False).input_ids.data[0].tolist())
    return replies


def test_f32_files_match_the_hf_conversion(files, hf_converted, tmp_path):
    """F32 model and mmproj: the same vision embeddings as the HF checkpoint's conversion to ~1e-5, the
    same config a Gemma 3 VLM has, and VLMPipeline's same greedy answer about an image."""
    from convert import convert

    model, mmproj = files("f32", "all-f32")
    out = convert(model, tmp_path / "ir", vision_weight_format="fp32", mmproj=mmproj)
    names = {p.name for p in out.iterdir()}
    assert {"openvino_language_model.xml", "openvino_text_embeddings_model.xml",
            "openvino_vision_embeddings_model.xml", "preprocessor_config.json"} <= names
    assert "openvino_model.xml" not in names

    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (out, hf_converted))
    for key in ("model_type", "mm_tokens_per_image", "boi_token_index", "eoi_token_index", "image_token_index"):
        assert ours[key] == theirs[key], key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "layer_norm_eps", "hidden_act"):
        assert ours["vision_config"][key] == theirs["vision_config"][key], key
    processor = json.loads((out / "preprocessor_config.json").read_text())
    expected = json.loads((hf_converted / "preprocessor_config.json").read_text())
    for key in ("size", "image_mean", "image_std", "resample", "do_normalize"):
        assert processor[key] == expected[key], key

    pixels = random_pixels()
    actual, reference = vision_output(out, pixels), vision_output(hf_converted, pixels)
    assert actual.shape == reference.shape == (1, 4, 64)
    scale, worst = np.abs(reference).max(), np.abs(actual - reference).max()
    print(f"F32 mmproj: max |vision embeddings - HF conversion's| = {worst:.1e} of {scale:.2f}")
    assert scale > 0.1 and worst <= 1e-5 * scale

    replies = greedy(out)
    print(f"greedy: {replies}")
    assert replies == greedy(hf_converted)
    assert replies[0] != replies[1]  # the answer depends on the image


def test_q8_0_model_and_f16_mmproj_as_llama_cpp_writes_them(files, vlm, tmp_path):
    """A Q8_0 language model (its blocks kept) and an f16 mmproj with llama.cpp's types: the same answer as
    the HF checkpoint holding the files' very weights (dequantized blocks, f16-rounded tower tensors)."""
    from convert import convert

    model, mmproj = files("q8_0", "f16")
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(mmproj).tensors}
    assert kinds["v.blk.0.attn_q.weight"] == "F16" and kinds["mm.input_projection.weight"] == "F16"
    assert kinds["v.patch_embd.weight"] == kinds["v.position_embd.weight"] == kinds["v.blk.0.ln1.weight"] == "F32"
    out = convert(model, tmp_path / "ir", vision_weight_format="fp32", mmproj=mmproj)
    language = ov.Core().read_model(out / "openvino_language_model.xml")
    layers = json.loads(language.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    assert set(layers) == {"int8_sym_g32"}, layers  # Q8_0 blocks kept

    reference = convert(files_weights(vlm, tmp_path / "files-weights", Q8_0_BLOCKS, "f16"), tmp_path / "ref",
                        weight_format="fp32")
    pixels = random_pixels()
    actual, expected = vision_output(out, pixels), vision_output(reference, pixels)
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
    replies = greedy(out)
    assert replies == greedy(reference) and replies[0] != replies[1]


def test_ovchat_convert_and_pull_with_mmproj(files, tmp_path):
    """The command line, with the defaults: Q8_0 blocks kept, the tower in int8; the model answers about an
    image. `pull --mmproj` puts the same model in the store."""
    model, mmproj = files("q8_0", "f16")
    out = tmp_path / "out"
    result = run_ovchat("convert", model, "--mmproj", mmproj, "-o", out)
    assert result.returncode == 0, result.stderr
    vision = ov.Core().read_model(out / "openvino_vision_embeddings_model.xml")
    assert vision.get_rt_info(["ovgenai_chat", "weight_format"]).astype(str) == "int8"
    assert all(greedy(out, tokens=4))

    (tmp_path / "home").mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "OVCHAT_CACHE_DIR": str(tmp_path / "cache"),
           "OVCHAT_MODELS": str(tmp_path / "store")}
    result = run_ovchat("pull", model, "--mmproj", mmproj, "--name", "tiny-gemma3-vision", env=env)
    assert result.returncode == 0, result.stderr
    pulled = tmp_path / "store" / "tiny-gemma3-vision"
    assert sorted(p.name for p in pulled.glob("*.xml")) == sorted(p.name for p in out.glob("*.xml"))


def _unsupported_mmproj(vlm, path):
    write_mmproj(vlm, path, "f32", projector="qwen2vl_merger")
    return path


def test_unsupported_projector_type_is_one_line(files, vlm, tmp_path):
    model, _ = files("f32", "all-f32")
    mmproj = _unsupported_mmproj(vlm, tmp_path / "mmproj-qwen.gguf")
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", model, "--mmproj", mmproj, "-o", out), out,
                         "projector type 'qwen2vl_merger' is not supported; supported projector type: gemma3")


def test_mmproj_without_a_model_gguf_is_one_line(files, tmp_path):
    _, mmproj = files("f32", "all-f32")
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", mmproj, "-o", out), out,
                         "multimodal projector (mmproj), not a model")
    assert_clean_failure(run_ovchat("convert", mmproj, "--mmproj", mmproj, "-o", out), out,
                         "multimodal projector (mmproj), not a model")


def test_mmproj_with_a_checkpoint_directory_is_one_line(files, vlm, tmp_path):
    from convert import ConversionError, convert

    model, mmproj = files("f32", "all-f32")
    out = tmp_path / "out"
    assert_clean_failure(run_ovchat("convert", vlm, "--mmproj", mmproj, "-o", out), out,
                         "--mmproj goes with a model .gguf file")
    with pytest.raises(ConversionError, match="is not an mmproj file"):
        convert(model, out, mmproj=model)
