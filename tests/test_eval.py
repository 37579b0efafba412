"""`ovchat eval`: perplexity as transformers computes it, KL divergence and top-1 agreement against a
reference model, and one-line errors for what it cannot score; data-aware int4 compression measured by it."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
import torch

from conftest import run_ovchat
from ovgenai_chat.evaluate import DEFAULT_MAX_TOKENS, evaluate, read_text
from test_parity import reference_model

CONTEXT = 256
MAX_TOKENS = 1536


def transformers_perplexity(model, ids: list[int], context: int) -> tuple[float, int]:
    """(perplexity, tokens scored) over windows of `context` tokens, stride context // 2, as transformers'
    perplexity guide computes it: labels before each window's new tokens are masked with -100."""
    stride, nll, scored, previous_end = context // 2, 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        input_ids = torch.tensor([ids[begin:end]])
        labels = input_ids.clone()
        labels[:, :-(end - previous_end)] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=labels).loss
        valid = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
        nll += float(loss) * valid
        scored += valid
        previous_end = end
        if end == len(ids):
            break
    return math.exp(nll / scored), scored


@pytest.mark.parametrize("name", ["llama", "qwen3-fp32", "smollm2"])
def test_perplexity_equals_transformers(name, checkpoint, converted, tokenizer_of):
    """The fp32 IR's perplexity on the shipped text is transformers' on the same windows, within 0.5%."""
    text = read_text()
    ids = tokenizer_of(name)(text, add_special_tokens=False).input_ids[:MAX_TOKENS]
    expected, scored = transformers_perplexity(reference_model(checkpoint(name)), ids, CONTEXT)
    got = evaluate(converted(name, "fp32"), text, context=CONTEXT, max_tokens=MAX_TOKENS, precision="accurate")
    print(f"{name}: perplexity {got.perplexity:.4f}, transformers {expected:.4f}, {scored} tokens")
    assert got.tokens == scored == MAX_TOKENS - 1
    assert got.perplexity == pytest.approx(expected, rel=0.005)


def test_a_model_against_itself_has_kl_zero(converted):
    model = converted("smollm2", "int4")
    result = evaluate(model, read_text(), reference_dir=model, context=CONTEXT, max_tokens=MAX_TOKENS)
    assert result.kl_divergence == pytest.approx(0.0, abs=1e-9)
    assert result.top1_agreement == 1.0
    assert result.reference_perplexity == result.perplexity


def test_int4_costs_kl_and_perplexity_against_fp32(converted):
    """Through the command line: --json carries the reference's numbers, and int4 loses something."""
    result = run_ovchat("eval", converted("smollm2", "int4"), "--reference", converted("smollm2", "fp32"),
                        "--context", CONTEXT, "--max-tokens", MAX_TOKENS, "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    print(scores)
    assert set(scores) >= {"perplexity", "tokens", "seconds", "kl_divergence", "top1_agreement", "reference_perplexity"}
    assert scores["tokens"] == MAX_TOKENS - 1
    assert scores["kl_divergence"] > 0
    assert 0.5 < scores["top1_agreement"] < 1
    assert scores["perplexity"] > scores["reference_perplexity"]


def test_the_default_reads_prose_code_and_other_languages(tokenizer):
    """What `ovchat eval` reads by default holds all three kinds of the shipped text."""
    ids = tokenizer(read_text(), add_special_tokens=False).input_ids
    assert len(ids) > 20 * DEFAULT_MAX_TOKENS
    read = tokenizer.decode(ids[:DEFAULT_MAX_TOKENS])
    assert "Call me Ishmael" in read and "class TextWrapper" in read and "Considérant" in read


# --- data-aware compression ---------------------------------------------------------------------


def test_data_aware_int4_runs_without_torch_and_costs_less_kl(smollm2_checkpoint, converted, tmp_path):
    """`ovchat convert --awq --scale-estimation` with torch unimportable (in the command and anything it
    starts); its KL against fp32 on the text eval reads by default, held out from calibration, is lower than
    the data-free int4's at the same ratio."""
    blocker = tmp_path / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None  # import torch now fails\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the blocker works
    out = tmp_path / "data-aware"
    result = run_ovchat("convert", smollm2_checkpoint, "-o", out, "--awq", "--scale-estimation", "--num-samples", 32,
                        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Compressed with AWQ + scale estimation calibrated on 32 samples" in result.stderr
    info = ov.Core().read_model(out / "openvino_model.xml").get_rt_info()
    assert info["ovgenai_chat"]["data_aware"].astype(str) == "awq,scale_estimation"
    assert info["ovgenai_chat"]["num_samples"].astype(str) == "32"

    reference, data_free = converted("smollm2", "fp32"), converted("smollm2", "int4")
    aware = evaluate(out, read_text(), reference_dir=reference, max_tokens=2048)
    free = evaluate(data_free, read_text(), reference_dir=reference, max_tokens=2048)
    size = lambda path: (path / "openvino_model.bin").stat().st_size  # noqa: E731
    print(f"KL against fp32: data-aware {aware.kl_divergence:.4f} ({size(out)} bytes), "
          f"data-free {free.kl_divergence:.4f} ({size(data_free)} bytes)")
    assert size(out) == pytest.approx(size(data_free), rel=0.01)
    assert aware.kl_divergence < free.kl_divergence


def test_data_aware_options_that_cannot_apply_are_refused(smollm2_checkpoint, tmp_path):
    import smollm2

    (tmp_path / "latin1.txt").write_bytes("Ça coûte très cher.".encode("latin-1"))
    cases = [
        ((smollm2_checkpoint, "--awq", "--weight-format", "int8"), "they do not apply to int8"),
        ((smollm2.gguf_dir() / smollm2.GGUF_NAME, "--awq"), "add --weight-format int4"),
        ((smollm2_checkpoint, "--dataset", tmp_path / "latin1.txt"), "is for --awq, --scale-estimation or --gptq"),
        ((smollm2_checkpoint, "--gptq", "--dataset", tmp_path / "latin1.txt"), "is not UTF-8 text"),
    ]
    for (source, *options), expected in cases:
        result = run_ovchat("convert", source, "-o", tmp_path / "out", *options)
        assert_one_line_error(result, expected)
        assert not (tmp_path / "out").exists()


# --- bad input -----------------------------------------------------------------------------------


def assert_one_line_error(result, expect: str):
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and expect in errors[0], result.stderr


@pytest.fixture(scope="module")
def tiny(converted):
    return converted("llama", "fp32")


def test_an_empty_text_is_refused(tiny, tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    assert_one_line_error(run_ovchat("eval", tiny, "--text", tmp_path / "empty.txt"), "holds no text")


def test_a_text_that_is_not_utf8_is_refused(tiny, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Ça coûte très cher.".encode("latin-1"))
    assert_one_line_error(run_ovchat("eval", tiny, "--text", tmp_path / "latin1.txt"), "is not UTF-8 text")


def test_max_tokens_below_one_window_is_refused(tiny):
    assert_one_line_error(run_ovchat("eval", tiny, "--context", 256, "--max-tokens", 100),
                          "--max-tokens 100 is smaller than one window of 256 tokens")


def test_a_window_longer_than_the_model_reads_is_refused(tiny):
    assert_one_line_error(run_ovchat("eval", tiny, "--context", 4096), "longer than the model's context of 512 tokens")


def test_a_reference_with_another_tokenizer_is_refused(tiny, tokenizer, tmp_path):
    from convert.tokenizer import convert_tokenizer

    other = shutil.copytree(tiny, tmp_path / "other-tokenizer")
    retrained = tokenizer.train_new_from_iterator([read_text()[:50_000]], vocab_size=400)
    for name, model in zip(("openvino_tokenizer.xml", "openvino_detokenizer.xml"), convert_tokenizer(retrained)):
        ov.save_model(model, other / name)
    assert_one_line_error(run_ovchat("eval", tiny, "--reference", other),
                          "tokenizes the text differently")


def test_a_reference_with_another_vocabulary_is_refused(tiny, tmp_path):
    """Same tokenizer, logits padded to 64 more entries (as some checkpoints pad their vocabulary)."""
    from openvino import opset13 as ops

    padded = shutil.copytree(tiny, tmp_path / "padded-vocabulary")
    model = ov.Core().read_model(tiny / "openvino_model.xml")
    result = model.get_result()
    logits = result.input_value(0)
    wider = ops.pad(logits, np.array([0, 0, 0]), np.array([0, 0, 64]), "constant", np.float32(0))
    logits.get_tensor().set_names(set())
    wider.output(0).set_names({"logits"})
    result.input(0).replace_source_output(wider.output(0))
    ov.save_model(model, padded / "openvino_model.xml")
    assert_one_line_error(run_ovchat("eval", tiny, "--reference", padded, "--max-tokens", 512),
                          "a reference must share the model's vocabulary")
