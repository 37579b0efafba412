"""Data-aware int4 compression: NNCF's AWQ, scale estimation and GPTQ on the converted OpenVINO model,
calibrated on text tokenized with the model's own tokenizer and chat template. No torch, no hub dataset.

NNCF needs the whole uncompressed model for these (they choose scales from each layer's input
activations), so a data-aware conversion holds it, as optimum-cli does; the data-free default compresses
weight by weight instead (compress.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

# Tokens per calibration sample; NNCF subsamples the tokens it keeps statistics of.
SAMPLE_TOKENS = 256
DEFAULT_SAMPLES = 128  # optimum-cli's default for AWQ and scale estimation


class CalibrationError(Exception):
    """Data-aware compression cannot run as asked; the message is one line for the user."""


@dataclass(frozen=True)
class DataAware:
    """What `--awq --scale-estimation --gptq --dataset FILE --num-samples N` ask for."""

    awq: bool = False
    scale_estimation: bool = False
    gptq: bool = False
    dataset: Path | None = None  # a UTF-8 text; None: the second half of ovgenai_chat's shipped eval.txt
    num_samples: int = DEFAULT_SAMPLES

    @property
    def algorithms(self) -> list[str]:
        return [name for name, on in (("awq", self.awq), ("scale_estimation", self.scale_estimation),
                                      ("gptq", self.gptq)) if on]

    def describe(self) -> str:
        names = {"awq": "AWQ", "scale_estimation": "scale estimation", "gptq": "GPTQ"}
        return " + ".join(names[a] for a in self.algorithms)


def calibration_text(data: DataAware) -> tuple[str, str]:
    """(text, where it is from). The shipped text's second half by default: `ovchat eval` reads from its
    start, so what it scores by default is held out from calibration."""
    from ovgenai_chat.evaluate import DEFAULT_TEXT, EvaluationError, read_text

    try:
        text = read_text(data.dataset)
    except EvaluationError as e:
        raise CalibrationError(str(e)) from None
    if data.dataset is not None:
        return text, str(data.dataset)
    half = text.index("\n\n", len(text) // 2)
    return text[half:].strip(), f"the second half of {DEFAULT_TEXT.name}"


def samples(hf_tokenizer, text: str, count: int) -> list[list[int]]:
    """Up to `count` samples of up to SAMPLE_TOKENS tokens, from passages spread evenly over `text`. With a
    chat template, each passage is a conversation: its first half the user's message, the rest the
    assistant's reply, so the activations include the template's own tokens."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    passages, current = [], []
    for paragraph in paragraphs:  # about SAMPLE_TOKENS tokens of English per passage
        current.append(paragraph)
        if sum(map(len, current)) >= 4 * SAMPLE_TOKENS:
            passages.append(current)
            current = []
    if current:
        passages.append(current)
    chosen = [passages[i] for i in np.linspace(0, len(passages) - 1, min(count, len(passages))).astype(int)]
    return [_ids(hf_tokenizer, passage)[:SAMPLE_TOKENS] for passage in chosen]


def _ids(hf_tokenizer, passage: list[str]) -> list[int]:
    if getattr(hf_tokenizer, "chat_template", None):
        if len(passage) == 1:
            words = passage[0].split(" ")
            passage = [" ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])]
        middle = len(passage) // 2
        conversation = [{"role": "user", "content": "\n\n".join(passage[:middle])},
                        {"role": "assistant", "content": "\n\n".join(passage[middle:])}]
        try:
            text = hf_tokenizer.apply_chat_template(conversation, tokenize=False)
            return hf_tokenizer(text, add_special_tokens=False).input_ids
        except Exception:  # a template that wants something else (a system turn, tools): plain text
            pass
    return hf_tokenizer("\n\n".join(passage)).input_ids


def _inputs(ids: list[int]) -> dict:
    """One prompt as the stateful IR takes it (NNCF resets the KV cache before each)."""
    n = len(ids)
    return {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def compress_with_data(model: ov.Model, hf_tokenizer, data: DataAware, group_size: int, ratio: float,
                       sym: bool) -> tuple[ov.Model, str]:
    """The whole model compressed by nncf.compress_weights with a dataset (int4 `ratio` of the layers,
    chosen by NNCF's data-aware sensitivity; the rest, the embedding and lm_head int8 asymmetric), and
    a line saying what was done. NNCF shows its own progress bars, on stderr."""
    import contextlib
    import logging

    import nncf
    from nncf.common.logging import nncf_logger

    text, origin = calibration_text(data)
    calibration = samples(hf_tokenizer, text, data.num_samples)
    if not calibration:
        raise CalibrationError(f"{origin} gives no calibration sample")
    tokens = sum(map(len, calibration))
    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # its precision table repeats what convert prints
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT4_SYM if sym else nncf.CompressWeightsMode.INT4_ASYM,
                ratio=ratio, group_size=group_size, dataset=nncf.Dataset(calibration, _inputs),
                subset_size=len(calibration), **{name: True for name in data.algorithms},
                advanced_parameters=nncf.AdvancedCompressionParameters(
                    group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST))
    except (nncf.ValidationError, nncf.ParameterNotSupportedError, nncf.UnsupportedModelError) as e:
        raise CalibrationError(f"NNCF refused {data.describe()}: {str(e).strip().splitlines()[0]}") from None
    finally:
        nncf.set_log_level(level)
    for key, value in (("data_aware", ",".join(data.algorithms)), ("num_samples", str(len(calibration))),
                       ("calibration_tokens", str(tokens)), ("dataset", origin)):
        model.set_rt_info(value, ["ovgenai_chat", key])
    return model, (f"{data.describe()} calibrated on {len(calibration)} samples ({tokens} tokens) "
                   f"from {origin}")
