"""What a model's weights cost in quality: its perplexity on a text and, against a reference model of the
same tokenizer (say, the fp32 conversion of the same checkpoint), the KL divergence and top-1 agreement of
their next-token distributions — as llama.cpp's `llama-perplexity --kl-divergence` reports them.

The text is read in windows of `context` tokens that overlap by half, as transformers' perplexity guide
does: the first window scores all its tokens but the first, each later one only the tokens no window
scored yet, each with at least half a window of context before it. Every token but the first is scored
once. Logits are taken window by window and reduced at once, never all kept.

numpy is imported where it is used: the CLI imports this module's defaults, and `ovchat convert` must start
no thread before it blocks signals (cli._interrupt_on_signals).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .engine import (PIPELINE_PROPERTIES, ModelError, check_model_dir, context_window, error_line, keep_telemetry_off,
                     model_precision, pick_device)

DEFAULT_TEXT = Path(__file__).with_name("texts") / "eval.txt"
DEFAULT_CONTEXT = 512
# The first 4% of the shipped text, in its three kinds (`--all` reads the 109k tokens of it): SmolLM2-135M
# scores it in ~35 s on two cores, each token read twice in f32 (windows overlap by half).
DEFAULT_MAX_TOKENS = 4096


class EvaluationError(Exception):
    """The evaluation cannot run as asked; the message is one line for the user."""


@dataclass
class Evaluation:
    perplexity: float
    tokens: int  # scored
    seconds: float
    context: int
    precision: str
    kl_divergence: float | None = None  # mean KL(reference ‖ model) in nats per token
    top1_agreement: float | None = None  # share of tokens where both models' most likely token is the same
    reference_perplexity: float | None = None

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def read_text(path=None) -> str:
    """The text to score: a UTF-8 file, or the shipped eval.txt (texts/SOURCES.md says what it holds)."""
    path = Path(path).expanduser() if path is not None else DEFAULT_TEXT
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise EvaluationError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{path} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise EvaluationError(f"{path} holds no text")
    return text


def windows(n_tokens: int, context: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over n_tokens tokens, stride context // 2."""
    stride = max(1, context // 2)
    spans, scored_up_to = [], 1  # the first token has nothing before it to be predicted from
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        spans.append((begin, end, scored_up_to))
        scored_up_to = end
        if end == n_tokens:
            break
    return spans


def log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Scorer:
    """A model directory's IR compiled for scoring: log-probabilities of the next token at each position of a
    window, from a fresh KV cache."""

    def __init__(self, model_dir: Path, device: str, properties: dict):
        import openvino as ov

        self.model_dir = model_dir
        core = ov.Core()
        try:
            self.compiled = core.compile_model(model_dir / "openvino_model.xml", device, properties)
        except RuntimeError as e:
            raise ModelError(f"cannot load {model_dir} on {device}: {error_line(e)}") from None
        self.inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        self.vocabulary = self.compiled.output("logits").get_partial_shape()[-1].get_length()
        self.request = self.compiled.create_infer_request()

    def log_probs(self, ids, first: int):
        """[len(ids) - first, vocabulary]: log p(token | ids[:i]) for i = first … len(ids) - 1, from the
        logits at positions first - 1 … len(ids) - 2."""
        import numpy as np

        n = len(ids)
        feed = {"input_ids": ids[None], "attention_mask": np.ones((1, n), np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
        self.request.reset_state()
        self.request.infer({name: value for name, value in feed.items() if name in self.inputs})
        logits = self.request.get_tensor("logits").data[0, first - 1:n - 1]
        return log_softmax(logits.astype(np.float32))


def token_ids(model_dir: Path, text: str):
    import numpy as np
    import openvino_genai

    return openvino_genai.Tokenizer(model_dir).encode(text, add_special_tokens=False).input_ids.data[0].astype(np.int64)


def evaluate(model_dir, text: str, reference_dir=None, context: int | None = None,
             max_tokens: int | None = DEFAULT_MAX_TOKENS, device: str = "CPU", precision: str = "auto",
             progress=None) -> Evaluation:
    """Score the model in `model_dir` on `text` (its first `max_tokens` tokens; None: all of it), and
    against `reference_dir` when given. `context` defaults to the model's context, at most DEFAULT_CONTEXT.
    Both models run with the precision the policy picks for the model, so that only their weights differ.
    `progress(scored, total)` is told how many tokens each window scored, of how many."""
    import numpy as np
    import openvino as ov

    keep_telemetry_off()
    start = time.perf_counter()
    model_dir = check_model_dir(model_dir)
    reference_dir = check_model_dir(reference_dir) if reference_dir is not None else None
    longest = context_window(model_dir)
    if context is None:
        context = min(longest or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    if longest and context > longest:
        raise EvaluationError(f"--context {context} is longer than the model's context of {longest} tokens")
    if context < 2:
        raise EvaluationError(f"a window of {context} token scores nothing; use --context 2 or more")
    if max_tokens is not None and max_tokens < context:
        raise EvaluationError(f"--max-tokens {max_tokens} is smaller than one window of {context} tokens "
                              f"(lower --context, or raise --max-tokens)")

    ids = token_ids(model_dir, text)
    if reference_dir is not None:
        reference_ids = token_ids(reference_dir, text)
        if len(reference_ids) != len(ids) or (reference_ids != ids).any():
            differ = np.flatnonzero(reference_ids[:len(ids)] != ids[:len(reference_ids)])
            at = int(differ[0]) if len(differ) else min(len(ids), len(reference_ids))
            raise EvaluationError(f"{reference_dir} tokenizes the text differently from {model_dir} (from token {at} "
                                  f"on): a reference must share the model's tokenizer")
    ids = ids[:max_tokens]
    if len(ids) < 2:
        raise EvaluationError("the text is shorter than two tokens: nothing to score")
    context = min(context, len(ids))

    device, _ = pick_device(device, ov.Core().available_devices)
    chosen = model_precision(precision, device, model_dir)
    # The runtime's own settings, but for the attention backend: GenAI's, not the plain IR's
    runtime = {key: value for key, value in PIPELINE_PROPERTIES.items() if key != "ATTENTION_BACKEND"}
    properties = {**runtime, **chosen.properties}
    model = Scorer(model_dir, device, properties)
    reference = Scorer(reference_dir, device, properties) if reference_dir is not None else None
    if reference is not None and reference.vocabulary != model.vocabulary:
        raise EvaluationError(f"{reference_dir} scores {reference.vocabulary} tokens, {model_dir} {model.vocabulary}: "
                              "a reference must share the model's vocabulary")

    nll = reference_nll = kl = 0.0
    agree = scored = 0
    for begin, end, first in windows(len(ids), context):
        window, targets = ids[begin:end], ids[first:end]
        log_p = model.log_probs(window, first - begin)
        nll -= log_p[np.arange(len(targets)), targets].sum(dtype=np.float64)
        if reference is not None:
            log_q = reference.log_probs(window, first - begin)
            reference_nll -= log_q[np.arange(len(targets)), targets].sum(dtype=np.float64)
            kl += (np.exp(log_q) * (log_q - log_p)).sum(dtype=np.float64)
            agree += int((log_q.argmax(-1) == log_p.argmax(-1)).sum())
        scored += len(targets)
        if progress:
            progress(len(targets), len(ids) - 1)

    result = Evaluation(perplexity=math.exp(nll / scored), tokens=scored, seconds=time.perf_counter() - start,
                        context=context, precision=chosen.name)
    if reference is not None:
        # KL is never negative; a model equal to its reference up to float rounding sums to ±1e-9
        result.kl_divergence = max(kl / scored, 0.0)
        result.top1_agreement = agree / scored
        result.reference_perplexity = math.exp(reference_nll / scored)
    return result
