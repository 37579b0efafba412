"""gpt-oss beyond the shared parity runner: MXFP4 experts kept in their exact integer form, the harmony template's
reasoning level, and generation stopping on each of its end tokens."""

from __future__ import annotations

import json
import shutil

import numpy as np
import openvino as ov
import openvino_genai
import pytest

from convert.compress import weight_layers
from test_parity import EXACT, PROMPTS, reference_greedy, reference_model, templated_ids


def _constant(output) -> np.ndarray:
    node = output.get_node()
    assert node.get_type_name() == "Constant", node
    return node


@pytest.mark.parametrize("weight_format", ["fp32", "int4"])
def test_mxfp4_experts_are_kept_as_exact_int8_groups(weight_format, checkpoint, converted):
    """Whatever the weight format, each MXFP4 expert weight is i8 [E, N, K/32, 32] → Convert → × f32 scale
    [E, N, K/32, 1] → Reshape [E, N, K] (the chain GatherMatmul keeps compressed), whose values are exactly the
    weights transformers dequantizes from the same blocks."""
    model = ov.Core().read_model(converted("gpt_oss-mxfp4", weight_format) / "openvino_model.xml")
    reference = reference_model(checkpoint("gpt_oss-mxfp4"))
    experts = {name: node for name, node in weight_layers(model).items() if ".mlp.experts." in name}
    assert len(experts) == 4
    for name, reshape in experts.items():
        assert reshape.get_type_name() == "Reshape"
        multiply = reshape.input_value(0).get_node()
        assert multiply.get_type_name() == "Multiply"
        convert = multiply.input_value(0).get_node()
        assert convert.get_type_name() == "Convert"
        values, scales = _constant(convert.input_value(0)), _constant(multiply.input_value(1))
        e, n, k = reshape.get_output_shape(0)
        assert values.get_element_type() == ov.Type.i8 and list(values.get_output_shape(0)) == [e, n, k // 32, 32]
        assert scales.get_element_type() == ov.Type.f32 and list(scales.get_output_shape(0)) == [e, n, k // 32, 1]
        ours = (np.asarray(values.data, np.float32) * scales.data).reshape(e, n, k)
        layer, proj = int(name.split(".")[2]), name.rsplit(".", 1)[1]
        expected = getattr(reference.model.layers[layer].mlp.experts, proj).detach().numpy().transpose(0, 2, 1)
        np.testing.assert_array_equal(ours, expected)


def test_reasoning_effort_reaches_the_harmony_template(converted, tokenizer_of):
    """The harmony template's reasoning level, given as extra context, renders in GenAI as in jinja2."""
    genai = openvino_genai.Tokenizer(converted("gpt_oss", "fp32"))
    messages = [{"role": "user", "content": PROMPTS[0]}]
    rendered = genai.apply_chat_template(openvino_genai.ChatHistory(messages), add_generation_prompt=True,
                                         extra_context={"reasoning_effort": "high"})
    assert "Reasoning: high" in rendered
    assert rendered == tokenizer_of("gpt_oss").apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                                    reasoning_effort="high")


@pytest.mark.parametrize("stop", [0, 1])
def test_generation_stops_on_each_end_token(stop, tmp_path, checkpoint, converted, tokenizer_of):
    """gpt-oss's generation_config lists several end tokens (<|return|>, <|endoftext|>, <|call|>); LLMPipeline
    stops at whichever comes first. Stand-ins: two tokens of transformers' greedy reply, each listed first once."""
    ids = templated_ids(tokenizer_of("gpt_oss"), [{"role": "user", "content": PROMPTS[0]}])
    greedy = reference_greedy(reference_model(checkpoint("gpt_oss")), ids, 32)
    firsts = [i for i, token in enumerate(greedy) if token not in greedy[:i]][2:4]  # two tokens new to the reply
    assert len(firsts) == 2
    path = shutil.copytree(converted("gpt_oss", "fp32"), tmp_path / "model")
    generation = json.loads((path / "generation_config.json").read_text())
    ends = [greedy[firsts[stop]], greedy[firsts[1 - stop]]]
    (path / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": ends}))
    pipe = openvino_genai.LLMPipeline(path, "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    tokens = list(pipe.generate(ov.Tensor(np.array([ids], np.int64)), max_new_tokens=32).tokens[0])
    assert tokens == greedy[:firsts[0] + 1]  # the reply up to its first end token, which GenAI keeps


def test_paged_attention_takes_each_layers_sinks(checkpoint, converted):
    """GenAI's paged conversion hands each layer's sink constant to PagedAttention (its input 20, `sinks`); the
    tiny checkpoints' sinks are large enough that greedy tokens change without them (test_parity's PA runs)."""
    from openvino._offline_transformations import paged_attention_transformation

    model = ov.Core().read_model(converted("gpt_oss", "fp32") / "openvino_model.xml")
    paged_attention_transformation(model, True, True)
    paged = [op for op in model.get_ordered_ops() if op.get_type_name() == "PagedAttentionExtension"]
    layers = reference_model(checkpoint("gpt_oss")).model.layers
    assert len(paged) == len(layers)
    for op, layer in zip(paged, layers):
        sinks = _constant(op.input_value(20)).data
        np.testing.assert_array_equal(sinks.ravel(), layer.self_attn.sinks.detach().numpy())
