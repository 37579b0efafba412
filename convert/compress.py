"""--weight-format presets on NNCF's data-free weight compression, and what came out of it."""

from __future__ import annotations

from collections import Counter

import openvino as ov

WEIGHT_FORMATS = ("int4", "int8", "fp16", "fp32")


def compress(model: ov.Model, weight_format: str, group_size: int, ratio: float, sym: bool,
             only: set[str] | None = None) -> ov.Model:
    """int4: `ratio` of the layers (by NNCF's data-free sensitivity) in int4 with `group_size`, the
    rest int8 asymmetric per channel, embeddings and lm_head int8; a dimension that `group_size` does
    not divide gets the largest group size that does. int8: every layer per channel.
    fp16/fp32 leave the model as it is (fp16 halves it when saved). `only`: the names of the
    weight layers (MatMul / embedding Gather) to compress; None for all."""
    if weight_format in ("fp16", "fp32"):
        return model
    import nncf

    ignored = nncf.IgnoredScope()
    if only is not None:
        ignored = nncf.IgnoredScope(names=[name for name in weight_layers(model, offsets=True) if name not in only])

    if weight_format == "int8":
        mode = nncf.CompressWeightsMode.INT8_SYM if sym else nncf.CompressWeightsMode.INT8_ASYM
        return nncf.compress_weights(model, mode=mode, ignored_scope=ignored)
    mode = nncf.CompressWeightsMode.INT4_SYM if sym else nncf.CompressWeightsMode.INT4_ASYM
    return nncf.compress_weights(
        model,
        mode=mode,
        group_size=group_size,
        ratio=ratio,
        ignored_scope=ignored,
        advanced_parameters=nncf.AdvancedCompressionParameters(
            group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
        ),
    )


def _stored_constant(node: ov.Node) -> str:
    while node.get_type_name() != "Constant" and node.get_input_size():
        node = node.input_value(0).get_node()
    return node.get_friendly_name()


def _weight_precision(node: ov.Node) -> str:
    """Walk a weight input back through its decompression chain to the stored constant."""
    asymmetric = False
    while node.get_type_name() != "Constant":
        if node.get_type_name() == "Subtract":
            asymmetric = True
        if node.get_type_name() not in ("Convert", "Reshape", "Multiply", "Subtract"):
            return "other"
        node = node.input_value(0).get_node()
    element = node.get_element_type().get_type_name()
    shape = list(node.get_output_shape(0))
    kind = "asym" if asymmetric or element.startswith("u") else "sym"  # unsigned: a zero point or GGUF offsets
    if element in ("i4", "u4"):
        return f"int4_{kind}_g{shape[-1]}" if len(shape) == 3 else f"int4_{kind}"
    if element in ("i8", "u8"):
        return f"int8_{kind}_g{shape[-1]}" if len(shape) == 3 else f"int8_{kind}"
    return element


def weight_layers(model: ov.Model, offsets: bool = False) -> dict[str, ov.Node]:
    """Name → weight input of each MatMul and of the embedding Gather; with `offsets`, also the
    offset corrections of GGUF blocks (graph._offset_linear's), which are part of their layer."""
    layers = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and (offsets or not op.get_friendly_name().endswith(".offsets")):
            layers[op.get_friendly_name()] = op.input_value(1).get_node()
        elif op.get_type_name() == "Gather" and op.get_friendly_name() == "model.embed_tokens":
            layers[op.get_friendly_name()] = op.input_value(0).get_node()
    return layers


def layer_precisions(model: ov.Model) -> Counter:
    """How many weight layers are stored in each precision."""
    weights = {}  # constant → precision; a tied embedding counts once
    for weight in weight_layers(model).values():
        weights[_stored_constant(weight)] = _weight_precision(weight)
    return Counter(p for p in weights.values() if p != "other")
