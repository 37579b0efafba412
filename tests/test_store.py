"""Named local models: pull → list → show → run → rm in a private store, from a tiny checkpoint and from a
GGUF; name clashes, missing names, an interrupted pull; and the sampling defaults a model recommends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import smollm2
from conftest import run_ovchat
from gguf_files import BLOCK_TYPES, write_gguf


@pytest.fixture
def env(tmp_path) -> dict:
    """A private home, cache and model store."""
    (tmp_path / "home").mkdir()
    return {**os.environ, "HOME": str(tmp_path / "home"), "OVCHAT_CACHE_DIR": str(tmp_path / "cache"),
            "OVCHAT_MODELS": str(tmp_path / "store")}


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(errors) == 1 and expected in errors[0], result.stderr


def test_pull_list_show_run_rm(checkpoint, env, tmp_path):
    assert "No models in" in ok(run_ovchat("list", env=env))
    assert "Pulled tiny-llama" in ok(run_ovchat("pull", checkpoint("llama"), "--name", "tiny-llama",
                                                "--weight-format", "int8", env=env))
    gguf = smollm2.gguf_dir() / smollm2.GGUF_NAME
    assert "Pulled smollm2-135m-instruct.q4_1" in ok(run_ovchat("pull", gguf, env=env))  # the name from the file

    listed = {m["name"]: m for m in json.loads(ok(run_ovchat("list", "--json", env=env)))}
    assert set(listed) == {"tiny-llama", "smollm2-135m-instruct.q4_1"}
    assert listed["tiny-llama"]["architecture"] == "llama" and listed["tiny-llama"]["weight_format"] == "int8"
    assert listed["tiny-llama"]["size_bytes"] > 0 and listed["smollm2-135m-instruct.q4_1"]["weight_format"] == "gguf"
    table = ok(run_ovchat("list", env=env)).splitlines()
    assert table[0].split() == ["NAME", "ARCHITECTURE", "WEIGHTS", "SIZE", "MODIFIED"] and len(table) == 3

    shown = json.loads(ok(run_ovchat("show", "smollm2-135m-instruct.q4_1", "--json", env=env)))
    assert shown["architecture"] == "llama" and shown["context_length"] == 8192
    assert 0.1e9 < shown["parameters"] < 0.2e9
    assert shown["layers"] == {"int4_asym_g32": 210, "int8_sym_g32": 1}
    assert "<|im_start|>" in shown["chat_template"] and shown["sampling"] == {}
    # What `auto` runs it in on this host's CPU kind: a 0.14 B model, accurately.
    assert shown["on_this_cpu"]["cpu_kind"] in ("amx", "avx512-bf16", "f32")
    assert shown["on_this_cpu"]["precision"] == "accurate" and shown["on_this_cpu"]["properties"]["KV_CACHE_PRECISION"] == "f32"
    text = ok(run_ovchat("show", "tiny-llama", env=env))
    assert "Architecture:      llama" in text and "Sampling defaults: none recommended (greedy)" in text
    assert "On this CPU:       " in text and "accurate (f32 activations" in text

    reply = ok(run_ovchat("run", "smollm2-135m-instruct.q4_1", "-p", "What is the capital of France?", env=env))
    assert "Paris" in reply
    ok(run_ovchat("run", "tiny-llama", "-p", "Hi", "--max-new-tokens", "4", env=env))
    ok(run_ovchat("eval", "tiny-llama", "--reference", "tiny-llama", "--max-tokens", "512", "--json", env=env))

    one_line_error(run_ovchat("run", "tiny-lama", "-p", "Hi", env=env), "no model named tiny-lama")
    one_line_error(run_ovchat("serve", "tiny-lama", "--port", "0", env=env), "no model named tiny-lama")
    one_line_error(run_ovchat("eval", "tiny-lama", env=env), "no model named tiny-lama")
    assert "did you mean tiny-llama" in run_ovchat("run", "tiny-lama", "-p", "Hi", env=env).stderr
    one_line_error(run_ovchat("pull", checkpoint("llama"), "--name", "tiny-llama", env=env),
                   "the store already has a model named tiny-llama")
    one_line_error(run_ovchat("pull", checkpoint("llama"), "--name", "Tiny Llama", env=env), "is not a model name")

    assert "Removed tiny-llama" in ok(run_ovchat("rm", "tiny-llama", env=env))
    assert [m["name"] for m in json.loads(ok(run_ovchat("list", "--json", env=env)))] == ["smollm2-135m-instruct.q4_1"]
    one_line_error(run_ovchat("rm", "tiny-llama", env=env), "no model named tiny-llama")
    # a directory still works wherever a name does
    ok(run_ovchat("show", tmp_path / "store" / "smollm2-135m-instruct.q4_1", env=env))


def test_an_interrupted_pull_leaves_nothing_in_the_store(checkpoint, env, tmp_path):
    store = tmp_path / "store"
    process = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.cli", "pull", checkpoint("llama"), "--name", "x"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (store.is_dir() and any(p.name.startswith(".x.partial-") for p in store.iterdir())):
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr.strip().splitlines()[-1] == "Error: interrupted; nothing was written"
    assert list(store.iterdir()) == []


# --- sampling defaults ---------------------------------------------------------------------------


def with_sampling(model, out, **sampling):
    """A copy of a model directory whose generation_config.json recommends `sampling`."""
    copy = shutil.copytree(model, out)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**config, **sampling}))
    return copy


def test_replies_follow_the_sampling_the_model_recommends(converted, tmp_path):
    import ovgenai_chat

    greedy_model = converted("smollm2", "int4")
    sampling_model = with_sampling(greedy_model, tmp_path / "sampling", do_sample=True, temperature=1.5, top_k=50,
                                   top_p=1.0)
    prompt = "Write one sentence about the sea."
    greedy = ovgenai_chat.load(greedy_model, "CPU", use_cache=False, max_new_tokens=24)
    assert greedy.describe_settings() == "max_new_tokens 24, greedy"
    expected = greedy.send(prompt)

    chat = ovgenai_chat.load(sampling_model, "CPU", use_cache=False, max_new_tokens=24)
    assert chat.describe_settings() == "max_new_tokens 24, temperature 1.5, top_p 1, top_k 50"
    replies = set()
    for seed in range(3):
        chat.reset()
        chat.configure(seed=seed)
        replies.add(chat.send(prompt))
    assert replies != {expected}  # it samples: not only the greedy reply

    chat.reset()
    chat.configure(temperature=0.0)  # what --temperature 0 and /set temperature 0 do
    assert chat.describe_settings() == "max_new_tokens 24, greedy"
    assert chat.send(prompt) == expected


def test_greedy_and_temperature_zero_on_the_command_line(converted, tmp_path):
    model = with_sampling(converted("smollm2", "int4"), tmp_path / "sampling", do_sample=True, temperature=1.5)
    prompt = ["-p", "Name a colour.", "--max-new-tokens", "16", "--no-cache"]
    greedy = ok(run_ovchat("run", converted("smollm2", "int4"), *prompt))
    assert ok(run_ovchat("run", model, *prompt, "--temperature", "0")) == greedy
    assert ok(run_ovchat("run", model, *prompt, "--greedy")) == greedy
    shown = json.loads(ok(run_ovchat("show", model, "--json")))
    assert shown["sampling"] == {"do_sample": True, "temperature": 1.5}


def test_a_gguf_recommending_sampling_settings_passes_them_on(checkpoint, tmp_path):
    from convert import convert

    path = write_gguf(checkpoint("llama"), tmp_path / "s.gguf", smollm2.gguf_dir() / smollm2.GGUF_NAME, BLOCK_TYPES,
                      sampling={"temp": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.05, "penalty_repeat": 1.1})
    out = convert(path, tmp_path / "ir")
    config = json.loads((out / "generation_config.json").read_text())
    assert config["do_sample"] is True
    assert config["top_k"] == 20
    assert config["temperature"] == pytest.approx(0.6) and config["repetition_penalty"] == pytest.approx(1.1)
    assert config["top_p"] == pytest.approx(0.95) and config["min_p"] == pytest.approx(0.05)
