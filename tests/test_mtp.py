"""Qwen3.5's multi-token-prediction head (`mtp.*`) converted into openvino_mtp_model.xml: its last hidden
state against transformers' own Qwen3.5 blocks, and OpenVINO GenAI's MTP speculative decoding with it
(ContinuousBatchingPipeline, `draft_model` on the model's own directory) replying exactly as plain greedy
decoding does, for qwen3_5 and qwen3_5_moe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino_genai
import pytest
import safetensors.torch
import torch
import transformers

import smollm2
from conftest import run_ovchat
from gguf_files import write_gguf
from vision_checkpoints import add_mtp_head

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
VARIANTS = ["qwen3_5-vision", "qwen3_5_moe-vision"]
PROMPT = "Write a short poem about the sea."
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def with_head(vlm_checkpoint, tmp_path_factory):
    """with_head(name) → (checkpoint directory of the tiny VLM `name` with an MTP head, the head in torch)."""
    made = {}

    def get(name: str):
        if name not in made:
            path = shutil.copytree(vlm_checkpoint(name), tmp_path_factory.mktemp(f"{name}-mtp") / "checkpoint")
            made[name] = path, add_mtp_head(path, seed=sum(map(ord, name)))
        return made[name]

    return get


@pytest.fixture(scope="module", params=VARIANTS)
def case(request, with_head, tmp_path_factory):
    """(name, checkpoint, head in torch, its fp32 conversion)."""
    from convert import convert

    path, head = with_head(request.param)
    return request.param, path, head, convert(path, tmp_path_factory.mktemp("mtp-ir") / request.param, weight_format="fp32")


def test_interface(case):
    """GenAI's MTP contract: the inputs it sends, one full-attention layer's KV as state, `last_hidden_state`
    out and no lm_head (GenAI grafts the main model's, which it finds as the MatMul making `logits`)."""
    _, _, head, path = case
    mtp = ov.Core().read_model(path / "openvino_mtp_model.xml")
    hidden = head.fc.out_features
    shapes = {i.get_any_name(): i.get_partial_shape() for i in mtp.inputs}
    assert shapes == {"hidden_states": ov.PartialShape([-1, -1, hidden]), "inputs_embeds": ov.PartialShape([-1, -1, hidden]),
                      "attention_mask": ov.PartialShape([-1, -1]), "position_ids": ov.PartialShape([-1, -1]),
                      "beam_idx": ov.PartialShape([-1])}
    assert [o.get_any_name() for o in mtp.outputs] == ["last_hidden_state"]
    assert mtp.output(0).get_partial_shape() == ov.PartialShape([-1, -1, hidden])
    assert sorted(op.get_variable_id() for op in mtp.get_ops() if op.get_type_name() == "ReadValue") == [
        "past_key_values.0.keypresent.0.key", "past_key_values.0.valuepresent.0.value"]
    vocab = json.loads((path / "config.json").read_text())["text_config"]["vocab_size"]
    assert not any(op.get_type_name() == "MatMul" and op.get_output_partial_shape(0)[-1] == vocab
                   for op in mtp.get_ops())
    language = ov.Core().read_model(path / "openvino_language_model.xml")
    assert language.output("logits").get_node().input_value(0).get_node().get_type_name() == "MatMul"


def test_last_hidden_state_matches_transformers(case):
    """Five positions, then three more after them on the head's own KV cache: transformers' blocks loaded
    with the mtp.* weights give the same last hidden state."""
    _, _, head, path = case
    request = ov.Core().compile_model(path / "openvino_mtp_model.xml", "CPU", EXACT).create_infer_request()
    rng = np.random.default_rng(0)
    hidden = head.fc.out_features
    cache = transformers.DynamicCache()
    start = 0
    for length in (5, 3):
        hidden_states, embeds = (rng.standard_normal((1, length, hidden)).astype(np.float32) for _ in range(2))
        positions = np.arange(start, start + length, dtype=np.int64)[None]
        start += length
        with torch.no_grad():
            expected = head(torch.from_numpy(hidden_states), torch.from_numpy(embeds), torch.from_numpy(positions),
                            cache).numpy()
        got = request.infer({"hidden_states": hidden_states, "inputs_embeds": embeds, "position_ids": positions,
                             "attention_mask": np.ones((1, start), np.int64), "beam_idx": np.zeros(1, np.int32)})
        np.testing.assert_allclose(got["last_hidden_state"], expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


def generate(path, num_assistant_tokens: int | None):
    """ContinuousBatchingPipeline's greedy reply to PROMPT and its extended metrics; with MTP drafting
    `num_assistant_tokens` per step where given (prefix caching off, as GenAI's MTP requires for hybrids)."""
    scheduler = openvino_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = False
    scheduler.cache_size = 1
    properties = dict(EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    if num_assistant_tokens:
        properties["draft_model"] = openvino_genai.draft_model(path, "CPU", **EXACT)
        config.num_assistant_tokens = num_assistant_tokens
    pipe = openvino_genai.ContinuousBatchingPipeline(path, scheduler, "CPU", properties)
    result = pipe.generate([PROMPT], [config])[0]
    return result.m_generation_ids[0], result.extended_perf_metrics


@pytest.fixture(scope="module")
def plain_reply(case):
    return generate(case[3], None)[0]


@pytest.mark.parametrize("num_assistant_tokens", [1, 3])
def test_speculative_reply_equals_greedy(case, plain_reply, num_assistant_tokens):
    """GenAI drafts with the head (draft tokens counted) and the reply is the plain greedy one."""
    reply, metrics = generate(case[3], num_assistant_tokens)
    assert reply == plain_reply
    assert metrics.get_num_draft_tokens() > 0


def test_a_picture_and_a_templated_chat_with_drafts(case):
    """What a runtime sends through ContinuousBatchingPipeline with the head drafting: a picture, and a chat the
    runtime templated itself (GenAI's ChatHistory does not go through this pipeline with images' support
    loaded: "VisionRegistry is not available"); the replies equal VLMPipeline's plain greedy ones."""
    _, _, _, path = case
    plain = openvino_genai.VLMPipeline(path, "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    scheduler = openvino_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = False
    pipe = openvino_genai.ContinuousBatchingPipeline(
        path, scheduler, "CPU", {"draft_model": openvino_genai.draft_model(path, "CPU", **EXACT), **EXACT})
    drafting = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                               num_assistant_tokens=2)

    picture = ov.Tensor((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    result = pipe.generate(["What is in this picture?"], images=[[picture]], generation_config=[drafting])[0]
    assert result.texts[0] == plain.generate("What is in this picture?", images=[picture], generation_config=config).texts[0]
    assert result.extended_perf_metrics.get_num_draft_tokens() > 0

    history = openvino_genai.ChatHistory([{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "Waves."},
                                          {"role": "user", "content": "Another one."}])
    templated = openvino_genai.Tokenizer(path).apply_chat_template(history, add_generation_prompt=True)
    drafting.apply_chat_template = False
    result = pipe.generate([templated], [drafting])[0]
    assert result.m_generation_ids[0] == plain.generate(history, generation_config=config).texts[0]
    assert result.extended_perf_metrics.get_num_draft_tokens() > 0


# The output projections of attention, DeltaNet, MLPs and experts: zero, a layer passes its input on.
SILENT = ("o_proj.weight", "out_proj.weight", "down_proj.weight", "experts.down_proj")


def make_predictable(path, tied: bool) -> None:
    """The checkpoint in `path` made a model whose next token depends on the last token alone, and its head a
    drafter that is always right. With every layer's output projections zero the logits are
    lm_head(norm(embedding of the last token)); the head then predicts the token after next when it outputs
    norm(embedding of the next token) scaled as the final norm does: fc takes the embedding half, the
    embedding's pre-fc norm scales by 1 (w = 0), its layer passes that on, its norm has the model's weights.
    `tied`: the lm_head is the embedding table (as in the smaller Qwen3.5 models)."""
    files = {file: safetensors.torch.load_file(file) for file in path.glob("*.safetensors")}
    tensors = {name: t for file in files.values() for name, t in file.items()}
    for name, tensor in tensors.items():
        if name.endswith(SILENT):
            tensor.zero_()
    hidden = tensors["mtp.fc.weight"].shape[0]
    tensors["mtp.fc.weight"].copy_(torch.cat([torch.eye(hidden), torch.zeros(hidden, hidden)], 1))
    tensors["mtp.pre_fc_norm_embedding.weight"].zero_()
    tensors["mtp.norm.weight"].copy_(tensors["model.language_model.norm.weight"])
    if tied:
        config = json.loads((path / "config.json").read_text())
        config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
        (path / "config.json").write_text(json.dumps(config, indent=2))
        for contents in files.values():
            contents.pop("lm_head.weight", None)
    for file, contents in files.items():
        safetensors.torch.save_file(contents, file, metadata={"format": "pt"})


@pytest.mark.parametrize("name, tied", [("qwen3_5-vision", True), ("qwen3_5_moe-vision", False)])
def test_a_head_that_is_always_right_is_accepted(name, tied, with_head, tmp_path):
    """GenAI hands the head the right hidden states and embeddings, and grafts the right lm_head (tied or
    not): drafts of a head built to be right (on a model built to be predictable) are accepted, three at a
    time, and the reply is still the plain greedy one."""
    from convert import convert

    path = shutil.copytree(with_head(name)[0], tmp_path / "checkpoint")
    make_predictable(path, tied)
    out = convert(path, tmp_path / "ir", weight_format="fp32")
    plain, _ = generate(out, None)
    reply, metrics = generate(out, 3)
    assert reply == plain
    print(f"{name}: {metrics.get_num_accepted_tokens()} of {metrics.get_num_draft_tokens()} drafts accepted")
    assert metrics.get_num_accepted_tokens() >= 0.9 * metrics.get_num_draft_tokens() > 0


def test_head_left_out_where_genai_cannot_use_it(with_head, tmp_path, capfd):
    """The text layout (--text-only), an explicit refusal (--no-mtp) and a checkpoint whose config lists a head it lacks
    convert without one, each saying so."""
    from convert import convert

    path, _ = with_head("qwen3_5-vision")
    text = convert(path, tmp_path / "text", weight_format="fp32", text_only=True)
    assert "drafts with it only in the multimodal layout" in capfd.readouterr().err
    assert not (text / "openvino_mtp_model.xml").exists()
    without = tmp_path / "without"
    result = run_ovchat("convert", path, "-o", without, "--weight-format", "fp32", "--no-mtp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Leaving out the multi-token-prediction head, as asked" in result.stderr
    assert not (without / "openvino_mtp_model.xml").exists()
    assert (without / "openvino_language_model.xml").exists()
    stripped = shutil.copytree(path, tmp_path / "stripped")  # as some re-quantized uploads are: config kept, tensors not
    (stripped / "mtp.safetensors").unlink()
    convert(stripped, tmp_path / "stripped-ir", weight_format="fp32")
    assert "the checkpoint has no mtp.* tensors: none converted" in capfd.readouterr().err
    assert not (tmp_path / "stripped-ir" / "openvino_mtp_model.xml").exists()


def test_int4_conversion_without_torch(with_head, tmp_path):
    """`ovchat convert` (int4 by default) with torch unimportable writes the head compressed as the language
    model is, and GenAI drafts with it."""
    blocker = tmp_path / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None  # import torch now fails\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    path, _ = with_head("qwen3_5_moe-vision")
    out = tmp_path / "int4"
    result = run_ovchat("convert", path, "-o", out, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Multi-token-prediction head (openvino_mtp_model.xml" in result.stderr
    info = ov.Core().read_model(out / "openvino_mtp_model.xml").get_rt_info()["ovgenai_chat"]
    layers = json.loads(info["layers"].astype(str))
    assert info["weight_format"].astype(str) == "int4" and "int4_sym" in "".join(layers), layers
    reply, metrics = generate(out, 2)
    assert reply and metrics.get_num_draft_tokens() > 0


def test_gguf_with_a_head_converts_as_without_it(checkpoint, tmp_path, capfd):
    """A qwen35 GGUF whose last block is the head (nextn_predict_layers 1, blk.N.nextn.* beside the block's
    layer tensors, as llama.cpp writes Qwen3.5's) reads the head under mtp.* and converts the model the file
    holds without it, saying why the head is left out (a GGUF converts to the text layout)."""
    from convert import convert
    from convert.gguf_source import read_gguf

    tokenizer_gguf = smollm2.gguf_dir() / smollm2.GGUF_NAME
    plain = write_gguf(checkpoint("qwen3_5-text"), tmp_path / "plain.gguf", tokenizer_gguf, {})
    headed = shutil.copytree(checkpoint("qwen3_5-text"), tmp_path / "headed")
    add_mtp_head(headed, seed=1)
    headed = write_gguf(headed, tmp_path / "headed.gguf", tokenizer_gguf, {})
    source = read_gguf(headed)
    assert (source.config["num_hidden_layers"], source.config["mtp_num_hidden_layers"]) == (2, 1)
    assert {"mtp.fc.weight", "mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight",
            "mtp.layers.0.self_attn.q_proj.weight", "mtp.layers.0.mlp.down_proj.weight"} <= set(source.tensor_refs)

    logits = []
    for gguf in (plain, headed):
        out = convert(gguf, tmp_path / f"{gguf.stem}-ir", weight_format="fp32")
        request = ov.Core().compile_model(out / "openvino_model.xml", "CPU", EXACT).create_infer_request()
        ids = np.array([[1, 17, 230, 5, 99]])
        logits.append(request.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(5)[None],
                                     "beam_idx": np.zeros(1, np.int32)})["logits"])
    assert "drafts with it only in the multimodal layout" in capfd.readouterr().err
    np.testing.assert_array_equal(logits[0], logits[1])
