"""One parity runner over every architecture variant and the real SmolLM2 model: the converted
fp32 IR against transformers' PyTorch model, logits and greedy generation through LLMPipeline."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino_genai
import pytest
import torch
import transformers

from checkpoints import LONGROPE_SWITCH, VARIANTS, auto_model_class
from conftest import ALL_MODELS
from templates import THINKING

# f32 everywhere: this CPU defaults to bf16 inference, a u8 KV cache, and int8 activations for
# matrix multiplications with compressed weights.
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea, then explain it in two sentences.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # explain this",
]
NEW_TOKENS = 32
# Runs NEW_TOKENS tokens whatever comes, like reference_greedy.
GREEDY = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)


def reference_model(path):
    model_type = json.loads((path / "config.json").read_text())["model_type"]
    return auto_model_class(model_type).from_pretrained(path, dtype=torch.float32).eval()


def templated_ids(tokenizer, messages, **template_context) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_context)
    return tokenizer(text, add_special_tokens=False).input_ids


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding one token at a time through the KV cache, never stopping at eos."""
    out, past = [], None
    step = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            result = model(step, cache=past, use_cache=True)
            past = result.cache
            token = int(result.logits[0, -1].argmax())
            out.append(token)
            step = torch.tensor([[token]])
    return out


def ir_logits(compiled: ov.CompiledModel, ids: list[int], chunks: int) -> np.ndarray:
    """Logits for `ids`, fed in `chunks` pieces so later pieces read the stateful KV cache."""
    request = compiled.create_infer_request()
    bounds = np.linspace(0, len(ids), chunks + 1).astype(int)
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        inputs = {
            "input_ids": np.array([ids[start:stop]], np.int64),
            "attention_mask": np.ones((1, stop), np.int64),
            "position_ids": np.arange(start, stop, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        }
        pieces.append(request.infer(inputs)["logits"])
    return np.concatenate(pieces, axis=1)[0]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fp32_logits_match_transformers(name, checkpoint, converted, tokenizer_of):
    path, tokenizer = converted(name, "fp32"), tokenizer_of(name)
    model = reference_model(checkpoint(name))
    compiled = ov.Core().compile_model(path / "openvino_model.xml", "CPU", EXACT)
    worst = 0.0
    for prompt in PROMPTS:
        ids = templated_ids(tokenizer, [{"role": "user", "content": prompt}])
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].numpy()
        # One pass over the prompt, then the same prompt in pieces through the KV cache. Longrope
        # picks its frequencies by the sequence length so far, so there only the single pass compares.
        for chunks in (1,) if "longrope" in name else (1, 3):
            worst = max(worst, float(np.abs(ir_logits(compiled, ids, chunks) - expected).max()))
    print(f"{name}: max |logits - transformers| = {worst:.2e}")
    assert worst <= 1e-3


# Gemma 2 soft-caps its attention scores, which OpenVINO's paged attention cannot: its graph computes
# attention op by op, and GenAI's paged conversion needs ScaledDotProductAttention ops (the server
# refuses such a model, tests/test_serve.py). Every other model runs under both backends.
SOFT_CAPPED = [name for name in VARIANTS if name.startswith("gemma2")]


def backends(names) -> list[tuple[str, str]]:
    return [(name, backend) for name in names for backend in ("PA", "SDPA") if not (backend == "PA" and name in SOFT_CAPPED)]


@pytest.mark.parametrize("name,backend", backends(ALL_MODELS))
def test_greedy_generation_matches_transformers(name, backend, checkpoint, converted, tokenizer_of):
    """LLMPipeline's greedy tokens equal transformers' token for token."""
    path = converted(name, "fp32")
    ids = templated_ids(tokenizer_of(name), [{"role": "user", "content": PROMPTS[0]}])
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND=backend, **EXACT)
    tokens = pipe.generate(ov.Tensor(np.array([ids], np.int64)), GREEDY).tokens[0]
    assert list(tokens) == reference_greedy(reference_model(checkpoint(name)), ids, NEW_TOKENS)


# Not the longrope switch: a reused KV cache keeps keys rotated with the short factors, which a
# fresh pass over the longer history recomputes with the long ones (in transformers too).
@pytest.mark.parametrize("name,backend", backends(name for name in ALL_MODELS if name != LONGROPE_SWITCH))
def test_second_chat_turn_matches_transformers(name, backend, checkpoint, converted, tokenizer_of):
    """A second turn, which reuses the first turn's KV cache, equals transformers' greedy reply to
    the whole history templated by jinja2 (GenAI renders the family's template itself)."""
    path, tokenizer = converted(name, "fp32"), tokenizer_of(name)
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND=backend, **EXACT)
    messages = [{"role": "user", "content": PROMPTS[1]}]
    history = openvino_genai.ChatHistory()
    history.append(messages[0])
    first = pipe.generate(history, GREEDY).texts[0]
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Now say it shorter."}]
    history.append(messages[1])
    history.append(messages[2])
    second = pipe.generate(history, GREEDY).texts[0]
    expected = reference_greedy(reference_model(checkpoint(name)), templated_ids(tokenizer, messages), NEW_TOKENS)
    assert second == tokenizer.decode(expected, skip_special_tokens=True)


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "You are terse. /no_think"}, {"role": "user", "content": " Hi there "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello!"},
     {"role": "user", "content": "Name a colour."}],
]


def family_variants(families) -> list[str]:
    return [name for name in VARIANTS if name.split("-")[0] in families]


@pytest.mark.parametrize("name", ["smollm2", *family_variants(("qwen3", "qwen3_5", "lfm2", "gemma3", "smollm3", "mistral",
                                                                      "gpt_oss"))])
def test_chat_template_renders_as_in_transformers(name, converted, tokenizer_of):
    """The family's template, from the tokenizer IR's rt_info through GenAI's template engine, gives
    the prompt jinja2 gives, with and without enable_thinking. A template without a system role
    makes jinja2 raise; GenAI puts the system text at the start of the first user message instead."""
    genai = openvino_genai.Tokenizer(converted(name, "fp32"))
    tokenizer = tokenizer_of(name)
    for messages in CONVERSATIONS:
        for context in ({}, {"enable_thinking": True}, {"enable_thinking": False}):
            history = openvino_genai.ChatHistory(messages)
            rendered = genai.apply_chat_template(history, add_generation_prompt=True, extra_context=context or None)
            try:
                expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **context)
            except Exception as e:  # jinja2's TemplateError from raise_exception
                assert "System role not supported" in str(e)
                system, user, *rest = messages
                folded = [{"role": "user", "content": system["content"] + "\n" + user["content"]}, *rest]
                expected = tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True, **context)
            assert rendered == expected, (messages, context)


@pytest.mark.parametrize("name", family_variants(THINKING))
def test_thinking_switch_reaches_the_template_in_llmpipeline(name, checkpoint, converted, tokenizer_of):
    """enable_thinking=false through ChatHistory's extra context: the greedy reply equals transformers'
    on the prompt jinja2 renders with enable_thinking=False (which differs from the default one)."""
    tokenizer = tokenizer_of(name)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    ids = templated_ids(tokenizer, messages, enable_thinking=False)
    assert ids != templated_ids(tokenizer, messages)
    history = openvino_genai.ChatHistory(messages)
    history.set_extra_context({"enable_thinking": False})
    pipe = openvino_genai.LLMPipeline(converted(name, "fp32"), "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    reply = pipe.generate(history, GREEDY).texts[0]
    assert reply == tokenizer.decode(reference_greedy(reference_model(checkpoint(name)), ids, NEW_TOKENS),
                                     skip_special_tokens=True)


@pytest.mark.parametrize("name", VARIANTS)
def test_default_int4_conversion_runs_in_llmpipeline(name, converted, tokenizer_of):
    """NNCF's int4 default on every architecture: int4 layers, and an IR LLMPipeline loads and
    generates with (no accuracy claim on random weights)."""
    path = converted(name, "int4")
    model = ov.Core().read_model(path / "openvino_model.xml")
    layers = json.loads(model.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    assert any(precision.startswith("int4") for precision in layers), layers
    ids = templated_ids(tokenizer_of(name), [{"role": "user", "content": PROMPTS[1]}])
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND="SDPA")
    assert len(pipe.generate(ov.Tensor(np.array([ids], np.int64)), GREEDY).tokens[0]) == NEW_TOKENS
