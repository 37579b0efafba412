"""Speculative decoding: which drafter proposes a model's next tokens, checked before GenAI sees the pair.

A drafter proposes a few tokens, and the model checks them all in one pass: a greedy reply keeps each proposed token
only where it is the model's own choice, so the reply is the model's (docs/speculative.md has what each method pays).
GenAI drafts on paged attention (engine.open_pipeline picks it; an MTP head through a ContinuousBatchingPipeline),
with prefix caching off for a model with linear-attention state (Qwen3.5, LFM2), and a Gemma 4 assistant on the
stateful SDPA pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .engine import MTP_MODEL, ModelError, check_model_dir, has_linear_state, language_model, model_type, sees_images
from .store import recorded_drafter, resolve

# Candidates per pass when the user names none. Verifying K tokens is one pass of the model but not the price of
# one token on a CPU: the matrix kernels become compute-bound (benchmarks/weight_formats.py --tokens; an AVX2
# EPYC: 4 tokens cost 2.95x one at int4 g128), and a candidate counts only if every one before it was accepted, so
# a pass gains at most 1/(1-a) tokens at acceptance a whatever K is.
DEFAULT_TOKENS = {
    # A draft model's candidates: each costs a pass of the draft model too, and with acceptance 0.7, three give
    # 2.2 of the 3.3 tokens per pass an endless chain would.
    "draft": 3,
    # Prompt lookup's cost nothing to make and come in runs where a reply copies its prompt, but GenAI pads every
    # pass to K candidates, matched or not. With the default model on a 2-core EPYC Zen 3 (AVX2; docs/speculative.md)
    # 3 was the fastest or near it on every grounded task: 5 accepted longer runs yet verified them more slowly
    # (copying a text 0.77x the plain TPOT against 0.70x, a summary 1.03x against 0.71x); on a Zen 5 (AVX-512),
    # 3 gave 0.36-0.78x on the text tasks.
    "prompt-lookup": 3,
    # An MTP head is trained to predict one token past the model's next; a second draft feeds the head its own
    # hidden state, which it was not trained on (GenAI's and optimum-intel's Qwen3.5 examples use 1).
    "mtp": 1,
    # A Gemma 4 assistant is a few layers on the model's own keys and values, far cheaper per candidate than a
    # draft model; GenAI measured 6 on a prompt made to be copied (PR #3958), 4 asks less of an everyday reply.
    "assistant": 4,
}
MAX_NGRAM = 3  # prompt lookup matches the reply's last 3 tokens (or 2, or 1) in the prompt, as GenAI's sample does
METHODS = {"draft": "draft model", "prompt-lookup": "prompt lookup", "mtp": "MTP head", "assistant": "Gemma 4 assistant"}
# A Gemma 4 assistant drafter's config.json model_type: it drafts from what its target outputs beside the logits
# (`ovchat convert --mtp-outputs`), first of all MTP_OUTPUT.
ASSISTANT = "gemma4_assistant"
MTP_OUTPUT = "mtp_last_hidden_state"


@dataclass(frozen=True)
class Drafter:
    """How a model's replies are drafted: `method` is "draft" (a smaller model of the same tokenizer in `model_dir`),
    "assistant" (a Gemma 4 assistant drafter in `model_dir`), "prompt-lookup" (the prompt's own n-grams) or "mtp"
    (the model's MTP head, MTP_MODEL in `model_dir`, the model's own); `tokens` candidates per pass; `own`: the
    model's own drafter (its MTP head, or the drafter recorded at `ovchat pull --draft`), not one asked for."""

    method: str
    tokens: int
    model_dir: Path | None = None
    own: bool = False

    @property
    def samples(self) -> bool:
        """Whether it drafts sampled replies too. Prompt lookup checks each candidate against the token the model
        samples, so a sampled reply keeps the model's distribution. A draft model's speculative sampling in GenAI
        2026.4.1 failed its first sampled reply here (a `content_length` check in sequence_group.cpp) and drafted
        nothing in the next; its acceptance test is also coarse (a uniform draw in steps of 1%). So a draft model
        drafts greedy replies only, as GenAI's MTP and Gemma 4 assistant do ("MTP speculative decoding supports
        greedy decoding only")."""
        return self.method == "prompt-lookup"

    @property
    def name(self) -> str:
        own = self.method in ("prompt-lookup", "mtp")
        return METHODS[self.method] if own else f"{METHODS[self.method]} {self.model_dir.name}"

    def describe(self) -> str:
        return f"{self.name}, {self.tokens} token{'s' if self.tokens > 1 else ''} per pass"

    @property
    def batching(self) -> bool:
        """Whether it runs on a ContinuousBatchingPipeline rather than an LLMPipeline: an MTP head does. GenAI drafts
        with one only for the multimodal layout, which LLMPipeline on paged attention fails to load ("Unsupported
        property sampler_num_threads by CPU plugin"), and VLMPipeline cannot draft."""
        return self.method == "mtp"

    @property
    def stateful(self) -> bool:
        """Whether it drafts on the stateful SDPA pipeline rather than paged attention: a Gemma 4 assistant does,
        GenAI's only drafting there on a CPU (StatefulGemma4MTPLLMPipeline, "greedy, batch 1")."""
        return self.method == "assistant"

    def configure(self, config):
        """`config` (a GenerationConfig) drafting with this drafter."""
        config.num_assistant_tokens = self.tokens
        if self.method == "prompt-lookup":
            config.max_ngram_size = MAX_NGRAM
        return config

    def pipeline_properties(self, device: str, properties: dict) -> dict:
        """What GenAI's pipeline is given to draft; `properties` are the model's compile properties, which a draft
        model is compiled with too."""
        import openvino_genai

        if self.method == "prompt-lookup":
            return {"prompt_lookup": True}
        return {"draft_model": openvino_genai.draft_model(self.model_dir, device, **properties)}


def tokenizer_of(model_dir: Path):
    import openvino_genai

    return openvino_genai.Tokenizer(model_dir)


def same_tokenizer(a, b) -> bool:
    """Whether two openvino_genai Tokenizers are the same: vocabulary and special tokens. (GenAI itself compares one
    sentence's token count and the special ids, which lets two tokenizers of one size and different merges pass.)"""
    return (a.get_vocab() == b.get_vocab()
            and (a.get_bos_token_id(), a.get_eos_token_id(), a.get_pad_token_id())
            == (b.get_bos_token_id(), b.get_eos_token_id(), b.get_pad_token_id()))


def draft_method(draft_dir: Path) -> str:
    """How the model in `draft_dir` drafts: "assistant" for a Gemma 4 assistant, else "draft"."""
    return "assistant" if model_type(draft_dir) == ASSISTANT else "draft"


def drafter_of(draft, tokens: int | None, own: bool = False) -> Drafter:
    """The Drafter of the draft model or assistant `draft` (a store name or a directory); ModelError if not one."""
    draft_dir = check_drafter_dir(resolve(draft))
    method = draft_method(draft_dir)
    return Drafter(method, tokens or DEFAULT_TOKENS[method], draft_dir, own)


def check_drafter_dir(path: Path) -> Path:
    """A Gemma 4 assistant's directory has its model and config.json but no tokenizer (GenAI uses its target's)."""
    if model_type(path) == ASSISTANT and (path / "openvino_model.xml").is_file():
        return path
    return check_model_dir(path)


def check_assistant(model_dir: Path, assistant_dir: Path) -> None:
    """ModelError, in a line, unless the Gemma 4 assistant in `assistant_dir` can draft for the model in `model_dir`:
    a Gemma 4 in the text layout of the assistant's width, converted with the outputs it reads."""
    width = json.loads((assistant_dir / "config.json").read_text()).get("backbone_hidden_size")
    config = json.loads((model_dir / "config.json").read_text())
    if not str(model_type(model_dir)).startswith("gemma4") or config.get("hidden_size") != width:
        raise ModelError(f"{assistant_dir.name} cannot draft for {model_dir.name}: it is a Gemma 4 assistant drafter "
                         f"for a Gemma 4 of width {width}")
    if MTP_OUTPUT not in language_model(model_dir).read_text(errors="replace"):
        raise ModelError(f"{assistant_dir.name} cannot draft for {model_dir.name}: the model lacks the outputs a Gemma "
                         f"4 assistant reads; convert it again with --mtp-outputs")


def check_pair(model_dir: Path, draft_dir: Path) -> None:
    """ModelError, in a line naming both, unless the model in `draft_dir` can draft for the one in `model_dir`."""
    if draft_method(draft_dir) == "assistant":
        return check_assistant(model_dir, draft_dir)
    if sees_images(model_dir):
        raise ModelError(f"{model_dir.name} sees images, and GenAI drafts with a draft model only for text models; "
                         f"leave out the draft model, or convert {model_dir.name} with --text-only")
    if sees_images(draft_dir):
        raise ModelError(f"{draft_dir.name} cannot draft for {model_dir.name}: a draft model is a text model, and "
                         f"{draft_dir.name} sees images (convert it with --text-only)")
    if has_linear_state(draft_dir):
        raise ModelError(f"{draft_dir.name} cannot draft for {model_dir.name}: it has linear-attention state (a short "
                         f"convolution or Gated DeltaNet), and GenAI 2026.4.1 fails to draft with such a model; "
                         f"choose a transformer draft model")
    if not same_tokenizer(tokenizer_of(model_dir), tokenizer_of(draft_dir)):
        raise ModelError(f"{draft_dir.name} cannot draft for {model_dir.name}: their tokenizers differ (a draft "
                         f"model must share the model's tokenizer)")


def sampled(model_dir: Path, settings: dict) -> bool:
    """Whether replies with these settings (chat.generation_config's) over the model's generation_config.json
    sample."""
    import openvino_genai

    from .chat import generation_config

    file = model_dir / "generation_config.json"
    config = openvino_genai.GenerationConfig(str(file)) if file.is_file() else openvino_genai.GenerationConfig()
    return generation_config(config, **settings).do_sample


def choose(model_dir: Path, draft=None, prompt_lookup: bool = False, tokens: int | None = None,
           no_draft: bool = False, settings: dict | None = None,
           notify: Callable[[str], None] = lambda message: None) -> Drafter | None:
    """The drafter for a chat with the model in `model_dir`: the draft model or Gemma 4 assistant `draft` (a store
    name or a directory), prompt lookup, none (`no_draft`), or by default the model's own (own_drafter), which steps
    aside, with a notice, when it cannot draft (it cannot load, or the chat samples); `tokens` per pass. `settings`:
    the chat's generation settings. ModelError for options that do not go together or a pair that cannot draft."""
    if no_draft and (draft or prompt_lookup or tokens):
        raise ModelError("--no-draft turns drafting off; leave out --draft, --prompt-lookup and --draft-tokens with it")
    if draft and prompt_lookup:
        raise ModelError("--draft and --prompt-lookup are two ways of drafting, and GenAI runs one at a time: "
                         "choose one")
    if no_draft:
        return None
    if prompt_lookup:
        if sees_images(model_dir):
            raise ModelError(f"{model_dir.name} sees images; prompt lookup drafts for text models")
        return Drafter("prompt-lookup", tokens or DEFAULT_TOKENS["prompt-lookup"])
    if draft is None:
        drafter = own_drafter(model_dir, tokens, notify)
        if drafter is None and tokens:
            raise ModelError(f"--draft-tokens sets how many tokens a drafter proposes, and {model_dir.name} has none: "
                             f"add --draft NAME or --prompt-lookup")
        if drafter is None:
            return None
    else:
        drafter = drafter_of(draft, tokens)
        check_pair(model_dir, drafter.model_dir)
    if not drafter.samples and sampled(model_dir, settings or {}):
        if not drafter.own:
            raise ModelError(f"a {METHODS[drafter.method]} drafts greedy replies only, and this chat samples: add "
                             f"--greedy (or --temperature 0), or leave out --draft")
        notify(f"({model_dir.name}'s {drafter.name} drafts greedy replies only, and this chat samples: decoding "
               f"without it)")
        return None
    return drafter


def own_drafter(model_dir: Path, tokens: int | None = None,
                notify: Callable[[str], None] = lambda message: None) -> Drafter | None:
    """The model's own drafter: its MTP head, else the drafter `ovchat pull --draft` recorded if it can draft for the
    model; one that cannot is left out with a notice (it was removed from the store, or changed)."""
    if (model_dir / MTP_MODEL).is_file():
        return Drafter("mtp", tokens or DEFAULT_TOKENS["mtp"], model_dir, own=True)
    draft = recorded_drafter(model_dir)
    if draft is None:
        return None
    try:
        drafter = drafter_of(draft, tokens, own=True)
        check_pair(model_dir, drafter.model_dir)
    except ModelError as e:
        notify(f"({model_dir.name}'s drafter {draft} cannot draft: {e}; decoding without it)")
        return None
    return drafter
