"""Speculative decoding (docs/speculative.md): a greedy reply drafted by a draft model, a Gemma 4 assistant, prompt
lookup or the model's own MTP head is the plain greedy reply, through `ovchat run --json`, the Python API and `ovchat serve`; what
cannot draft is a one-line error. Random weights accept little from a draft model: equality is the proof here, acceptance is measured in
benchmarks/README.md. The CLI's `auto` precision runs these small models with exact numerics (f32, f32 KV cache, no
int8 activations)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import ovgenai_chat
from conftest import run_ovchat
from ovgenai_chat.chat import Metrics
from served import KEY, Served
from test_mtp import make_predictable
from vision_checkpoints import add_mtp_head

# Two turns, the second through the first's KV cache (and, on a dense model, GenAI's prefix cache).
TURNS = ["Repeat after me: one two three four five, one two three four five.", "And once more, please."]
# SmolLM2 copies this sentence: prompt lookup must accept tokens of it.
COPY = ("Repeat this sentence word for word: The old lighthouse keeper climbed the spiral stairs every evening to "
        "light the lamp for passing ships.")


def tiny_llama(out: Path, tokenizer, seed: int) -> Path:
    """A converted Llama smaller than the tiny checkpoints (one layer, width 32) on `tokenizer`: a draft model."""
    from convert import convert

    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=512, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        initializer_range=0.2)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out / "checkpoint")
    tokenizer.save_pretrained(out / "checkpoint")
    return convert(out / "checkpoint", out / "draft", weight_format="fp32")


@pytest.fixture(scope="module")
def draft(tmp_path_factory, tokenizer) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("draft"), tokenizer, seed=1)


@pytest.fixture(scope="module")
def foreign_draft(tmp_path_factory, smollm2_checkpoint) -> Path:
    """A draft model whose tokenizer has one token more than SmolLM2's."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_checkpoint)
    tokenizer.add_tokens(["<|not-smollm2|>"])
    return tiny_llama(tmp_path_factory.mktemp("foreign"), tokenizer, seed=2)


@pytest.fixture(scope="module")
def replies(tmp_path_factory):
    """replies(model_dir, *options, turns=TURNS) → the JSON lines of `ovchat run MODEL --greedy --json OPTIONS` given
    `turns` on stdin, each run once."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "HOME": str(home), "OVCHAT_CACHE_DIR": str(home / "cache")}
    made = {}

    def get(model_dir, *options, turns=tuple(TURNS)) -> list[dict]:
        key = (str(model_dir), options, turns)
        if key not in made:
            result = run_ovchat_stdin(model_dir, "--greedy", "--json", "--max-new-tokens", "32", *options,
                                      env=env, input="\n".join(turns) + "\n")
            assert result.returncode == 0, result.stderr
            made[key] = [json.loads(line) for line in result.stdout.splitlines()]
        return made[key]

    return get


def run_ovchat_stdin(model_dir, *options, env, input: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "run", str(model_dir), *options], input=input,
                          capture_output=True, text=True, env=env, timeout=600)


def texts(lines: list[dict]) -> list[str]:
    return [line["reply"] for line in lines]


def test_without_a_drafter_nothing_is_drafted(converted, replies):
    for line in replies(converted("llama"), "--no-draft"):
        metrics = line["metrics"]
        assert (metrics["draft_tokens"], metrics["accepted_tokens"], metrics["tokens_per_pass"]) == (0, 0, 1.0)


@pytest.mark.parametrize("name", ["llama", "qwen3_5-text"])
def test_a_draft_model_gives_the_plain_greedy_replies(name, converted, draft, replies):
    plain, drafted = replies(converted(name), "--no-draft"), replies(converted(name), "--draft", str(draft))
    assert texts(drafted) == texts(plain)
    assert all(line["metrics"]["draft_tokens"] > 0 for line in drafted)  # it did draft: every pass verified some


def test_a_model_drafting_for_itself_has_every_candidate_accepted(converted, replies):
    """The counts are GenAI's: a draft that is the model itself proposes the model's own tokens."""
    plain = replies(converted("llama"), "--no-draft")
    drafted = replies(converted("llama"), "--draft", str(converted("llama")), "--draft-tokens", "4")
    assert texts(drafted) == texts(plain)
    for line in drafted:
        metrics = line["metrics"]
        assert metrics["accepted_tokens"] == metrics["draft_tokens"] > 0
        assert metrics["tokens_per_pass"] > 3


@pytest.mark.parametrize("name", ["llama", "qwen3_5-text"])
def test_prompt_lookup_gives_the_plain_greedy_replies(name, converted, replies):
    plain, looked_up = replies(converted(name), "--no-draft"), replies(converted(name), "--prompt-lookup")
    assert texts(looked_up) == texts(plain)
    assert all(line["metrics"]["draft_tokens"] > 0 for line in looked_up)


def test_prompt_lookup_accepts_what_a_reply_copies(converted, replies):
    model = converted("smollm2", "fp32")
    plain, looked_up = replies(model, "--no-draft", turns=(COPY,)), replies(model, "--prompt-lookup", turns=(COPY,))
    assert texts(looked_up) == texts(plain)
    assert "lighthouse keeper climbed the spiral stairs" in plain[0]["reply"]
    metrics = looked_up[0]["metrics"]
    assert 0 < metrics["accepted_tokens"] <= metrics["draft_tokens"]
    assert metrics["tokens_per_pass"] > 1.5


@pytest.fixture(scope="module")
def mtp(vlm_checkpoint, tmp_path_factory):
    """mtp(predictable) → a tiny Qwen3.5 (multimodal layout) with a random MTP head converted beside it, or with
    test_mtp's model built to be predictable and its head built to be right."""
    from convert import convert

    def make(predictable: bool) -> Path:
        out = tmp_path_factory.mktemp("mtp")
        path = shutil.copytree(vlm_checkpoint("qwen3_5-vision"), out / "checkpoint")
        add_mtp_head(path, seed=3)
        if predictable:
            make_predictable(path, tied=True)
        return convert(path, out / ("predictable" if predictable else "qwen3_5-mtp"), weight_format="fp32")

    return functools.cache(make)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("picture") / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_models_mtp_head_drafts_its_greedy_replies_by_default(mtp, picture, replies, env):
    model = mtp(False)
    for options in ((), ("--image", str(picture))):  # two turns; the first shows the picture
        plain, drafted = replies(model, "--no-draft", *options), replies(model, *options)
        assert texts(drafted) == texts(plain)
        assert all(line["metrics"]["draft_tokens"] > 0 for line in drafted)
        assert all(line["metrics"]["draft_tokens"] == 0 for line in plain)
    sampled = run_ovchat("run", model, "-p", TURNS[0], "--temperature", "0.7", "--json", "--max-new-tokens", "8",
                         env=env)
    assert sampled.returncode == 0, sampled.stderr
    assert "MTP head drafts greedy replies only, and this chat samples: decoding without it" in sampled.stderr
    assert "Drafter:           its MTP head" in run_ovchat("show", model, env=env).stdout
    assert json.loads(sampled.stdout)["metrics"]["draft_tokens"] == 0


def test_an_mtp_head_built_to_be_right_is_accepted(mtp, replies):
    plain, drafted = replies(mtp(True), "--no-draft"), replies(mtp(True), "--draft-tokens", "3")
    assert texts(drafted) == texts(plain)
    for line in drafted:
        metrics = line["metrics"]
        assert metrics["accepted_tokens"] >= 0.9 * metrics["draft_tokens"] > 0
        assert metrics["tokens_per_pass"] > 2


@pytest.fixture(scope="module")
def gemma4(checkpoint, tmp_path_factory):
    """(a tiny Gemma 4 converted with --mtp-outputs, test_gemma4_assistant's copying assistant for it converted): an
    assistant whose drafts a random model's repetitive reply accepts in runs."""
    from convert import convert
    from test_gemma4_assistant import TARGETS, make_assistant

    root = tmp_path_factory.mktemp("gemma4")
    target = convert(checkpoint("gemma4-text"), root / "gemma4", weight_format="fp32", mtp_outputs=True)
    assistant = make_assistant(checkpoint("gemma4-text"), TARGETS["gemma4-text"], root / "checkpoint", "copying")
    return target, convert(assistant, root / "assistant", weight_format="fp32")


def test_a_gemma4_assistant_drafts_for_its_target(gemma4, replies, converted, env):
    target, assistant = gemma4
    plain, drafted = replies(target, "--no-draft"), replies(target, "--draft", str(assistant))
    assert texts(drafted) == texts(plain)
    for line in drafted:
        metrics = line["metrics"]
        assert 0 < metrics["accepted_tokens"] <= metrics["draft_tokens"]
        assert metrics["tokens_per_pass"] > 1 and metrics["output_tokens"] == 32 and metrics["ttft_ms"] > 0
    refused = run_ovchat("run", converted("gemma4-text"), "-p", "Hi", "--greedy", "--draft", assistant, env=env)
    assert "convert it again with --mtp-outputs" in one_line_error(refused)
    refused = run_ovchat("run", converted("llama"), "-p", "Hi", "--greedy", "--draft", assistant, env=env)
    assert "it is a Gemma 4 assistant drafter for a Gemma 4 of width" in one_line_error(refused)


def one_line_error(result) -> str:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def test_a_draft_model_of_another_tokenizer_is_refused(converted, foreign_draft, env):
    model = converted("llama")
    error = one_line_error(run_ovchat("run", model, "-p", "Hi", "--greedy", "--draft", foreign_draft, env=env))
    assert f"{foreign_draft.name} cannot draft for {model.name}: their tokenizers differ" in error


@pytest.mark.parametrize("options, says", [
    (["--draft", "DRAFT", "--prompt-lookup"], "choose one"),
    (["--no-draft", "--prompt-lookup"], "--no-draft turns drafting off"),
    (["--draft-tokens", "3"], "has none"),
    (["--draft", "DRAFT", "--temperature", "0.7"], "greedy replies only"),
    (["--draft", "LFM2"], "linear-attention state"),
])
def test_options_that_cannot_draft_are_one_line_errors(options, says, converted, draft, env):
    options = [{"DRAFT": str(draft), "LFM2": str(converted("lfm2"))}.get(o, o) for o in options]
    assert says in one_line_error(run_ovchat("run", converted("llama"), "-p", "Hi", *options, env=env))


def test_the_python_api_drafts_and_keeps_a_drafted_chat_greedy(converted, draft, replies):
    chat = ovgenai_chat.load(converted("llama"), draft=draft, temperature=0, max_new_tokens=32)
    assert chat.send(TURNS[0]) == replies(converted("llama"), "--no-draft")[0]["reply"]
    assert chat.metrics.draft_tokens > 0
    assert f"drafted by draft model {draft.name}, 3 tokens per pass" in chat.describe_settings()
    with pytest.raises(ValueError, match="drafts greedy replies only"):
        chat.configure(temperature=0.7)


def test_stats_say_what_was_drafted():
    metrics = Metrics(10.0, 2.0, 500.0, 20, 12, "accurate", draft_tokens=15, accepted_tokens=6, tokens_per_pass=2.0)
    assert "6 of 15 drafted tokens accepted, 2.00 tokens per pass" in metrics.summary()
    assert "drafted" not in Metrics(10.0, 2.0, 500.0, 20, 12).summary()


@pytest.fixture(scope="module")
def store(tmp_path_factory, checkpoint, draft, mtp, gemma4) -> Path:
    """A store with the draft model as `draft`, the tiny Llama pulled as `main` with `--draft draft`, the tiny
    Qwen3.5 with an MTP head as `qwen-mtp`, and the tiny Gemma 4 pulled as `gemma4` with its assistant."""
    store = tmp_path_factory.mktemp("store")
    (store / "draft").symlink_to(draft)
    (store / "qwen-mtp").symlink_to(mtp(False))
    (store / "assistant").symlink_to(gemma4[1])
    env = {**os.environ, "OVCHAT_MODELS": str(store), "HOME": str(tmp_path_factory.mktemp("home"))}
    for source, name, options in ((checkpoint("llama"), "main", ["--draft", "draft"]),
                                  (checkpoint("gemma4-text"), "gemma4", ["--mtp-outputs", "--draft", "assistant"])):
        pulled = run_ovchat("pull", source, "--name", name, "--weight-format", "fp32", *options, env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert f"drafted by {options[-1]}" in pulled.stdout
    return store


def test_a_pulled_model_drafts_with_its_own_drafter(store, converted, replies, env):
    env = {**env, "OVCHAT_MODELS": str(store)}
    shown = run_ovchat("show", "main", env=env)
    assert shown.returncode == 0 and "Drafter:           draft" in shown.stdout
    drafted = run_ovchat("run", "main", "-p", TURNS[0], "--greedy", "--json", "--max-new-tokens", "32", env=env)
    assert drafted.returncode == 0, drafted.stderr
    line = json.loads(drafted.stdout)
    assert line["reply"] == replies(converted("llama"), "--no-draft")[0]["reply"]
    assert line["metrics"]["draft_tokens"] > 0
    # A sampled chat decodes without it, and says so.
    sampled = run_ovchat("run", "main", "-p", TURNS[0], "--temperature", "0.7", "--json", "--max-new-tokens", "8",
                         env=env)
    assert sampled.returncode == 0, sampled.stderr
    assert "drafts greedy replies only, and this chat samples: decoding without it" in sampled.stderr
    assert json.loads(sampled.stdout)["metrics"]["draft_tokens"] == 0


def test_a_pulled_model_whose_drafter_is_gone_runs_without_it_and_says_so(store, tmp_path, env):
    copy = tmp_path / "store"
    shutil.copytree(store / "main", copy / "main")
    result = run_ovchat("run", "main", "-p", "Hi", "--greedy", "--json", "--max-new-tokens", "4",
                        env={**env, "OVCHAT_MODELS": str(copy)})
    assert result.returncode == 0, result.stderr
    assert "main's drafter draft cannot draft: no model named draft" in result.stderr
    assert json.loads(result.stdout)["metrics"]["draft_tokens"] == 0


def test_the_server_drafts_greedy_requests_with_the_models_drafter(store, converted, mtp, gemma4, replies, tmp_path):
    served = Served(None, "--api-key", KEY, home=tmp_path, env={"OVCHAT_MODELS": str(store)})
    try:
        request = {"model": "main", "messages": [{"role": "user", "content": TURNS[0]}], "max_tokens": 32,
                   "temperature": 0}
        greedy = served.post("/v1/chat/completions", request, timeout=300)
        assert greedy.status_code == 200, greedy.text
        body = greedy.json()
        assert body["choices"][0]["message"]["content"] == replies(converted("llama"), "--no-draft")[0]["reply"]
        usage = body["usage"]
        assert usage["draft_tokens"] > 0 and usage["accepted_tokens"] >= 0
        assert usage["timings"]["tokens_per_pass"] >= 1.0
        assert served.ps()[0]["drafter"] == "draft model draft, 3 tokens per pass"
        # A sampled request is answered without the drafter, which drafts greedy replies only.
        sampled = served.post("/v1/chat/completions", {**request, "temperature": 0.7, "max_tokens": 8})
        assert sampled.status_code == 200, sampled.text
        assert sampled.json()["usage"]["draft_tokens"] == 0
        # A model's MTP head drafts its greedy requests.
        headed = served.post("/v1/chat/completions", {**request, "model": "qwen-mtp"}, timeout=300)
        assert headed.status_code == 200, headed.text
        assert headed.json()["choices"][0]["message"]["content"] == replies(mtp(False), "--no-draft")[0]["reply"]
        assert headed.json()["usage"]["draft_tokens"] > 0
        # A Gemma 4's assistant drafts its greedy requests, on the stateful pipeline.
        assisted = served.post("/v1/chat/completions", {**request, "model": "gemma4"}, timeout=300)
        assert assisted.status_code == 200, assisted.text
        assert assisted.json()["choices"][0]["message"]["content"] == replies(gemma4[0], "--no-draft")[0]["reply"]
        assert 0 < assisted.json()["usage"]["accepted_tokens"] <= assisted.json()["usage"]["draft_tokens"]
        assert assisted.json()["usage"]["timings"]["tokens_per_pass"] > 1
    finally:
        assert served.stop() == 0, "".join(served.log)
