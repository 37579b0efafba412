"""What is particular to hybrid models (Qwen3.5's Gated DeltaNet, LFM2's short convolutions, Granite
4.0-H's Mamba-2): their state beside the KV cache in the shapes GenAI tells apart, the CPU's fused
GatedDeltaNet, paged attention's PagedSelectiveSSM, several chat turns through that state, and int4
leaving the recurrence's own parameters in full precision. Their
logits and greedy tokens go through the shared runner in test_parity.py."""

from __future__ import annotations

import collections
import json
import threading

import numpy as np
import openvino as ov
import openvino_genai
import pytest

from checkpoints import VARIANTS
from test_parity import EXACT, GREEDY, PROMPTS, reference_greedy, reference_model, templated_ids

MAMBA = [name for name in VARIANTS if name.startswith("granitemoehybrid-mamba")]
HYBRIDS = [name for name in VARIANTS if name.split("-")[0] in ("qwen3_5", "qwen3_5_moe", "lfm2", "lfm2_moe")] + MAMBA


def state_kinds(model: ov.Model) -> collections.Counter:
    """Each state's kind as GenAI's get_cache_types reads it from its initializer's shape: a KV cache has
    one dynamic and one zero axis in rank 4; a linear state one dynamic axis in rank 3 (convolution) or
    in rank 4 without a zero (recurrence)."""
    kinds = collections.Counter()
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        shape = op.input_value(0).get_partial_shape()
        dynamic = sum(d.is_dynamic for d in shape)
        zeros = sum(d.is_static and d.get_length() == 0 for d in shape)
        assert dynamic == 1, (op.get_friendly_name(), shape)
        kinds[{(4, 1): "kv", (3, 0): "conv", (4, 0): "recurrent"}[(len(shape), zeros)]] += 1
    return kinds


@pytest.mark.parametrize("name", HYBRIDS)
def test_each_layer_carries_the_state_its_kind_needs(name, converted):
    path = converted(name, "fp32")
    config = json.loads((path / "config.json").read_text())
    layer_types = (config.get("text_config") or config)["layer_types"]
    attention = layer_types.count("full_attention")
    other = len(layer_types) - attention
    expected = {"kv": 2 * attention, "conv": other}
    if name.startswith(("qwen3_5", "granitemoehybrid")):
        expected["recurrent"] = other
    assert state_kinds(ov.Core().read_model(path / "openvino_model.xml")) == collections.Counter(expected)


@pytest.mark.parametrize("properties", [{}, EXACT], ids=["defaults", "f32"])
@pytest.mark.parametrize("name", [name for name in HYBRIDS if name.startswith("qwen3_5")])
def test_the_cpu_runs_gated_deltanet_as_one_fused_op(name, properties, converted):
    """No token-by-token Loop left: the plugin's GatedDeltaNet node, one per DeltaNet layer (a Loop or
    TensorIterator copies its output buffer every step, quadratic in the prompt's length)."""
    path = converted(name, "int4")
    config = json.loads((path / "config.json").read_text())
    deltanet_layers = (config.get("text_config") or config)["layer_types"].count("linear_attention")
    compiled = ov.Core().compile_model(path / "openvino_model.xml", "CPU", properties)
    kinds = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
    assert kinds["GatedDeltaNet"] == deltanet_layers
    assert kinds["Loop"] == kinds["TensorIterator"] == 0


@pytest.mark.parametrize("name", MAMBA)
def test_paged_attention_runs_mamba2_as_paged_selective_ssm(name, converted):
    """GenAI's paged conversion (the one ContinuousBatchingPipeline and ATTENTION_BACKEND="PA" apply) turns
    each Mamba-2 layer's scan Loop into PagedSelectiveSSM and its convolution into PagedCausalConv1D, both
    reading per-sequence state tables; no Loop left for the CPU to run token by token."""
    from openvino._offline_transformations import paged_attention_transformation

    path = converted(name, "fp32")
    config = json.loads((path / "config.json").read_text())
    mamba_layers = config["layer_types"].count("linear_attention")
    model = ov.Core().read_model(path / "openvino_model.xml")
    paged_attention_transformation(model, True)
    compiled = ov.Core().compile_model(model, "CPU", EXACT)
    kinds = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
    assert kinds["PagedSelectiveSSM"] == kinds["PagedCausalConv1D"] == mamba_layers
    assert kinds["Loop"] == kinds["TensorIterator"] == 0
    assert sum(p.get_friendly_name().startswith("selective_ssm_state_table.") for p in model.get_parameters()) == mamba_layers


@pytest.mark.parametrize("name", [*VARIANTS, "smollm2"])
def test_every_model_input_is_read(name, converted):
    """An input nothing reads is a contract broken silently: GenAI's paged conversion rewires
    position_ids and beam_idx, and a rope computed from the cache's length instead of position_ids
    is wrong under paged attention. Only a model with no rotary embedding in any layer (a NoPE
    Granite 4.0) has no use for position_ids."""
    model = ov.Core().read_model(converted(name, "fp32") / "openvino_model.xml")
    rotates = any(op.get_type_name() == "Sin" for op in model.get_ops())
    for parameter in model.get_parameters():
        read = bool(parameter.output(0).get_target_inputs())
        assert read == (rotates or parameter.get_friendly_name() != "position_ids"), parameter.get_friendly_name()


@pytest.mark.parametrize("name", HYBRIDS)
def test_int4_keeps_the_recurrence_parameters_in_full_precision(name, converted):
    """Projections go int4/int8 as in any model; convolution taps, A, dt_bias and norms stay floats."""
    model = ov.Core().read_model(converted(name, "int4") / "openvino_model.xml")
    layers = json.loads(model.get_rt_info(["ovgenai_chat", "layers"]).astype(str))
    assert any(precision.startswith("int4") for precision in layers), layers
    for op in model.get_ordered_ops():
        if op.get_type_name() == "GroupConvolution":
            taps = op.input_value(1).get_node()
            while taps.get_type_name() != "Constant":
                taps = taps.input_value(0).get_node()
            assert taps.get_element_type() in (ov.Type.f32, ov.Type.bf16, ov.Type.f16)
        if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i4, ov.Type.u4, ov.Type.i8, ov.Type.u8):
            consumer = next(iter(op.output(0).get_target_inputs())).get_node()
            assert consumer.get_type_name() == "Convert"  # the start of a compressed weight's decompression


@pytest.mark.parametrize("backend", ["PA", "SDPA"])
@pytest.mark.parametrize("name", ["qwen3_5-text", "lfm2", "granitemoehybrid-mamba-moe"])
def test_third_chat_turn_matches_transformers(name, backend, checkpoint, converted, tokenizer_of):
    """Turns two and three, which GenAI either continues from the kept state or, where the templated
    history differs from what the state saw, recomputes from a reset state: each equals transformers'
    greedy reply to the whole history."""
    path, tokenizer = converted(name, "fp32"), tokenizer_of(name)
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND=backend, **EXACT)
    reference = reference_model(checkpoint(name))
    messages, history = [], openvino_genai.ChatHistory()
    for text in (PROMPTS[1], "Now say it shorter.", PROMPTS[0]):
        messages.append({"role": "user", "content": text})
        history.append(messages[-1])
        reply = pipe.generate(history, GREEDY).texts[0]
        expected = tokenizer.decode(reference_greedy(reference, templated_ids(tokenizer, messages), GREEDY.max_new_tokens),
                                    skip_special_tokens=True)
        assert reply == expected, len(messages)
        messages.append({"role": "assistant", "content": reply})
        history.append(messages[-1])


SERVED_PROMPTS = [PROMPTS[0], PROMPTS[1], PROMPTS[2], "Tell me about lighthouses and the people who kept them."]


@pytest.mark.parametrize("name", ["qwen3_5-text", "lfm2", "qwen3_moe", "qwen3_5_moe-text", "lfm2_moe-expert-bias",
                                  "granitemoehybrid-mamba-moe"])
def test_the_server_batches_four_streams_of_a_hybrid_each_as_if_alone(name, converted, tmp_path):
    """ContinuousBatchingPipeline rewrites the convolution, DeltaNet and Mamba-2 states into paged per-sequence
    tables (PagedCausalConv1D, PagedGatedDeltaNet, PagedSelectiveSSM): four concurrent greedy streams, then a second turn
    of each that extends its first (prefix caching over linear state), each reply equal to LLMPipeline's
    for that conversation alone. Mixed-up state between sequences would show as a different reply; so
    would, in a mixture of experts, tokens of one sequence routed by another's (qwen3_moe, and the hybrids
    qwen3_5_moe and lfm2_moe)."""
    from test_serve import Served

    path = converted(name, "fp32")
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    config = openvino_genai.GenerationConfig(max_new_tokens=24)

    def alone(messages):
        return pipe.generate(openvino_genai.ChatHistory(messages), config).texts[0]

    served = Served(path, "--precision", "accurate", home=tmp_path)
    try:
        client = served.client()
        for turn in range(2):
            conversations = [[{"role": "user", "content": prompt}] for prompt in SERVED_PROMPTS]
            if turn:
                for messages in conversations:
                    messages += [{"role": "assistant", "content": alone(messages)}, {"role": "user", "content": "And then?"}]
            replies: dict[int, str] = {}

            def stream(i):
                chunks = client.chat.completions.create(model=served.model, messages=conversations[i], max_tokens=24,
                                                        temperature=0, stream=True)
                replies[i] = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(conversations))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert [replies.get(i) for i in range(len(conversations))] == [alone(m) for m in conversations], turn
    finally:
        assert served.stop() == 0, "".join(served.log)


@pytest.mark.parametrize("name", MAMBA)
def test_ovchat_runs_mamba2_on_paged_attention(name, converted):
    """The stateful SDPA path leaves Mamba-2's scan a TensorIterator (slow); ovchat picks paged attention for
    such a model, and SDPA for the rest."""
    from ovgenai_chat.engine import attention_backend

    assert attention_backend(converted(name, "int4")) == "PA"
    assert attention_backend(converted("qwen3_5-text", "fp32")) == "SDPA"


@pytest.mark.parametrize("name", ["qwen3_5-multimodal", "lfm2-fp32-attn-idxs", "qwen3_moe-fp32",
                                  "granitemoehybrid-mamba-fp32"])
def test_second_turn_through_the_python_api_matches_transformers(name, checkpoint, converted, tokenizer_of):
    """ovgenai_chat's Chat (SDPA backend, accurate precision) on its second turn: transformers' greedy
    reply to the whole templated history, the first reply in it as Chat keeps it."""
    import ovgenai_chat

    tokenizer = tokenizer_of(name)
    chat = ovgenai_chat.load(converted(name, "fp32"), precision="accurate", max_new_tokens=12, temperature=0)
    chat.send(PROMPTS[0])
    reply = chat.send("Now say it shorter.")
    ids = templated_ids(tokenizer, chat.messages[:-1])
    expected = reference_greedy(reference_model(checkpoint(name)), ids, 12)
    assert reply == tokenizer.decode(expected, skip_special_tokens=True)
