"""Gemma 4's assistant drafter (convert/models/gemma4_assistant.py) and the target outputs it reads
(models/gemma4.py, extra_outputs), against transformers on tiny random checkpoints, then drafting in
GenAI's Gemma 4 MTP pipeline (StatefulGemma4MTPLLMPipeline), whose greedy replies must be the plain ones."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino_genai
import pytest
import torch
import transformers

from checkpoints import GEMMA4, GEMMA4_MOE
from conftest import run_ovchat
from test_parity import EXACT, PROMPTS, reference_greedy, reference_model, templated_ids

# target → its head sizes and key heads. gemma4-text: sliding layer 1 and full layer 2 keep the keys and values
# layers 3 and 4 share, as E2B's 13 and 14 do; gemma4-moe (26B-A4B-like): experts, no shared layers, full layers
# with one key head whose keys are also its values.
TARGETS = {"gemma4-text": GEMMA4, "gemma4-moe": GEMMA4_MOE}
TARGET = "gemma4-text"
DRAFTERS = ["tied-head", "centroid-head", "copying"]  # make_assistant
LAYER_KINDS = ("full_attention", "sliding_attention")
NEW_TOKENS = 32


def make_assistant(target, heads: dict, out, kind: str):
    """A drafter for `target`: two layers of the target's head sizes, key heads and window. "tied-head": random,
    half the target's width; "centroid-head": the same with the head E2B's and E4B's drafters have (64 clusters
    of 768 tokens, the 4 best scored; the token order shuffled); "copying": the target's width and its embedding
    table as the head, the input's hidden half passed through (its layers add nothing): it proposes again the
    token the target has just taken, which a random target's reply repeats often enough to be accepted."""
    config = json.loads((target / "config.json").read_text())
    text = {key: config[key] for key in ("vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                                         "sliding_window", "rope_parameters", "rms_norm_eps", "max_position_embeddings",
                                         "bos_token_id", "eos_token_id", "pad_token_id")}
    width = config["hidden_size"] if kind == "copying" else 32
    text.update(hidden_size=width, intermediate_size=64, num_hidden_layers=2, initializer_range=0.2,
                layer_types=["sliding_attention", "full_attention"], hidden_size_per_layer_input=0,
                vocab_size_per_layer_input=0, global_head_dim=heads["global_head_dim"],
                attention_k_eq_v=heads.get("attention_k_eq_v", False),
                num_global_key_value_heads=heads.get("num_global_key_value_heads"))
    assistant = transformers.Gemma4AssistantConfig(text_config=text, backbone_hidden_size=config["hidden_size"],
                                                   use_ordered_embeddings=kind == "centroid-head", num_centroids=64,
                                                   centroid_intermediate_top_k=4)
    torch.manual_seed(36 + DRAFTERS.index(kind))
    model = transformers.Gemma4AssistantForCausalLM(assistant).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:  # norms and layer scalars about one, not exactly one
                param.normal_(1.0, 0.2)
        if kind == "centroid-head":
            model.masked_embedding.token_ordering.copy_(torch.randperm(config["vocab_size"]))
        if kind == "copying":
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
                layer.layer_scalar.fill_(1.0)
            model.model.norm.weight.fill_(1.0)
            model.pre_projection.weight.copy_(torch.cat([torch.zeros(width, width), torch.eye(width)], dim=1))
            model.post_projection.weight.copy_(torch.eye(width))
            model.model.embed_tokens.weight.copy_(reference_model(target).get_input_embeddings().weight)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def target_ir(checkpoint, tmp_path_factory):
    """target_ir(name) → the fp32 IR of checkpoint `name` with the drafter's outputs."""
    from convert import convert

    return functools.cache(lambda name: convert(checkpoint(name), tmp_path_factory.mktemp(name) / "ir",
                                                weight_format="fp32", mtp_outputs=True))


@pytest.fixture(scope="module")
def drafter(checkpoint, tmp_path_factory):
    """drafter(target, kind) → (the drafter checkpoint `kind` for target, its fp32 IR)."""
    from convert import convert

    def make(target: str, kind: str):
        root = tmp_path_factory.mktemp(f"{target}-{kind}")
        source = make_assistant(checkpoint(target), TARGETS[target], root / "checkpoint", kind)
        return source, convert(source, root / "ir", weight_format="fp32")

    return functools.cache(make)


def target_outputs(target_ir, ids):
    request = ov.Core().compile_model(target_ir / "openvino_model.xml", "CPU", EXACT).create_infer_request()
    request.infer({"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64),
                   "position_ids": np.arange(len(ids))[None], "beam_idx": np.zeros(1, np.int32)})
    return {out.get_any_name(): request.get_tensor(out).data.copy() for out in request.model_outputs}


@pytest.mark.parametrize("target", TARGETS)
def test_target_outputs_what_transformers_hands_the_drafter(target, checkpoint, target_ir, tokenizer_of):
    """mtp_last_hidden_state is transformers' last hidden state; mtp_*_attention_key/value its shared_kv_states
    (the keys and values of the last full and sliding layers before the shared ones) over the whole prompt."""
    ids = templated_ids(tokenizer_of(target), [{"role": "user", "content": PROMPTS[1]}])
    outputs = target_outputs(target_ir(target), ids)
    with torch.no_grad():
        expected = reference_model(checkpoint(target))(torch.tensor([ids]), output_hidden_states=True, return_shared_kv_states=True)
    assert np.abs(outputs["mtp_last_hidden_state"] - expected.hidden_states[-1].numpy()).max() <= 1e-4
    assert set(expected.shared_kv_states) == set(LAYER_KINDS)
    for layers, (key, value) in expected.shared_kv_states.items():
        assert outputs[f"mtp_{layers}_key"].shape == key.shape
        assert np.abs(outputs[f"mtp_{layers}_key"] - key.numpy()).max() <= 1e-4
        assert np.abs(outputs[f"mtp_{layers}_value"] - value.numpy()).max() <= 1e-4
    assert np.abs(outputs["logits"] - expected.logits.numpy()).max() <= 1e-3


@pytest.mark.parametrize("kind", DRAFTERS[:2])
def test_drafter_matches_transformers(kind, checkpoint, target_ir, drafter, tokenizer_of):
    """Two draft steps as GenAI takes them after a prompt longer than the sliding window: the target's embedding
    of the last token beside its last hidden state, then the drafter's own hidden state; the keys of every token
    but the last, a mask one longer. Logits and hidden state equal transformers' assistant fed the same."""
    source, drafter_ir = drafter(TARGET, kind)
    ids = templated_ids(tokenizer_of(TARGET), [{"role": "user", "content": PROMPTS[1]}])
    assert len(ids) > 20  # past the sliding window of 12, so the sliding layers see a part of the keys
    outputs = target_outputs(target_ir(TARGET), ids)
    reference = transformers.Gemma4AssistantForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    embed = reference_model(checkpoint(TARGET)).get_input_embeddings()
    request = ov.Core().compile_model(drafter_ir / "openvino_model.xml", "CPU", EXACT).create_infer_request()
    kept = len(ids) - 1
    kv = {f"{layers}_{part}": outputs[f"mtp_{layers}_{part}"][:, :, :kept] for layers in LAYER_KINDS
          for part in ("key", "value")}
    hidden, token = outputs["mtp_last_hidden_state"][:, -1:], ids[-1]
    for _ in range(2):
        with torch.no_grad():
            inputs_embeds = torch.cat([embed(torch.tensor([[token]])), torch.from_numpy(hidden)], dim=-1)
            expected = reference(inputs_embeds=inputs_embeds, position_ids=torch.tensor([[kept]]),
                                 attention_mask=torch.ones(1, kept + 1, dtype=torch.long),
                                 shared_kv_states={layers: (torch.from_numpy(kv[f"{layers}_key"]),
                                                            torch.from_numpy(kv[f"{layers}_value"])) for layers in LAYER_KINDS})
        request.infer({"inputs_embeds": inputs_embeds.numpy(), "position_ids": np.array([[kept]]),
                       "attention_mask": np.ones((1, kept + 1), np.int64), **kv})
        logits, hidden = (request.get_tensor(name).data.copy() for name in ("logits", "last_hidden_state"))
        assert np.abs(logits - expected.logits.numpy()).max() <= 1e-4
        assert np.abs(hidden - expected.last_hidden_state.numpy()).max() <= 1e-4
        token = int(logits[0, -1].argmax())
        assert token == int(expected.logits[0, -1].argmax())


def test_drafter_directory(drafter):
    """What draft_model() reads: openvino_model.xml with GenAI's port names and f32 logits, config.json still
    saying gemma4_assistant; no tokenizer of its own (GenAI uses the target's)."""
    _, drafter_ir = drafter(TARGET, "centroid-head")
    model = ov.Core().read_model(drafter_ir / "openvino_model.xml")
    assert {port.get_any_name() for port in model.inputs} == {
        "inputs_embeds", "position_ids", "attention_mask", "full_attention_key", "full_attention_value",
        "sliding_attention_key", "sliding_attention_value"}
    assert {port.get_any_name(): port.get_element_type() for port in model.outputs} == {
        "logits": ov.Type.f32, "last_hidden_state": ov.Type.f32}
    assert json.loads((drafter_ir / "config.json").read_text())["model_type"] == "gemma4_assistant"
    assert not (drafter_ir / "openvino_tokenizer.xml").exists()


@pytest.mark.parametrize("target,kind", [(TARGET, kind) for kind in DRAFTERS] + [("gemma4-moe", "copying")])
def test_genai_drafting_gives_the_plain_greedy_reply(target, kind, checkpoint, target_ir, drafter, tokenizer_of):
    """LLMPipeline on SDPA with the drafter: GenAI pairs the two (StatefulGemma4MTPLLMPipeline), drafts, and its
    greedy tokens with 1 and 4 draft tokens a step are the plain pipeline's, which are transformers'. The
    random drafters' tokens are all rejected; the copying one's are accepted in runs and rejected where the
    reply changes token, so both the kept and the cropped keys and values are exercised."""
    ids = templated_ids(tokenizer_of(target), [{"role": "user", "content": PROMPTS[0]}])
    prompt = ov.Tensor(np.array([ids], np.int64))
    plain = openvino_genai.LLMPipeline(target_ir(target), "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    expected = list(plain.generate(prompt, openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)).tokens[0])
    assert expected == reference_greedy(reference_model(checkpoint(target)), ids, NEW_TOKENS)
    pipe = openvino_genai.LLMPipeline(target_ir(target), "CPU", ATTENTION_BACKEND="SDPA", **EXACT,
                                      draft_model=openvino_genai.draft_model(drafter(target, kind)[1], "CPU"))
    for k in (1, 4):
        config = openvino_genai.GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True, num_assistant_tokens=k)
        result = pipe.generate(prompt, config)
        assert list(result.tokens[0]) == expected, k
        metrics = result.extended_perf_metrics
        assert metrics.get_num_draft_tokens() > 0
        if kind == "copying":
            assert 0 < metrics.get_num_accepted_tokens() < metrics.get_num_draft_tokens(), k


def test_conversion_never_imports_torch(checkpoint, drafter, tmp_path):
    """Drafter and target with its drafter outputs, default int4 preset, torch unimportable."""
    probe = ("import sys\nsys.modules['torch'] = None  # import torch now fails\nfrom convert import convert\n"
             f"convert({str(drafter(TARGET, 'centroid-head')[0])!r}, {str(tmp_path / 'drafter')!r})\n"
             f"convert({str(checkpoint(TARGET))!r}, {str(tmp_path / 'target')!r}, mtp_outputs=True)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for out in ("drafter", "target"):
        assert (tmp_path / out / "openvino_model.xml").exists()


def test_cli_says_what_the_drafter_outputs_change(checkpoint, vlm_checkpoint, tmp_path, env):
    """`ovchat convert --mtp-outputs`: of a Gemma 4 that sees images, the language model alone in the text layout,
    said in one line (GenAI drafts only for openvino_model.xml); of another family, a one-line error."""
    result = run_ovchat("convert", vlm_checkpoint("gemma4-vision"), "-o", tmp_path / "vlm", "--mtp-outputs",
                        "--weight-format", "fp32", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "converting the language model only" in result.stderr
    assert not (tmp_path / "vlm" / "openvino_vision_embeddings_model.xml").exists()
    outputs = {port.get_any_name() for port in ov.Core().read_model(tmp_path / "vlm" / "openvino_model.xml").outputs}
    assert {"logits", "mtp_last_hidden_state", "mtp_full_attention_key", "mtp_sliding_attention_value"} <= outputs
    result = run_ovchat("convert", checkpoint("llama"), "-o", tmp_path / "llama", "--mtp-outputs", env=env)
    assert result.returncode != 0
    assert result.stderr.strip() == "Error: drafter outputs are for Gemma 4 targets, not llama"
