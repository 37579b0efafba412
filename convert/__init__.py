"""HF checkpoint → OpenVINO IR that openvino_genai.LLMPipeline runs, built op by op from the
checkpoint's tensors: no torch, no transformers model code, nothing from the checkpoint executed.

    convert.convert("path/or/hub-id", "out_dir")            # int4 sym, group 128, ratio 0.6
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openvino as ov

from . import graph, models
from .calibration import CalibrationError, DataAware, compress_with_data
from .compress import WEIGHT_FORMATS, SpillFile, WeightCompression, layer_precisions
from .models import UnsupportedModel
from .sources import Checkpoint, SourceError, open_source
from .tokenizer import TokenizerError, convert_tokenizer
from .write import OutputExists, check_target, staged_directory

__all__ = ["convert", "ConversionError", "DataAware", "WEIGHT_FORMATS"]


class ConversionError(Exception):
    """A conversion that cannot proceed; its message is one line meant for the user."""


def convert(
    source,
    out,
    weight_format: str | None = None,
    group_size: int = 128,
    ratio: float = 0.6,
    sym: bool | None = None,
    force: bool = False,
    data_aware: DataAware | None = None,
    text_only: bool = False,
    vision_weight_format: str | None = None,
    mmproj=None,
    mtp: bool = True,
    mtp_outputs: bool = False,
) -> Path:
    """Convert SOURCE (checkpoint directory, hub id or .gguf file) into the model directory OUT;
    returns OUT.

    `weight_format` defaults to int4; a GGUF file then keeps its quantized blocks (Q4_0 … Q8_0,
    Q4_K, Q5_K, Q6_K) as they are and compresses only its other tensors, while an explicit format re-compresses everything.

    `sym` defaults to symmetric for int4 (the notebook's --sym) and asymmetric for int8 (as
    optimum-cli does): int8_sym per channel garbles small models such as SmolLM2-135M.

    `data_aware` asks for NNCF's AWQ / scale estimation / GPTQ (int4 only), calibrated on a text.

    A vision-language checkpoint whose tower GenAI's VLMPipeline runs is written in its multimodal
    layout (vision models beside a language model on input embeddings), its tower in
    `vision_weight_format` (default int8 where the language model is compressed: a vision encoder
    loses more to int4 than a decoder does; else the language model's format); `text_only` keeps
    the text layout (openvino_model.xml) for the language model alone. `mmproj` is llama.cpp's
    projector file for a model .gguf SOURCE: the two are read as one vision-language checkpoint.
    A checkpoint's multi-token-prediction head (Qwen3.5's `mtp.*`) becomes openvino_mtp_model.xml,
    compressed as the language model is, where GenAI can draft tokens with it (the multimodal layout);
    `mtp` False leaves it out.

    `mtp_outputs` (Gemma 4 only) makes the IR also output what a Gemma 4 assistant drafter reads
    (models/gemma4.py, extra_outputs), in the text layout: GenAI drafts only for an LLMPipeline on
    openvino_model.xml. A `gemma4_assistant` SOURCE becomes that drafter's directory
    (models/gemma4_assistant.py), with no tokenizer: GenAI tokenizes with its target's.
    Raises ConversionError with a one-line message for anything the user can fix."""
    for name, fmt in (("weight", weight_format), ("vision weight", vision_weight_format)):
        if fmt is not None and fmt not in WEIGHT_FORMATS:
            raise ConversionError(f"{name} format {fmt!r} is not one of {', '.join(WEIGHT_FORMATS)}")
    if not 0.0 <= ratio <= 1.0:
        raise ConversionError(f"ratio must be between 0 and 1, not {ratio}")
    if group_size < 1 and group_size != -1:
        raise ConversionError(f"group size must be positive (or -1 for per-channel), not {group_size}")
    if sym is None:
        sym = weight_format in ("int4", None)
    if data_aware is not None:
        if not data_aware.algorithms:
            raise ConversionError("a calibration dataset is for --awq, --scale-estimation or --gptq; ask for one")
        if weight_format not in ("int4", None):
            raise ConversionError(f"{data_aware.describe()} choose int4 scales; they do not apply to {weight_format}")
        if data_aware.num_samples < 1:
            raise ConversionError(f"--num-samples must be at least 1, not {data_aware.num_samples}")
    out = Path(out).expanduser()
    try:
        check_target(out, force)
        with staged_directory(out, force) as staging:
            _convert_into(staging, source, weight_format, group_size, ratio, sym, data_aware, text_only,
                          vision_weight_format, mmproj, mtp, mtp_outputs)
    except (SourceError, UnsupportedModel, TokenizerError, OutputExists, CalibrationError) as e:
        raise ConversionError(str(e)) from None
    except KeyError as e:
        raise ConversionError(f"the checkpoint does not match its config: {e.args[0]}") from None
    except OSError as e:
        raise ConversionError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _convert_into(staging: Path, source, weight_format: str | None, group_size: int, ratio: float, sym: bool,
                  data_aware: DataAware | None, text_only: bool, vision_weight_format: str | None,
                  mmproj=None, mtp: bool = True, mtp_outputs: bool = False) -> None:
    if mmproj is not None:
        from .mmproj import open_with_mmproj

        checkpoint = open_with_mmproj(source, mmproj)
    else:
        checkpoint = open_source(source)
    args = models.model_args(checkpoint.config)
    arch = models.architecture(checkpoint.config)
    drafter = getattr(arch, "DRAFTER", False)
    if mtp_outputs:
        if drafter or not hasattr(args, "mtp_outputs"):
            raise ConversionError(f"drafter outputs are for Gemma 4 targets, not {args.model_type}")
        args.mtp_outputs = True
        if checkpoint.config.get("vision_config") and not text_only:
            _say("GenAI drafts only for the text layout: converting the language model only (no images)")
            text_only = True
    multimodal = _sees_images(checkpoint.config, arch, text_only)
    if getattr(args, "mtp_num_hidden_layers", 0):
        args.mtp_num_hidden_layers = _mtp_layers(args.mtp_num_hidden_layers, checkpoint, multimodal, mtp)
    if (multimodal or drafter) and data_aware:
        raise ConversionError(f"{data_aware.describe()} calibrate a text model's own layers: "
                              + ("add --text-only" if multimodal else "a drafter reads its target's keys and values"))
    checkpoint.check_weights()
    # The tokenizer before the slow steps, so a checkpoint without a usable one fails at once.
    hf_tokenizer = None if drafter else checkpoint.hf_tokenizer()

    # fp16 is produced by saving an f32 graph with compress_to_fp16; int4/int8 start from the
    # stored precision, which NNCF reads as it is. Blocks of a GGUF stay as they are unless a
    # format is asked for.
    keep_blocks = weight_format is None
    if keep_blocks and (unkept := checkpoint.dequantized_blocks()):
        _say("Dequantizing the block types the CPU cannot compute with as they are: " + "; ".join(
            f"{kind} ({len(names)}: {', '.join(sorted(set(names))[:2])}{', …' if len(names) > 2 else ''})"
            for kind, names in sorted(unkept.items())))
    weight_format = weight_format or "int4"

    def read_weights(dtype=None):
        weights = checkpoint.weights(dtype, dequantize=not keep_blocks)
        models.sanitize(checkpoint.config, args, weights)
        return weights

    weights = read_weights(np.float32 if weight_format in ("fp32", "fp16") else None)
    spill = SpillFile(staging)  # holds the compressed weights' memory until the model is saved
    vision = {}
    if multimodal:
        vision_weight_format = vision_weight_format or ("int8" if weight_format in ("int4", "int8") else weight_format)
        vision = _build_vision(arch, checkpoint, vision_weight_format, group_size)
    build = graph.build_multimodal if multimodal else getattr(arch, "build_model", graph.build_model)
    if data_aware:
        if weights.to_compress is not None:
            raise CalibrationError(f"{data_aware.describe()} need full-precision weights, and a GGUF's blocks are "
                                   "already quantized: add --weight-format int4 to dequantize and re-compress them all")
        with _step(f"Building the {args.model_type} graph from {checkpoint.path}") as progress:
            model = graph.build_model(arch, args, weights, on_layer=lambda done, total: progress(f"layer {done}/{total}"))
        _say(f"Compressing the whole model to int4 with {data_aware.describe()} ({'sym' if sym else 'asym'}, "
             f"group {group_size}, ratio {ratio})")
        model, how = compress_with_data(model, hf_tokenizer, data_aware, group_size, ratio, sym)
        _say(f"Compressed with {how}")
    else:
        model = _build_compressed_as_read(build, arch, args, checkpoint, read_weights, weights, weight_format,
                                          group_size, ratio, sym, spill)
    if weights:
        raise ConversionError(
            f"the checkpoint has tensors this {args.model_type} graph does not use: {', '.join(sorted(weights)[:3])}"
        )
    # file → (model, its weights' format); GenAI loads a multimodal model's parts by these names.
    files = {"openvino_model.xml": (model, weight_format)}
    if multimodal:
        files = {f"openvino_{role}_model.xml": (m, weight_format) for role, m in model.items()}
        files.update({f"openvino_{role}_model.xml": (m, vision_weight_format) for role, m in vision.items()})
        if "mtp" in model:
            mtp_precisions = layer_precisions(model["mtp"])
            _annotate(model["mtp"], weight_format, group_size, ratio, sym, mtp_precisions)
            _say("Multi-token-prediction head (openvino_mtp_model.xml, drafts for speculative decoding): "
                 + ", ".join(f"{count} {precision}" for precision, count in sorted(mtp_precisions.items())))
        model = model["language"]
    precisions = layer_precisions(model)
    # A GGUF's kept blocks are its own format, whatever preset compressed the blocks that could not be kept.
    _annotate(model, "gguf" if weights.to_compress is not None else weight_format, group_size, ratio, sym, precisions)
    if experts := layer_precisions(model, experts=True):
        model.set_rt_info(json.dumps(dict(experts)), ["ovgenai_chat", "expert_layers"])

    with _step("Saving the model"):
        for name, (m, fmt) in files.items():
            ov.save_model(m, staging / name, compress_to_fp16=fmt == "fp16")
    if hf_tokenizer is not None:
        with _step("Converting the tokenizer"):
            tokenizer, detokenizer = convert_tokenizer(hf_tokenizer)
            ov.save_model(tokenizer, staging / "openvino_tokenizer.xml")
            ov.save_model(detokenizer, staging / "openvino_detokenizer.xml")
    checkpoint.write_files(staging, hf_tokenizer)
    _write_generation_config(checkpoint, staging)

    size = sum(f.stat().st_size for f in staging.iterdir())
    layers = ", ".join(f"{count} {precision}" for precision, count in sorted(precisions.items()))
    if experts:
        layers += f" (experts: {', '.join(f'{count} {precision}' for precision, count in sorted(experts.items()))})"
    _say(f"Weight layers: {layers}. Size on disk: {size / 2**20:.1f} MiB")


def _sees_images(config: dict, arch, text_only: bool) -> bool:
    """Whether the checkpoint is converted in the multimodal layout: it has a vision tower, the
    architecture builds it (GenAI runs it), and the user did not ask for text only."""
    if not config.get("vision_config") or text_only:
        return False
    if not hasattr(arch, "vision_models"):
        _say(f"OpenVINO GenAI cannot run {config['model_type']}'s vision tower: converting its language model only")
        return False
    return True


def _mtp_layers(layers: int, checkpoint: Checkpoint, multimodal: bool, wanted: bool) -> int:
    """How many layers of the checkpoint's multi-token-prediction head to convert: all, where GenAI can
    draft with them; else 0, and the user is told why the head is left out."""
    if "mtp.fc.weight" not in checkpoint.weights():
        _say("config.json lists a multi-token-prediction head, but the checkpoint has no mtp.* tensors: none converted")
        return 0
    if not wanted:
        _say("Leaving out the multi-token-prediction head, as asked")
        return 0
    if not multimodal:
        _say("Leaving out the multi-token-prediction head: OpenVINO GenAI drafts with it only in the multimodal "
             "layout (a checkpoint with its vision tower, converted without --text-only)")
        return 0
    return layers


def _build_vision(arch, checkpoint: Checkpoint, weight_format: str, group_size: int) -> dict[str, ov.Model]:
    """The architecture's vision models, by role; each weight compressed as it is read: int8 asymmetric
    per channel, or int4 symmetric for every layer that takes it (int8 the rest)."""
    compression = graph.keep
    if weight_format in ("int4", "int8"):
        compression = WeightCompression(weight_format, group_size, 1.0, weight_format == "int4").compress
    with _step(f"Building the vision tower ({weight_format})"):
        vision = arch.vision_models(checkpoint.config, checkpoint.weights(
            np.float32 if weight_format in ("fp32", "fp16") else None), compression)
    counts = Counter()
    for model in vision.values():
        precisions = layer_precisions(model)
        counts.update(precisions)
        _annotate(model, weight_format, group_size, 1.0, weight_format == "int4", precisions)
    _say(f"Vision weight layers: {', '.join(f'{count} {precision}' for precision, count in sorted(counts.items()))}")
    return vision


def _build_compressed_as_read(build, arch, args, checkpoint, read_weights, weights, weight_format, group_size,
                              ratio, sym, spill: SpillFile):
    """The model's graph (`build`: graph.build_model, or build_multimodal's models) with each weight
    compressed as it is read (compress.py): all of them, or only a GGUF's dequantized ones; the compressed
    constants moved to `spill` as they are made."""
    compression = None
    if weight_format in ("int4", "int8") and weights.to_compress != set():
        compression = WeightCompression(weight_format, group_size, ratio, sym, weights.to_compress, spill)
        details = f", group {group_size}, ratio {ratio}" if weight_format == "int4" else ""
        what = "each weight" if weights.to_compress is None else "each dequantized GGUF weight"
        _say(f"Compressing {what} to {weight_format} as it is read ({'sym' if sym else 'asym'}{details})")
    if compression and compression.needs_scores:
        # A first pass over the checkpoint (on a throwaway graph) scores every candidate, so each weight
        # can be compressed for good as the model's graph takes it.
        with _step("Scoring each weight's sensitivity to int4") as progress:
            build(arch, args, read_weights(), on_layer=lambda done, total: progress(f"layer {done}/{total}"),
                  compress=compression.score)
        compression.choose_int4()
    with _step(f"Building the {args.model_type} graph from {checkpoint.path}") as progress:
        return build(arch, args, weights, on_layer=lambda done, total: progress(f"layer {done}/{total}"),
                     compress=compression.compress if compression else graph.keep)


def _annotate(model: ov.Model, weight_format, group_size, ratio, sym, precisions) -> None:
    """What was done, kept in the IR so the directory describes itself."""
    info = {"weight_format": weight_format, "sym": str(sym), "layers": json.dumps(dict(precisions))}
    if weight_format == "int4":
        info.update(group_size=str(group_size), ratio=str(ratio))
    for key, value in info.items():
        model.set_rt_info(value, ["ovgenai_chat", key])
    # As optimum-intel sets them: keeps fp16 inference on GPU from overflowing, and an
    # uncompressed model's KV cache in f16.
    model.set_rt_info("8.0", ["runtime_options", "ACTIVATIONS_SCALE_FACTOR"])
    if weight_format in ("fp16", "fp32"):
        model.set_rt_info("f16", ["runtime_options", "KV_CACHE_PRECISION"])


def _write_generation_config(checkpoint: Checkpoint, staging: Path) -> None:
    """LLMPipeline stops on every eos id listed here; without one the model talks to itself."""
    generation = checkpoint.generation_config()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if generation.get(key) is None and checkpoint.config.get(key) is not None:
            generation[key] = checkpoint.config[key]
    (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _say(message: str, end: str = "\n") -> None:
    print(message, end=end, file=sys.stderr, flush=True)


@contextmanager
def _step(what: str):
    """'what… 1.2 s' on one line; on a terminal the step may show its progress in between."""
    _say(f"{what}…", end=" ")
    start = time.perf_counter()

    def progress(status: str) -> None:
        if sys.stderr.isatty():
            _say(f"\r\033[K{what}… {status}", end=" ")

    try:
        yield progress
    except BaseException:
        _say("failed")
        raise
    if sys.stderr.isatty():
        _say(f"\r\033[K{what}…", end=" ")
    _say(f"{time.perf_counter() - start:.1f} s")
