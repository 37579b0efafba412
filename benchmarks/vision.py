"""Pictures at real size: random-weight vision-language checkpoints with real models' vision and text
shapes (no download), converted by ovchat's converter, then timed in openvino_genai.VLMPipeline and the
image features of each vision weight format compared with the fp32 tower's.

    python benchmarks/vision.py SHAPE WORK_DIR [--reps 3] [--backends PA,SDPA] [--formats int8,int4]
                                               [--json OUT.json] [--skip-quality]
                                               [--llama-cpp PYTHON [--convert-hf-to-gguf SCRIPT] [--flash-attn on,off]]

SHAPE: gemma3-4b (SigLIP so400m at 896 px, 256 tokens per picture; Gemma 3 4B's text model) or
qwen3.5-2b (Qwen3.5's 24-block ViT, patch 16, 2×2 merger; Qwen3.5-2B's hybrid text model). WORK_DIR keeps
the checkpoint (bf16 safetensors, config.json, preprocessor_config.json, a tokenizer with the family's
image tokens and a chat template that places them), one converted model per vision weight format
(language model int4, ovchat's default) and the compiled-model cache; a second run reuses them.

The checkpoint is written tensor by tensor: names and shapes come from transformers' model built on the
meta device (no memory), values are random bf16 — projections and embeddings N(0, 0.02) as transformers
initialises them, LayerNorms the identity (weight 1, bias 0), Gemma's and Qwen3.5's (1 + w) RMSNorms 0,
Qwen3.5's DeltaNet decay A = exp(A_log) in U(1, 16) and dt_bias 1. The tokenizer is the default
model's (SmolLM2's, 49152 tokens) with the image tokens added, so a random reply's ids past it print
nothing (GenAI's detokenizer drops them); timings and memory are what this measures.

Speed, per vision weight format and attention backend (--backends: PA, paged attention, or SDPA, the
stateful backend `ovchat` runs), each run in a fresh process with a warm compiled-model cache and the
precision `ovchat` picks (`engine.model_precision`: on an AMX CPU the plugin's bf16 defaults): one
warm-up request, then REPS requests of one picture (scikit-learn's china.jpg, one pixel changed per
request and a distinct first line, so no cache can answer) and 32 generated tokens each (min_new_tokens
32). TTFT (picture → embeddings, then prefill) and TPOT from perf_metrics; "embeddings" is
VLMPerfMetrics' prepare-embeddings duration, the whole vision tower with its projector or merger (its
vision-encoding duration covers only Qwen's patch-embedding IR: 30–60 ms; both are in the JSON); medians with
min–max; peak RSS is the worker's VmHWM; sizes from disk (text: the language model with its embeddings IR).

llama.cpp as a peer (--llama-cpp: an interpreter with llama-cpp-python, the bench extra; its own venv is
fine): WORK_DIR/gguf/ holds the same checkpoint as llama.cpp's convert_hf_to_gguf.py makes it (--convert-hf-to-gguf,
run by this interpreter through CONVERT_SHIM; --no-mtp for Qwen3.5), the language model quantized to Q4_K_M and
the projector GGUF (the vision tower with its projector or merger) in f16. Timed as ours, in a fresh process with
as many threads as cores: a warm-up, then REPS requests through llama-cpp-python's MTMDChatHandler with the
same picture (as PNG) and text, 32 tokens (end-of-generation tokens masked). TTFT is the request's start to its
first sampled token, TPOT the sampled tokens' spacing, "embeddings" libmtmd's mtmd_encode_chunk (the tower and
projector); flash attention on (llama.cpp's own default on a CPU; llama-cpp-python's is off) unless --flash-attn.

Quality: the vision IRs of each format run on three photographs (scikit-learn's china.jpg and
flower.jpg, matplotlib's grace_hopper.jpg) against the fp32 tower's, per image token the cosine of the
feature vectors (Gemma 3: the projected image embeddings the language model reads; Qwen3.5: the
merger's output, and the patch embedding's). Twice: with f32 activations (the weights' error alone) and
with the plugin's defaults (bf16 activations on AMX: what runs). Random weights have none of a trained
tower's outlier channels, so these cosines are an upper bound for a real checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SHARD_BYTES = 2 << 30
NEW_TOKENS = 32
F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


# --- the checkpoints ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    family: str  # gemma3 or qwen3_5
    text: dict
    vision: dict
    real: str  # the model whose shapes these are


SHAPES = {
    # google/gemma-3-4b-it: SigLIP so400m/14 at 896 px pooled to 256 tokens; text 34 layers, 5 sliding to 1 global
    "gemma3-4b": Shape("gemma3", dict(
        hidden_size=2560, num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
        intermediate_size=10240, sliding_window=1024, vocab_size=262208, query_pre_attn_scalar=256,
        max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
        dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304, image_size=896,
             patch_size=14, vision_use_head=False, layer_norm_eps=1e-6), "Gemma 3 4B"),
    # Qwen/Qwen3.5-2B: a 24-block ViT (patch 16, 2×2 merger into the text width); text 24 layers, 3 DeltaNet : 1 attention
    "qwen3.5-2b": Shape("qwen3_5", dict(
        hidden_size=2048, num_hidden_layers=24, num_attention_heads=8, num_key_value_heads=2, head_dim=256,
        intermediate_size=6144, vocab_size=248320, linear_num_key_heads=16, linear_num_value_heads=16,
        linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4, max_position_embeddings=262144,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [11, 11, 10], "mrope_interleaved": True}),
        dict(depth=24, hidden_size=1024, num_heads=16, intermediate_size=4096, patch_size=16, spatial_merge_size=2,
             temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304, hidden_act="gelu_pytorch_tanh"),
        "Qwen3.5-2B"),
}


def make_tokenizer(family: str):
    """The default model's tokenizer with the family's image tokens and a chat template that places them."""
    import tempfile

    import transformers

    from convert.gguf_source import read_gguf
    from ovgenai_chat.engine import default_gguf
    from vision_checkpoints import GEMMA3_TEMPLATE, GEMMA3_TOKENS, QWEN_TEMPLATE, QWEN_TOKENS

    tokens, template = (GEMMA3_TOKENS, GEMMA3_TEMPLATE) if family == "gemma3" else (QWEN_TOKENS, QWEN_TEMPLATE)
    with tempfile.TemporaryDirectory() as tmp:
        read_gguf(default_gguf()).hf_tokenizer().save_pretrained(tmp)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp, extra_special_tokens=tokens)
    tokenizer.chat_template = template
    return tokenizer, tokens


def make_config(shape: Shape, tokenizer, tokens: dict):
    import transformers

    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in tokens.items()}
    text = dict(shape.text, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    if shape.family == "gemma3":
        layers = text["num_hidden_layers"]
        text["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
        return transformers.Gemma3Config(text_config=text, vision_config=shape.vision, mm_tokens_per_image=256,
                                         boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"],
                                         image_token_index=ids["image_token"])
    layers = text["num_hidden_layers"]
    text["layer_types"] = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    return transformers.Qwen3_5Config(
        text_config=text, vision_config=shape.vision, tie_word_embeddings=True,
        image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"])


def tensor_shapes(config) -> list[tuple[str, tuple]]:
    """(name, shape) of every tensor of the model transformers builds for `config`, built on the meta
    device (no memory); names as transformers 5 keeps them in memory (model.language_model.*,
    model.vision_tower.* / model.visual.*), which it reads back and the converter takes."""
    import torch
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(config)
    state = model.state_dict()
    tied = config.get_text_config().tie_word_embeddings or getattr(config, "tie_word_embeddings", False)
    return [(name, tuple(t.shape)) for name, t in state.items()
            if not (tied and name == "lm_head.weight") and not name.endswith(("position_ids", "inv_freq"))]


def initial(name: str, dims: tuple, rng: np.random.Generator) -> np.ndarray:
    """The random bf16 value of a tensor: see the module's docstring."""
    from ml_dtypes import bfloat16 as BF16

    vision = any(part in name for part in ("vision_tower", "visual.", "multi_modal_projector"))
    if name.endswith(".A_log"):
        return np.log(rng.uniform(1, 16, dims)).astype(BF16)
    if name.endswith((".dt_bias", ".linear_attn.norm.weight")):
        return np.ones(dims, BF16)
    if len(dims) == 1:
        if name.endswith("bias"):
            return np.zeros(dims, BF16)
        if "norm" in name and vision and "mm_soft_emb_norm" not in name:  # LayerNorm
            return np.ones(dims, BF16)
        if "norm" in name:  # the (1 + w) RMSNorms
            return np.zeros(dims, BF16)
    array = rng.standard_normal(dims, np.float32)
    array *= 0.02
    return array.astype(BF16)


def write_processor(shape: Shape, tokenizer, out: Path) -> None:
    import transformers

    if shape.family == "gemma3":
        side = shape.vision["image_size"]
        image_processor = transformers.Gemma3ImageProcessorPil(size={"height": side, "width": side})
        transformers.Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=tokenizer.chat_template, image_seq_length=256).save_pretrained(out)
    else:  # Qwen3.5's shipped pixel range; its processor needs torchvision (the video processor): the image one
        patch = shape.vision["patch_size"]
        transformers.Qwen2VLImageProcessorPil(
            patch_size=patch, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
            size={"shortest_edge": 65536, "longest_edge": 16777216}).save_pretrained(out)


def write_checkpoint(name: str, out: Path) -> Path:
    from safetensors.numpy import save_file

    shape = SHAPES[name]
    tokenizer, tokens = make_tokenizer(shape.family)
    config = make_config(shape, tokenizer, tokens)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards, shard, size, weight_map, total = [], {}, 0, {}, 0

    def flush():
        nonlocal shard, size
        file = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(shard, staging / file, metadata={"format": "pt"})
        weight_map.update({key: file for key in shard})
        shards.append(file)
        shard, size = {}, 0

    for tensor, dims in tensor_shapes(config):
        shard[tensor] = initial(tensor, dims, rng)
        size += shard[tensor].nbytes
        total += int(np.prod(dims))
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    (staging / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, indent=2))
    config.architectures = [type(config).__name__.replace("Config", "ForConditionalGeneration")]
    config.dtype = "bfloat16"
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_processor(shape, tokenizer, staging)
    staging.rename(out)
    print(f"{out}: {shape.real} shapes, {total / 1e9:.2f} B parameters, {len(shards)} shards", flush=True)
    return out


def converted(checkpoint: Path, work: Path, fmt: str) -> Path:
    """The checkpoint converted by ovchat's converter: language model int4 (the default), vision `fmt`."""
    out = work / f"int4-vision-{fmt}"
    if not (out / "openvino_language_model.xml").is_file():
        from convert import convert

        start = time.perf_counter()
        convert(checkpoint, out, weight_format="int4", vision_weight_format=fmt, force=True)
        print(f"converted {out.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return out


# --- pictures ----------------------------------------------------------------------------------------------------

def photographs() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from PIL import Image
    from sklearn.datasets import load_sample_image

    images = {name: load_sample_image(name) for name in ("china.jpg", "flower.jpg")}
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        images["grace_hopper.jpg"] = np.asarray(Image.open(f).convert("RGB"))
    return images


def fit(image: np.ndarray, family: str, vision: dict) -> np.ndarray:
    """The picture as the tower takes it: Gemma 3's square; for Qwen, the sides rounded down to a
    multiple of patch · merge (as the processor's smart_resize rounds these sizes)."""
    from PIL import Image

    h, w = image.shape[:2]
    if family == "gemma3":
        size = (vision["image_size"],) * 2
    else:
        step = vision["patch_size"] * vision["spatial_merge_size"]
        size = (w // step * step, h // step * step)
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


# --- speed (a worker process per measurement) --------------------------------------------------------------------

def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(model_dir: Path, backend: str, reps: int, cache: Path) -> dict:
    import openvino as ov
    import openvino_genai
    from sklearn.datasets import load_sample_image

    from ovgenai_chat.engine import PIPELINE_PROPERTIES, keep_telemetry_off, model_precision

    keep_telemetry_off()
    precision = model_precision("auto", "CPU", model_dir)
    properties = {**PIPELINE_PROPERTIES, "ATTENTION_BACKEND": backend, **precision.properties, "CACHE_DIR": str(cache)}
    start = time.perf_counter()
    pipe = openvino_genai.VLMPipeline(model_dir, "CPU", **properties)
    load = time.perf_counter() - start
    image = load_sample_image("china.jpg")

    def ask(i: int, tokens: int):
        picture = image.copy()
        picture[0, 0, 0] = i  # a different picture each time
        config = openvino_genai.GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        history = openvino_genai.ChatHistory([{"role": "user", "content": [
            {"type": "text", "text": f"Question {i}."}, {"type": "image"},
            {"type": "text", "text": "What is in this picture?"}]}])
        t0 = time.perf_counter()
        result = pipe.generate(history, images=[ov.Tensor(picture)], generation_config=config)
        wall = time.perf_counter() - t0
        m = result.perf_metrics
        return {"ttft_ms": m.get_ttft().mean, "tpot_ms": m.get_tpot().mean,
                "vision_ms": m.get_vision_encoding_duration().mean,
                "embeddings_ms": m.get_prepare_embeddings_duration().mean,
                "input_tokens": m.get_num_input_tokens(), "generated": m.get_num_generated_tokens(), "wall_s": wall}

    ask(255, 2)  # warm-up: the first inference of each compiled model
    runs = [ask(i, NEW_TOKENS) for i in range(reps)]
    return {"backend": backend, "precision": precision.describe(), "load_s": load, "runs": runs,
            "peak_rss_mb": peak_rss_mb()}


def measure(model_dir: Path, backend: str, reps: int, cache: Path) -> dict:
    def run(n: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--worker", str(model_dir), backend, str(n), str(cache)],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"worker failed ({out.returncode}): {out.stderr.strip().splitlines()[-3:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    if not any(cache.glob("*.blob")) or not (cache / f".warm-{model_dir.name}-{backend}").exists():
        run(0)  # fills the compiled-model cache; not measured
        (cache / f".warm-{model_dir.name}-{backend}").touch()
    return run(reps)


# --- the llama.cpp peer (llama-cpp-python, the bench extra, in its own interpreter) ------------------------------

# llama.cpp's convert_hf_to_gguf.py, run on these checkpoints with three changes: Gemma 3 keeps its whole
# embedding (the converter cuts it to the tokenizer's length, here SmolLM2's 49k tokens, where ours keeps all
# 262208 rows); Gemma's vision tensors get the hub's names (vision_tower.vision_model.*, multi_modal_projector.*:
# transformers 5 writes model.vision_tower.*); SmolLM2's pre-tokenizer is named when the added image tokens
# change its hash (Qwen's).
CONVERT_SHIM = """
import runpy, sys
from pathlib import Path
script = Path(sys.argv.pop(1))
sys.path[:0] = [str(script.parent), str(script.parent / "gguf-py")]
from conversion import base, gemma

def keep_vocab(self, data, name, bid):
    shift = self.norm_shift(name)
    yield from base.TextModel.modify_tensors(self, data + shift if shift else data, name, bid)

vision_filter = gemma.Gemma3VisionModel.filter_tensors.__func__
def hub_names(cls, item):
    name = item[0].replace("model.vision_tower.", "vision_tower.vision_model.")
    return vision_filter(cls, (name.replace("model.multi_modal_projector.", "multi_modal_projector."), item[1]))

pre = base.TextModel.get_vocab_base_pre
def smollm(self, tokenizer):
    try:
        return pre(self, tokenizer)
    except NotImplementedError:
        return "smollm"

gemma.Gemma3Model.modify_tensors = keep_vocab
gemma.Gemma3VisionModel.filter_tensors = classmethod(hub_names)
base.TextModel.get_vocab_base_pre = smollm
sys.argv[0] = str(script)
runpy.run_path(str(script), run_name="__main__")
"""

QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def gguf_files(shape: Shape, checkpoint: Path, work: Path, convert_script: Path | None, python: str) -> tuple[Path, Path]:
    """The language model in Q4_K_M and the projector (vision tower + projector/merger) in f16, made by llama.cpp's
    converter (this interpreter: it needs torch) and quantizer (`python`'s llama_cpp)."""
    out = work / "gguf"
    model, mmproj = out / "model-Q4_K_M.gguf", out / "mmproj-f16.gguf"
    f16 = out / "model-f16.gguf"
    convert = [sys.executable, "-c", CONVERT_SHIM, str(convert_script), str(checkpoint), "--outtype", "f16"]
    mtp = ["--no-mtp"] if shape.family == "qwen3_5" else []  # Qwen3.5's converter expects MTP layers otherwise
    steps = [(mmproj, [*convert, "--mmproj", "--outfile", str(mmproj)]),
             (f16, [*convert, *mtp, "--outfile", str(f16)]),
             (model, [python, "-c", QUANTIZE, str(f16), str(model)])]
    for file, command in steps:
        if file.is_file() or (file == f16 and model.is_file()):
            continue
        if convert_script is None and file != model:
            raise SystemExit(f"no {file}: give --convert-hf-to-gguf (llama.cpp's convert_hf_to_gguf.py)")
        out.mkdir(exist_ok=True)
        subprocess.run(command, check=True, capture_output=True)
    f16.unlink(missing_ok=True)
    return model, mmproj


def llama_worker(model: Path, mmproj: Path, reps: int, pictures: Path, flash_attn: bool) -> dict:
    """As `worker`, in llama.cpp through llama-cpp-python's MTMDChatHandler (0.3.36 has no Gemma3ChatHandler;
    this one renders the GGUF's chat template, libmtmd preprocesses the picture and adds its tokens). It evaluates the
    image chunk with mtmd_helper_eval_chunk_single; here with that function's two steps in Python to time the
    first (the tower and projector, encode) apart from the second (the image embeddings into the language model)."""
    import base64

    import llama_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler

    class TimedMtmd:
        def __init__(self, mtmd):
            self.mtmd, self.encode_s, self.tokens, self.positions = mtmd, 0.0, 0, 0

        def __getattr__(self, name):
            return getattr(self.mtmd, name)

        def mtmd_helper_eval_chunk_single(self, ctx, lctx, chunk, n_past, seq_id, n_batch, logits_last, new_n_past):
            start = time.perf_counter()
            if ret := self.mtmd.mtmd_encode_chunk(ctx, chunk):
                return ret
            self.encode_s += time.perf_counter() - start
            self.tokens += self.mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            self.positions += self.mtmd.mtmd_input_chunk_get_n_pos(chunk)  # Qwen's M-RoPE: fewer than tokens
            return self.mtmd.mtmd_helper_decode_image_chunk(ctx, lctx, chunk, self.mtmd.mtmd_get_output_embd(ctx),
                                                            n_past, seq_id, n_batch, new_n_past,
                                                            self.mtmd.mtmd_helper_post_decode_callback(), None)

    threads = os.cpu_count()
    handler = MTMDChatHandler(clip_model_path=str(mmproj), verbose=False)
    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(model), chat_handler=handler, n_ctx=2048, n_threads=threads,
                          n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
    load = time.perf_counter() - start
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ends = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    handler._init_mtmd_context(llm)
    handler._mtmd_cpp = timed = TimedMtmd(handler._mtmd_cpp)

    def ask(i: int, tokens: int) -> dict:
        url = "data:image/png;base64," + base64.b64encode((pictures / f"{i}.png").read_bytes()).decode()
        sampled, prompt = [], []

        def sampling(input_ids, scores):  # called once per sampled token, after the step that made its logits
            sampled.append(time.perf_counter())
            prompt.append(len(input_ids))
            scores[ends] = -np.inf  # no end of turn: `tokens` tokens, as min_new_tokens
            return scores

        timed.encode_s, timed.tokens, timed.positions = 0.0, 0, 0
        t0 = time.perf_counter()
        llm.create_chat_completion([{"role": "user", "content": [
            {"type": "text", "text": f"Question {i}."}, {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "What is in this picture?"}]}],
            max_tokens=tokens, temperature=0.0, logits_processor=[sampling])
        wall = time.perf_counter() - t0
        return {"ttft_ms": (sampled[0] - t0) * 1000, "tpot_ms": (sampled[-1] - sampled[0]) * 1000 / (len(sampled) - 1),
                "embeddings_ms": timed.encode_s * 1000, "input_tokens": prompt[0] - timed.positions + timed.tokens,
                "generated": len(sampled), "wall_s": wall}

    ask(255, 2)
    runs = [ask(i, NEW_TOKENS) for i in range(reps)]
    return {"backend": f"llama.cpp{' FA' if flash_attn else ''}", "precision": f"{threads} threads", "load_s": load,
            "runs": runs, "peak_rss_mb": peak_rss_mb()}


def measure_llama(python: str, model: Path, mmproj: Path, reps: int, work: Path, flash_attn: bool) -> dict:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    pictures = work / "gguf" / "pictures"  # the worker's china.jpg, one pixel changed per request, as PNG
    pictures.mkdir(exist_ok=True)
    for i in [255, *range(reps)]:
        picture = load_sample_image("china.jpg").copy()
        picture[0, 0, 0] = i
        Image.fromarray(picture).save(pictures / f"{i}.png")
    out = subprocess.run([python, __file__, "--llama-worker", str(model), str(mmproj), str(reps), str(pictures),
                          str(int(flash_attn))], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"llama.cpp worker failed ({out.returncode}): {out.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def speed_row(fmt: str, r: dict, sizes: dict[str, float]) -> dict:
    """The JSON row of one measurement; prints its table row (text: the language model with its embeddings,
    a separate IR of ours; vision: the tower with its projector or merger)."""
    runs = r["runs"]
    print(f"| {fmt} | {r['backend']} | {summary([x['ttft_ms'] for x in runs])} | {summary([x['embeddings_ms'] for x in runs])} | "
          f"{summary([x['tpot_ms'] for x in runs], 1)} | {runs[0]['input_tokens']} | {r['peak_rss_mb']:.0f} | "
          f"{sizes['language'] + sizes.get('text_embeddings', 0):.0f} / {sizes['vision']:.0f} |", flush=True)
    return {"format": fmt, **r, "sizes_mb": sizes}


# --- quality -----------------------------------------------------------------------------------------------------

def vision_models(checkpoint: Path, fmt: str):
    """The architecture's vision ov.Models in `fmt`, built by the converter's own code (fp32: the
    reference, which `convert` writes only beside an fp32 language model)."""
    from convert import _build_vision
    from convert import models as arch_models
    from convert.sources import open_source

    source = open_source(checkpoint)
    return _build_vision(arch_models.architecture(source.config), source, fmt, 128)


def features(family: str, compiled: dict, image: np.ndarray, config: dict, vision: dict) -> dict[str, np.ndarray]:
    if family == "gemma3":
        x = (image.astype(np.float32) / 255 - 0.5) / 0.5
        return {"image embeddings": compiled["vision_embeddings"]([x.transpose(2, 0, 1)[None]])[0][0]}
    from test_vision_qwen import genai_patches, run_genai

    class Proc:  # Qwen3.5's mean and std, as its preprocessor_config.json has them
        image_mean = [0.5, 0.5, 0.5]
        image_std = [0.5, 0.5, 0.5]

    args = {**vision}
    patches, _ = genai_patches(image, Proc, args)
    out = {"patch embedding": compiled["vision_embeddings"]({"hidden_states": patches})[0]}
    out["merger output"] = run_genai(compiled, [image], Proc, args, config)["last_hidden_state"]
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def quality(name: str, checkpoint: Path, formats: list[str]) -> list[dict]:
    import openvino as ov

    from convert.vision.qwen import vision_args

    shape = SHAPES[name]
    config = json.loads((checkpoint / "config.json").read_text())
    vision = shape.vision if shape.family == "gemma3" else vision_args(config)
    images = {k: fit(v, shape.family, vision) for k, v in photographs().items()}
    core = ov.Core()
    results = {}
    for fmt in ["fp32", *formats]:
        models = vision_models(checkpoint, fmt)
        for mode, props in (("f32", F32), ("defaults", {})):
            compiled = {role: core.compile_model(m, "CPU", props) for role, m in models.items()}
            start = time.perf_counter()
            results[fmt, mode] = {k: features(shape.family, compiled, img, config, vision) for k, img in images.items()}
            print(f"  {fmt} tower, {mode} activations: {(time.perf_counter() - start) / len(images):.1f} s per picture",
                  flush=True)
            del compiled
        del models
    rows = []
    reference = results["fp32", "f32"]
    for (fmt, mode), per_image in results.items():
        if (fmt, mode) == ("fp32", "f32"):
            continue
        for output in next(iter(reference.values())):
            c = np.concatenate([cosines(per_image[k][output], reference[k][output]) for k in reference])
            rows.append({"format": fmt, "activations": mode, "output": output, "tokens": int(c.size),
                         "mean_cosine": float(c.mean()), "min_cosine": float(c.min())})
    return rows


# --- main --------------------------------------------------------------------------------------------------------

def ir_sizes(model_dir: Path) -> dict[str, float]:
    sizes = {}
    for xml in sorted(model_dir.glob("openvino_*_model.xml")):
        role = xml.name.removeprefix("openvino_").removesuffix("_model.xml")
        sizes[role] = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20
    return sizes


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, model_dir, backend, reps, cache = sys.argv
        print(json.dumps(worker(Path(model_dir), backend, int(reps), Path(cache))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-worker":
        _, _, model, mmproj, reps, pictures, flash_attn = sys.argv
        print(json.dumps(llama_worker(Path(model), Path(mmproj), int(reps), Path(pictures), flash_attn == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=SHAPES)
    parser.add_argument("work", type=Path)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="PA,SDPA")
    parser.add_argument("--formats", default="int8,int4")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--llama-cpp", metavar="PYTHON",
                        help="also time llama.cpp: an interpreter with llama-cpp-python (the bench extra)")
    parser.add_argument("--convert-hf-to-gguf", type=Path, metavar="SCRIPT",
                        help="llama.cpp's convert_hf_to_gguf.py, to make WORK/gguf/ when it is missing")
    parser.add_argument("--flash-attn", default="on", help="llama.cpp's flash attention: on, off or on,off")
    args = parser.parse_args()

    from ovgenai_chat.engine import cpu_name

    formats = args.formats.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        write_checkpoint(args.shape, checkpoint)
    report = {"shape": args.shape, "cpu": f"{cpu_name()}, {os.cpu_count()} logical cores", "speed": [], "quality": []}
    print(f"# {SHAPES[args.shape].real} shapes, random weights — {report['cpu']}", flush=True)
    if not args.skip_speed:
        cache = args.work / "cache"
        cache.mkdir(exist_ok=True)
        backends = [b for b in args.backends.split(",") if b]
        dirs = {fmt: converted(checkpoint, args.work, fmt) for fmt in formats} if backends else {}
        print("\n| vision | backend | TTFT ms | embeddings ms | TPOT ms | prompt tokens | peak RSS MB | MB (text / vision) |")
        print("|---|---|---|---|---|---|---|---|")
        for backend in backends:
            for fmt in formats:
                sizes = ir_sizes(dirs[fmt])
                sizes["vision"] = sum(v for k, v in sizes.items() if k.startswith("vision"))
                report["speed"].append(speed_row(fmt, measure(dirs[fmt], backend, args.reps, cache), sizes))
        if args.llama_cpp:
            model, mmproj = gguf_files(SHAPES[args.shape], checkpoint, args.work, args.convert_hf_to_gguf, args.llama_cpp)
            sizes = {"language": model.stat().st_size / 2**20, "vision": mmproj.stat().st_size / 2**20}
            for fa in args.flash_attn.split(","):
                r = measure_llama(args.llama_cpp, model, mmproj, args.reps, args.work, fa == "on")
                report["speed"].append(speed_row("f16 (Q4_K_M text)", r, sizes))
        print(f"\nprecision: {report['speed'][0]['precision']}" if report["speed"] else "")
    if not args.skip_quality:
        print("\nimage features against the fp32 tower's (per image token, 3 photographs):", flush=True)
        report["quality"] = quality(args.shape, checkpoint, formats)
        print("\n| vision | activations | output | mean cosine | min cosine |\n|---|---|---|---|---|")
        for q in report["quality"]:
            print(f"| {q['format']} | {q['activations']} | {q['output']} | {q['mean_cosine']:.5f} | {q['min_cosine']:.5f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
