"""--weight-format presets on NNCF's data-free weight compression, applied to one weight at a time
while the graph is built, so a conversion holds one uncompressed tensor at a time beside the
compressed model so far instead of the whole uncompressed model (a bf16 Phi-3-mini: peak RSS 4.8 GiB
instead of 10.5; benchmarks/README.md, "Converting at real size").

What NNCF decides for the whole model is decided the same way here, from the same numbers: int4
takes the `ratio` of the decoder's projection weights (counted in weights) that NNCF's data-free
criterion finds least sensitive, scored in a first pass over the checkpoint; the rest, the embedding
and the lm_head go int8 asymmetric per channel. A mixture's stacked experts are all int4 and the ratio
counts the dense projections only: experts hold ~90 % of a mixture's weights, so a ratio over all of
them put a third of the experts in int8 — a 30 B mixture 1.3× larger than in int4 experts and reading
1.28× llama.cpp's Q4_K_M bytes per token (benchmarks/README.md, "Mixtures of experts and Mamba-2"),
where Q4_K_M itself keeps experts at 4–6 bits. Each weight is then compressed by nncf.compress_weights
itself, on a model of that one weight's MatMul (or Gather), so its constants and decompression chain are
NNCF's own: tests/test_convert.py checks them byte for byte against a whole-model NNCF run.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .gguf_source import BlockQuantized

WEIGHT_FORMATS = ("int4", "int8", "fp16", "fp32")


class WeightCompression:
    """The `compress(name, tensor, role)` hook graph.build_model applies to each weight it multiplies by.

    int4: `ratio` of the dense layers in int4 with `group_size` (a dimension that it does not divide gets
    the largest power of two that does, down to NNCF's minimum), the rest int8 asymmetric per channel,
    embeddings and lm_head int8; stacked experts int4 unless the ratio is 0. int8: every layer per channel. `only`: the names of the tensors to
    compress (a GGUF's dequantized ones); None for all."""

    def __init__(self, weight_format: str, group_size: int, ratio: float, sym: bool, only: set[str] | None = None,
                 spill: "SpillFile | None" = None):
        import nncf

        if weight_format not in ("int4", "int8"):
            raise ValueError(f"NNCF compresses to int4 or int8, not {weight_format}")
        self.nncf = nncf
        self.weight_format, self.group_size, self.ratio, self.sym, self.only = weight_format, group_size, ratio, sym, only
        self.min_group_size = nncf.AdvancedCompressionParameters().min_adjusted_group_size
        self.spill = spill
        self.scores: dict[str, tuple[int, float]] = {}  # name → (number of weights, NNCF's sensitivity)
        self.int4: set[str] = set()

    @property
    def needs_scores(self) -> bool:
        """Only a split between int4 and int8 needs every weight's sensitivity before the first is compressed."""
        return self.weight_format == "int4" and 0 < self.ratio < 1

    def _takes_int4(self, name: str, tensor, role: str) -> bool:
        """NNCF's ratio-defining weights: the decoder's projections whose input dimension has a group size."""
        if role not in ("linear", "experts") or not self._targets(name, tensor):
            return False
        columns = tensor.shape[-1]
        return self.group_size == -1 or columns % self.group_size == 0 or columns & -columns >= self.min_group_size

    def _targets(self, name: str, tensor) -> bool:
        """Not blocks that arrive quantized (an MXFP4 checkpoint's experts, repacked exactly): they are kept."""
        return not isinstance(tensor, BlockQuantized) and (self.only is None or name in self.only)

    def score(self, name: str, tensor, role: str):
        """First pass: NNCF's data-free sensitivity of each int4 candidate, 1 / (eps + the worst row's mean
        squared int8 error), on the weight as NNCF reads it (bf16 widened to f32). The graph gets a
        stand-in of the weight's shape."""
        if not self._takes_int4(name, tensor, role):
            return tensor
        if role == "experts":
            self.int4.add(name)
            return _stand_in(tensor)
        from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
        from nncf.quantization.algorithms.weight_compression.weight_lowering import get_integer_quantization_error
        from nncf.tensor import Tensor
        from nncf.tensor import functions as fns

        weight = Tensor(np.asarray(tensor, np.float32) if tensor.dtype.name == "bfloat16" else tensor)
        error = get_integer_quantization_error(weight, (tensor.ndim - 1,), WeightCompressionConfig(), "max_mean")
        self.scores[name] = (tensor.size, 1 / (error + fns.finfo(weight).eps))
        return _stand_in(tensor)

    def choose_int4(self) -> None:
        """NNCF's mixed-precision rule over the scored (dense) candidates: in ascending order of sensitivity,
        weights go int4 while the int4 share of the candidates' weights stays below `ratio`. Equal scores
        (only identical weights give them) keep the order the graph reads them in, where NNCF keeps its own
        graph's topological order."""
        total = sum(size for size, _ in self.scores.values())
        in_int4 = 0
        for name, (size, _) in sorted(self.scores.items(), key=lambda item: item[1][1]):
            if (in_int4 + size) / total >= self.ratio:
                break
            self.int4.add(name)
            in_int4 += size

    def compress(self, name: str, tensor, role: str):
        """Second pass: the weight's compressed form (an ov.Output of NNCF's decompression chain), or the
        tensor as it is when it is not compressed."""
        nncf = self.nncf
        if not self._targets(name, tensor):
            return tensor
        options = {}
        if self.weight_format == "int8":
            options["mode"] = nncf.CompressWeightsMode.INT8_SYM if self.sym else nncf.CompressWeightsMode.INT8_ASYM
        elif name in self.int4 or (self.ratio >= 1 and self._takes_int4(name, tensor, role)):
            options.update(
                mode=nncf.CompressWeightsMode.INT4_SYM if self.sym else nncf.CompressWeightsMode.INT4_ASYM,
                group_size=self.group_size, ratio=1.0, all_layers=True,
                advanced_parameters=nncf.AdvancedCompressionParameters(
                    group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST))
        else:
            options["mode"] = nncf.CompressWeightsMode.INT8_ASYM  # NNCF's backup precision
        chain = _compressed_by_nncf(tensor, role, options)
        return self.spill.move(chain) if self.spill else chain


def _stand_in(tensor) -> ov.Output:
    """What the first pass's graph holds instead of a weight: zeros of its shape, no memory."""
    return ops.broadcast(ops.constant(np.float32(0)), ops.constant(np.array(tensor.shape, np.int64))).output(0)


class SpillFile:
    """An unnamed file beside the output that compressed constants move to as they are made, mapped back
    from it: the model being built then holds them as file pages the kernel may write out and drop, not
    as memory. Without it every compressed weight stays in memory until the IR is saved — ~17 GB for a
    30 B-parameter mixture of experts in int4, too much beside the conversion's own work on a 24 GB machine."""

    SMALLEST = 1 << 20  # scales, zero points and small layers stay in memory

    def __init__(self, directory):
        import tempfile

        self._file = tempfile.TemporaryFile(dir=directory)  # gone with the process, even on Ctrl-C
        self._tensors: list[ov.Tensor] = []  # a Constant on shared memory does not keep its buffer alive

    def move(self, chain: ov.Output) -> ov.Output:
        """`chain` with each large constant it is computed from replaced by the same bytes on file."""
        pending = [chain.get_node()]
        while pending:
            node = pending.pop()
            if node.get_type_name() != "Constant":
                pending += [value.get_node() for value in node.input_values()]
            elif node.get_byte_size() >= self.SMALLEST:
                self._move(node)
        return chain

    def _move(self, node: ov.Node) -> None:
        raw = np.asarray(node.data).view(np.uint8).reshape(-1)  # sub-byte types come packed
        offset = self._file.seek(0, 2)
        self._file.write(raw.tobytes())
        self._file.flush()
        mapped = np.memmap(self._file, np.uint8, "r", offset, raw.size)
        self._tensors.append(ov.Tensor(mapped, list(node.get_output_shape(0)), node.get_element_type()))
        moved = ov.op.Constant(self._tensors[-1], shared_memory=True)
        moved.set_friendly_name(node.get_friendly_name())
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(moved.output(0))


# NNCF works on f32 copies of a weight, several at once: Gemma 4 E2B's per-layer embedding table (2.35 G
# weights) took more than 24 GB in one call. Weights are quantized row by row (per channel, or in groups
# along a row), so a large one is compressed in bands of rows of at most this many weights and the
# bands' constants are joined: the same bytes as one call, in NNCF's chain.
BAND_WEIGHTS = 1 << 27


def _compressed_by_nncf(tensor, role: str, options: dict) -> ov.Output:
    """nncf.compress_weights on a model of this one weight's use; returns its decompression chain. Stacked
    experts [E, N, K] are quantized expert by expert, row by row, so they are banded along E as rows are."""
    rows, columns = tensor.shape[0], int(np.prod(tensor.shape[1:]))
    band = max(1, BAND_WEIGHTS // columns)
    if rows <= band:
        return _compressed_band(tensor, role, options)
    return _joined([_compressed_band(tensor[start:start + band], role, options) for start in range(0, rows, band)],
                   rows)


def _joined(chains: list[ov.Output], rows: int) -> ov.Output:
    """The first band's chain, its per-row constants replaced by the bands' joined in order."""
    nodes = [chain.get_node() for chain in chains]
    first = nodes[0]
    if first.get_type_name() == "Constant":
        shape = list(first.get_output_shape(0))
        band_rows = [node.get_output_shape(0)[0] for node in nodes] if shape else []
        if not shape or sum(band_rows) != rows:  # not per row: the same in every band
            return first.output(0)
        raw = np.concatenate([np.asarray(node.data).view(np.uint8).reshape(n, -1) for node, n in zip(nodes, band_rows)])
        tensor = ov.Tensor(raw, [rows, *shape[1:]], first.get_element_type())
        return ov.op.Constant(tensor, shared_memory=False).output(0)
    for i in range(first.get_input_size()):
        if first.get_type_name() == "Reshape" and i == 1:  # the target shape: its first dimension is the rows
            target = np.array(first.input_value(i).get_node().data)
            target[0] = rows
            joined = ops.constant(target).output(0)
        else:
            joined = _joined([node.input_value(i) for node in nodes], rows)
        first.input(i).replace_source_output(joined)
    first.validate_and_infer_types()
    return chains[0]


def _compressed_band(tensor, role: str, options: dict) -> ov.Output:
    import nncf

    from .graph import weight

    constant = weight(tensor)
    if role == "embedding":
        source = ops.parameter([-1, -1], np.int64)
        use = ops.gather(constant, source, ops.constant(np.int64(0)))
    elif role == "experts":
        source = ops.parameter([tensor.shape[0], -1, tensor.shape[2]], np.float32)
        use = ops.matmul(source, constant, transpose_a=False, transpose_b=True)
    else:
        source = ops.parameter([-1, tensor.shape[1]], np.float32)
        use = ops.matmul(source, constant, transpose_a=False, transpose_b=True)
    with _quiet(nncf):
        nncf.compress_weights(ov.Model([ops.result(use)], [source]), **options)
    return use.input_value(0 if role == "embedding" else 1)


@contextlib.contextmanager
def _quiet(nncf):
    """NNCF prints a progress bar and a precision table per call, to stdout; convert prints its own summary."""
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def _stored_constant(node: ov.Node) -> str:
    while node.get_type_name() != "Constant" and node.get_input_size():
        node = node.input_value(0).get_node()
    return node.get_friendly_name()


def weight_precision(node: ov.Node) -> str:
    """Walk a weight input back through its decompression chain to the stored constant."""
    asymmetric = grouped = False
    while node.get_type_name() != "Constant":
        if node.get_type_name() == "Subtract":
            asymmetric = True
        if node.get_type_name() == "Reshape":  # groups [rows, groups, size] (or [E, rows, groups, size]) back to rows
            grouped = True
        if node.get_type_name() not in ("Convert", "Reshape", "Multiply", "Subtract"):
            return "other"
        node = node.input_value(0).get_node()
    element = node.get_element_type().get_type_name()
    shape = list(node.get_output_shape(0))
    kind = "asym" if asymmetric or element.startswith("u") else "sym"  # unsigned: a zero point or GGUF offsets
    if element in ("i4", "u4"):
        return f"int4_{kind}_g{shape[-1]}" if grouped else f"int4_{kind}"
    if element in ("i8", "u8"):
        return f"int8_{kind}_g{shape[-1]}" if grouped else f"int8_{kind}"
    return element


def weight_layers(model: ov.Model) -> dict[str, ov.Node]:
    """Name → weight input of each MatMul and of the embedding Gathers (the token embedding, Gemma 4's
    per-layer one; GGUF blocks' offset corrections, graph._offset_linear's, are part of their layer and
    not counted)."""
    layers = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and not op.get_friendly_name().endswith(".offsets"):
            layers[op.get_friendly_name()] = op.input_value(1).get_node()
        elif op.get_type_name() == "Gather" and op.get_friendly_name().startswith("model.embed_tokens"):
            layers[op.get_friendly_name()] = op.input_value(0).get_node()
    return layers


def weight_bytes(node: ov.Node) -> int:
    """Bytes of the constants a weight input is decompressed from: values, scales, zero points (not
    the i64 shapes of its Reshapes)."""
    seen, pending, total = set(), [node], 0
    while pending:
        node = pending.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        if node.get_type_name() == "Constant":
            total += node.get_byte_size() if node.get_element_type() != ov.Type.i64 else 0
        else:
            pending += [value.get_node() for value in node.input_values()]
    return total


def layer_precisions(model: ov.Model, experts: bool = False) -> Counter:
    """How many weight layers are stored in each precision; `experts`: only the stacked expert weights
    [E, N, K] (convert.experts), each counted once for all its experts."""
    weights = {}  # constant → precision; a tied embedding counts once
    for weight in weight_layers(model).values():
        if not experts or weight.get_output_partial_shape(0).rank.get_length() == 3:
            weights[_stored_constant(weight)] = weight_precision(weight)
    return Counter(p for p in weights.values() if p != "other")
