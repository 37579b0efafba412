"""Tokenizer and detokenizer IR (openvino_tokenizers), with the chat template in their rt_info."""

from __future__ import annotations

from pathlib import Path

import openvino as ov

# Files a tokenizer is read from; copied beside the IR so transformers-based tools (optimum-intel)
# can load the same directory. Never *.py: no code from the checkpoint travels or runs.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


class TokenizerError(ValueError):
    pass


def load_hf_tokenizer(path: Path):
    """The checkpoint's tokenizer as a transformers object, which is what openvino_tokenizers takes.

    trust_remote_code stays False: a tokenizer that needs its own Python code is refused."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # transformers raises many types here; all mean "no usable tokenizer"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerError(f"cannot load the tokenizer from {path}: {first_line}") from None


def convert_tokenizer(hf_tokenizer) -> tuple[ov.Model, ov.Model]:
    from openvino_tokenizers import convert_tokenizer as ov_convert

    if not getattr(hf_tokenizer, "chat_template", None):
        raise TokenizerError("the tokenizer has no chat template; a chat model needs one")
    return ov_convert(hf_tokenizer, with_detokenizer=True)
