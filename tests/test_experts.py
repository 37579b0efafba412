"""Mixtures of experts as the CPU computes them: only the routed experts (GatherMatmul), in every weight
format, their weights kept compressed; numerics are test_parity's (the same runner covers these variants)."""

from __future__ import annotations

import collections

import openvino as ov
import pytest

from checkpoints import EXPERT_LAYERS


def runtime_kinds(compiled: ov.CompiledModel) -> collections.Counter:
    return collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())


def expert_nodes(compiled: ov.CompiledModel) -> list:
    return [op for op in compiled.get_runtime_model().get_ops() if ".experts." in op.get_friendly_name()
            and op.get_rt_info()["layerType"].astype(str) in ("GatherMatmul", "FullyConnected", "MatMul")]


@pytest.mark.parametrize("weight_format", ["fp32", "int4", "int8"])
@pytest.mark.parametrize("name", EXPERT_LAYERS)
def test_only_routed_experts_are_computed(name, weight_format, converted):
    """Every expert projection is a GatherMatmul (k of E experts per token), none a dense MatMul or
    FullyConnected over all E; compressed expert weights reach it compressed, in int4 all of them."""
    layers, per_layer = EXPERT_LAYERS[name]
    path = converted(name, weight_format)
    xml = next(path.glob("openvino_language_model.xml"), path / "openvino_model.xml")
    compiled = ov.Core().compile_model(xml, "CPU")
    kinds = runtime_kinds(compiled)
    assert kinds["GatherMatmul"] == layers * per_layer, kinds
    nodes = expert_nodes(compiled)
    assert {op.get_rt_info()["layerType"].astype(str) for op in nodes} == {"GatherMatmul"}
    if weight_format != "fp32":
        stored = {op.input(1).get_element_type().get_type_name() for op in nodes}
        # int4: every expert in int4 (the ratio splits the dense layers), but MXFP4 blocks, kept exactly as i8.
        assert stored <= ({"i8"} if "mxfp4" in name else {"i4", "u4"} if weight_format == "int4" else {"i8", "u8"}), stored
