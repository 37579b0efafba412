"""The building blocks of a decoder-only transformer, op by op, in the form OpenVINO GenAI's
LLMPipeline expects; each architecture in convert/models composes its decoder layer from them.

Inputs `input_ids`, `attention_mask`, `position_ids` (i64 [batch, seq]) and `beam_idx` (i32 [batch]);
output `logits` (f32 [batch, seq, vocab]). The KV cache lives in the model as state: per layer a
ReadValue → Gather(beam_idx) → Concat → Assign chain for keys and for values, which is the pattern
GenAI's SDPAToPagedAttention rewrites into paged attention. The subgraphs are kept in the shapes the
CPU plugin fuses (RMSNorm, rotary embedding, SDPA, gated MLP).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.utils.node_factory import NodeFactory

from .gguf_source import BlockQuantized
from .models.base import ModelArgs, Rope
from .sources import Weights

F32 = ov.Type.f32
# Added to masked attention scores: finite even in f16 (GPU inference), where -inf or f32's
# minimum would turn a row with nothing to attend to into NaN.
MASKED = -65504.0
INT_MAX = np.iinfo(np.int64).max
_OPSET13 = NodeFactory("opset13")


def weight(array) -> ov.Output:
    """A weight constant in its stored precision, converted to f32 where it is used.

    Keeping bf16/f16 constants as they are (behind a Convert) is lossless and halves the memory
    NNCF works on; numpy has no bf16, so its bits go to OpenVINO as a bf16 tensor. GGUF blocks
    become the decompression chain the plugins fuse into their matrix multiplications. An output
    already in the graph (a tied embedding's table) is returned as it is.
    """
    if isinstance(array, ov.Output):
        return array
    if isinstance(array, BlockQuantized):
        if has_offset(array) and len(array.shape) == 3:
            return _zero_point_experts(array)
        if has_offset(array):
            raise ValueError("GGUF blocks with an offset are used through linear() or embedding()")
        return _scaled_blocks(array)
    if array.dtype == np.float32:
        return ops.constant(array).output(0)
    if array.dtype == ml_dtypes.bfloat16:
        tensor = ov.Tensor(np.ascontiguousarray(array).view(np.uint16), list(array.shape), ov.Type.bf16)
        const = ov.op.Constant(tensor, shared_memory=False)
    elif array.dtype == np.float16:
        const = ops.constant(array)
    else:
        raise TypeError(f"unsupported weight dtype {array.dtype}")
    return ops.convert(const, F32).output(0)


def has_offset(w) -> bool:
    """GGUF blocks with an offset per group (Q4_1, Q5_1, Q4_K, Q5_K): used in the "bsums" form."""
    return isinstance(w, BlockQuantized) and w.offset is not None


def _scaled_blocks(blocks: BlockQuantized, zero_point: np.ndarray | None = None) -> ov.Output:
    """scale · q per group (or scale · (q − zero_point)), reshaped to [rows, cols] (or stacked experts'
    [E, rows, cols]): the decompression chain the plugins fuse.

    The scale is built from the factors the GGUF stores (f16 d, times an integer per group for
    K-quants); OpenVINO folds them into one f32 constant per layer when it compiles the model, so
    the product is exact while the IR stays as small as the file."""
    *rows, cols = blocks.shape
    groups = cols // blocks.group
    raw = np.ascontiguousarray(blocks.values).view(np.uint8)  # the bytes, typed by ov.Type below
    values = ov.op.Constant(ov.Tensor(raw, [*rows, groups, blocks.group], getattr(ov.Type, blocks.element_type)),
                            shared_memory=False)
    scale = None
    for factor in blocks.scale_factors:
        factor = ops.constant(np.ascontiguousarray(factor))
        factor = factor if factor.get_element_type() == F32 else ops.convert(factor, F32)
        scale = factor if scale is None else ops.multiply(scale, factor)
    if list(scale.get_output_shape(0)) != [*rows, groups, 1]:
        scale = ops.reshape(scale, vector([*rows, groups, 1]), special_zero=False)
    x = ops.convert(values, F32)
    if zero_point is not None:
        x = ops.subtract(x, ops.constant(zero_point.reshape(*rows, groups, 1)))
    x = ops.multiply(x, scale)
    return ops.reshape(x, vector([*rows, cols]), special_zero=False).output(0)


def _group_scales(blocks: BlockQuantized) -> np.ndarray:
    """The product of the scale's factors in f32, [(E,) rows, groups]."""
    scales = np.float32(1)
    for factor in blocks.scale_factors:
        scales = scales * factor.astype(np.float32)
    return scales.reshape(*blocks.shape[:-1], -1)


def _group_offsets(blocks: BlockQuantized) -> np.ndarray:
    """The offset per group in f32, [(E,) rows, groups]: K-quants' 8-bit m per group times dmin per 8 groups."""
    offsets = blocks.offset
    if isinstance(offsets, BlockQuantized):
        m = offsets.values.reshape(*offsets.shape[:-1], -1, offsets.group).astype(np.float32)
        return (m * _group_scales(offsets)[..., None]).reshape(offsets.shape)
    return offsets.astype(np.float32)


def _zero_points(blocks: BlockQuantized) -> np.ndarray | None:
    """offset / scale per group [(E,) rows, groups] in f32, with which scale · (q − zero point) is the block's
    w = scale · q − offset to f32 rounding; None if some group has a zero scale but an offset (its
    weights are all −offset, which no zero point gives)."""
    scales, offsets = _group_scales(blocks), _group_offsets(blocks)
    if np.any((scales == 0) & (offsets != 0)):
        return None
    return np.divide(offsets, scales, out=np.zeros_like(offsets), where=scales != 0)


def _zero_point_experts(blocks: BlockQuantized) -> ov.Output:
    """Stacked expert blocks with an offset (Q4_1, Q5_1, Q4_K, Q5_K) as scale · (q − zero point), the one
    offset form GatherMatmul keeps compressed (the bsums form is a second product over all experts).
    A group with a zero scale but an offset holds −offset in every weight: it becomes q = 0, scale =
    offset, zero point 1, the same weights, with the scales then stored as one f32 per group."""
    zero_points = _zero_points(blocks)
    if zero_points is None:
        scales, offsets = _group_scales(blocks), _group_offsets(blocks)
        constant = (scales == 0) & (offsets != 0)
        values = blocks.values.copy()
        values[constant] = 0
        scales = np.where(constant, offsets, scales)
        zero_points = np.where(constant, np.float32(1), np.divide(offsets, scales, out=np.zeros_like(offsets),
                                                                   where=scales != 0))
        blocks = BlockQuantized(blocks.element_type, values, (scales[..., None],), blocks.shape, blocks.group)
    return _scaled_blocks(blocks, zero_points)


def scalar(value, dtype=np.int64) -> ov.Output:
    return ops.constant(np.array(value, dtype=dtype)).output(0)


def vector(values, dtype=np.int64) -> ov.Output:
    return ops.constant(np.array(values, dtype=dtype)).output(0)


def _offset_linear(x, blocks: BlockQuantized, name: str | None) -> ov.Output:
    """x @ Wᵀ for GGUF blocks with an offset, W = S∘Q − O per group (Q4_1, Q5_1, Q4_K, Q5_K), computed
    as x @ (S∘Q)ᵀ − groupsum(x) @ Oᵀ, llama.cpp's "bsums": the large product then has unsigned
    weights and a scale but no fractional zero point, which keeps the CPU plugin's fast kernel and
    its int8 activations (Phi-3-mini Q4_K_M, one token: 285–315 ms against 328–349 ms with the
    offset as an f32 zero point); the correction reads one offset per group, K-quants' as 8-bit m
    times dmin per 8 groups, as they are stored."""
    groups = blocks.shape[1] // blocks.group
    product = ops.matmul(x, _scaled_blocks(blocks), transpose_a=False, transpose_b=True, name=name)
    group_sums = ops.reduce_sum(ops.reshape(x, vector([0, 0, groups, blocks.group]), special_zero=True), vector([-1]),
                                keep_dims=False)
    correction = ops.matmul(group_sums, weight(blocks.offset), transpose_a=False, transpose_b=True, name=f"{name}.offsets")
    return ops.subtract(product, correction)


def embedding(table, ids, name: str = "model.embed_tokens") -> ov.Output:
    """The table's rows for `ids`. GGUF blocks with an offset give rows of S∘Q minus each group's
    offset — the lookup's form of _offset_linear — so no fractional zero point is needed either."""
    if not has_offset(table):
        return ops.gather(weight(table), ids, scalar(0), name=name).output(0)
    groups = table.shape[1] // table.group
    rows = ops.gather(_scaled_blocks(table), ids, scalar(0), name=name)
    offsets = ops.unsqueeze(ops.gather(weight(table.offset), ids, scalar(0)), vector([-1]))
    grouped = ops.reshape(rows, vector([0, 0, groups, table.group]), special_zero=True)
    return ops.reshape(ops.subtract(grouped, offsets), vector([0, 0, table.shape[1]]), special_zero=True).output(0)


# A GGUF layer with offsets (Q4_1, Q5_1, Q4_K, Q5_K) of fewer weights than this is one FullyConnected
# with an f32 zero point. The CPU plugin decompresses such a layer without int8 activations, at ~50–70 ps
# per weight against ~33 for the same u4 values without a zero point (2 cores, AMD EPYC), but the bsums
# form's extra FullyConnected, ReduceSum and Subtract cost a small layer more than that: SmolLM2-135M's
# Q4_1 (layers of 0.1–0.9 M weights) decodes in 12.7 ms instead of 15.4 (benchmarks/README.md, "Fixed
# cost per token"). Above ~1 M weights the extra decompression costs more than the three nodes.
ZERO_POINT_BELOW_WEIGHTS = 1_000_000


def linear(x, w, bias: np.ndarray | None = None, name: str | None = None) -> ov.Output:
    """x @ Wᵀ (+ b), W stored [out, in] as in the checkpoint (or GGUF blocks, or a tied table)."""
    if has_offset(w):
        zero_points = _zero_points(w) if w.shape[0] * w.shape[1] < ZERO_POINT_BELOW_WEIGHTS else None
        if zero_points is None:
            y = _offset_linear(x, w, name)
        else:
            y = ops.matmul(x, _scaled_blocks(w, zero_points), transpose_a=False, transpose_b=True, name=name)
    else:
        y = ops.matmul(x, weight(w), transpose_a=False, transpose_b=True, name=name)
    if bias is not None:
        y = ops.add(y, weight(bias))
    return y.output(0)


def rms_norm(x, w: np.ndarray | None, eps: float, plus_one: bool = False) -> ov.Output:
    """x / sqrt(mean(x²) + eps) · w  (Zhang & Sennrich, 2019) over the last axis; Gemma scales by
    (1 + w), added here in f32 as its reference does, so the plugin still sees one RMS pattern;
    w None: no scale (Gemma 4's value norm)."""
    mean_square = ops.reduce_mean(ops.power(x, scalar(2.0, np.float32)), vector([-1]), keep_dims=True)
    inv_rms = ops.divide(scalar(1.0, np.float32), ops.sqrt(ops.add(mean_square, scalar(eps, np.float32))))
    normed = ops.multiply(x, inv_rms)
    if w is None:
        return normed.output(0)
    gamma = weight(w) if not plus_one else ops.constant(np.asarray(w, np.float32) + np.float32(1.0)).output(0)
    return ops.multiply(normed, gamma).output(0)


def rope_cos_sin(position_ids, rope: Rope) -> tuple[ov.Output, ov.Output]:
    """cos and sin of position × inverse frequency, [batch, 1, seq, rotary_dim] (Su et al., 2021).

    For longrope the frequencies switch to the long factors when the highest position reaches
    past the pretraining length, as in the reference implementation. Positions of rank 3 are
    M-RoPE's rows (multimodal_angles).
    """
    inv_freq = ops.constant(rope.inv_freq.reshape(1, 1, -1))
    if rope.long_inv_freq is not None:
        seq_len = ops.add(ops.reduce_max(position_ids, vector([0, 1]), keep_dims=False), scalar(1))
        is_long = ops.greater(seq_len, scalar(rope.original_max_position_embeddings))
        inv_freq = ops.select(is_long, ops.constant(rope.long_inv_freq.reshape(1, 1, -1)), inv_freq)
    positions = ops.unsqueeze(ops.convert(position_ids, F32), vector([-1]))
    angles = ops.multiply(positions, inv_freq).output(0)
    if position_ids.get_partial_shape().rank.get_length() == 3:
        angles = multimodal_angles(angles, rope)
    angles = ops.unsqueeze(ops.concat([angles, angles], axis=-1), vector([1]))
    cos, sin = ops.cos(angles), ops.sin(angles)
    if rope.attention_factor != 1.0:
        factor = scalar(rope.attention_factor, np.float32)
        cos, sin = ops.multiply(cos, factor), ops.multiply(sin, factor)
    return cos.output(0), sin.output(0)


def multimodal_angles(angles, rope: Rope) -> ov.Output:
    """Interleaved M-RoPE (Qwen3-VL): the angles of rows (t, h, w) of positions [rows, B, T, F] → [B, T, F],
    frequency j taking the h row where j % 3 == 1 and j < 3·sections[1], the w row where j % 3 == 2 and
    j < 3·sections[2], the t row elsewhere. Text tokens have t = h = w, so this is plain rope for them.
    A fourth, leading row (Qwen3.5's text positions, used only for masks) is skipped."""
    sections = rope.mrope_section or [len(rope.inv_freq), 0, 0]
    rows = angles.get_partial_shape()[0].get_length()
    if rows == 4:
        angles = ops.slice(angles, vector([1]), vector([4]), vector([1]), vector([0]))
    j = np.arange(len(rope.inv_freq))
    row = np.where((j % 3 == 1) & (j < 3 * sections[1]), 1, np.where((j % 3 == 2) & (j < 3 * sections[2]), 2, 0))
    one_hot = (row[None, :] == np.arange(3)[:, None]).astype(np.float32).reshape(3, 1, 1, -1)
    return ops.reduce_sum(ops.multiply(angles, ops.constant(one_hot)), vector([0]), keep_dims=False).output(0)


def _slice_last(x, start: int, stop: int) -> ov.Output:
    return ops.slice(x, vector([start]), vector([stop]), vector([1]), vector([-1])).output(0)


def apply_rope(x, cos, sin, rotary_dim: int, head_dim: int) -> ov.Output:
    """x·cos + rotate_half(x)·sin on the first rotary_dim channels of each head."""
    rotated_part = x if rotary_dim == head_dim else _slice_last(x, 0, rotary_dim)
    half = rotary_dim // 2
    first, second = _slice_last(rotated_part, 0, half), _slice_last(rotated_part, half, rotary_dim)
    rotate_half = ops.concat([ops.multiply(second, scalar(-1.0, np.float32)), first], axis=-1)
    out = ops.add(ops.multiply(rotated_part, cos), ops.multiply(rotate_half, sin))
    if rotary_dim != head_dim:
        out = ops.concat([out, _slice_last(x, rotary_dim, head_dim)], axis=-1)
    return out.output(0)


def causal_mask(tokens, attention_mask, sliding_window: int | None, blocks=None) -> ov.Output:
    """Additive mask [batch, 1, new, total]: 0 where a new token may attend, MASKED elsewhere.

    New tokens (`tokens`: ids [B, T] or embeddings [B, T, H]) sit at the end of the sequence that
    `attention_mask` covers; a query attends to earlier keys that are not padding and, with a sliding
    window, to fewer than `sliding_window` back. `blocks` (bool [B, 1, new, total], image_blocks) also
    lets a query attend to later keys of its own block, as Gemma 3's image tokens do.
    """
    total = ops.gather(ops.shape_of(attention_mask), scalar(1), scalar(0))
    new = ops.gather(ops.shape_of(tokens), scalar(1), scalar(0))
    key_pos = ops.range(scalar(0), total, scalar(1), output_type="i64")
    query_pos = ops.unsqueeze(ops.range(ops.subtract(total, new), total, scalar(1), output_type="i64"), scalar(1))
    causal = ops.less_equal(key_pos, query_pos)
    if blocks is not None:
        causal = ops.logical_or(causal, blocks)
    not_padding = ops.unsqueeze(ops.not_equal(attention_mask, scalar(0)), vector([1, 2]))
    if sliding_window is None:
        allowed = ops.logical_and(causal, not_padding)
        return ops.select(allowed, scalar(0.0, np.float32), scalar(MASKED, np.float32)).output(0)

    # Paged attention ignores this mask but takes the window from it: SDPAToPagedAttention finds
    # key > query + offset followed by four BitwiseAnds, a Broadcast, a Select and a Slice, and
    # reads the window as -offset. The two bounds checks are always true; they complete that shape.
    in_window = ops.greater(key_pos, ops.add(query_pos, scalar(-sliding_window)))
    allowed = ops.bitwise_and(causal, in_window)
    allowed = ops.bitwise_and(allowed, not_padding)
    allowed = ops.bitwise_and(ops.greater_equal(query_pos, scalar(0)), allowed)
    allowed = ops.bitwise_and(allowed, ops.less(key_pos, total))
    allowed = ops.broadcast(allowed, ops.shape_of(allowed))
    mask = ops.select(allowed, scalar(0.0, np.float32), scalar(MASKED, np.float32))
    return ops.slice(mask, vector([0]), ops.unsqueeze(total, scalar(0)), vector([1]), vector([3])).output(0)


def image_blocks(token_type_ids, attention_mask) -> ov.Output:
    """Where a new token and a key lie in the same image (bool [B, 1, new, total]): each run of tokens
    whose token_type_ids is 1 (an image's) or 2 (a video frame's) is one block, whose tokens attend to
    each other both ways (Gemma 3, Gemma 4). The new tokens' types are given; earlier keys are text or
    whole earlier images, which only causal attention reaches."""
    is_image = ops.logical_or(ops.equal(token_type_ids, scalar(1)), ops.equal(token_type_ids, scalar(2)))
    before = ops.concat([ops.broadcast(ops.constant(np.array([[False]])), ops.concat(
        [ops.gather(ops.shape_of(token_type_ids), vector([0]), scalar(0)), vector([1])], 0)),
        ops.slice(is_image, vector([0]), vector([-1]), vector([1]), vector([1]))], axis=1)
    starts = ops.logical_and(is_image, ops.logical_not(before))
    image = ops.subtract(ops.cumsum(ops.convert(starts, ov.Type.i64), scalar(1)), scalar(1))
    block = ops.select(is_image, image, scalar(-1))  # [B, new]: which image, −1 for text
    past = ops.subtract(ops.gather(ops.shape_of(attention_mask), vector([1]), scalar(0)),
                        ops.gather(ops.shape_of(token_type_ids), vector([1]), scalar(0)))
    past_blocks = ops.broadcast(scalar(-1), ops.concat([ops.gather(ops.shape_of(token_type_ids), vector([0]), scalar(0)),
                                                        past], 0))
    key_block = ops.unsqueeze(ops.concat([past_blocks, block], axis=1), vector([1, 2]))  # [B, 1, 1, total]
    query_block = ops.unsqueeze(block, vector([1, 3]))  # [B, 1, new, 1]
    return ops.logical_and(ops.equal(query_block, key_block), ops.greater_equal(query_block, scalar(0))).output(0)


class Context:
    """Graph values every layer reads: masks (one per attention window), rope tables (one per set of
    frequencies) and the like are built the first time a layer asks, then shared by every layer."""

    def __init__(self, tokens, attention_mask, position_ids, beam_idx, inputs: dict | None = None):
        """`tokens`: the new tokens' ids [B, T], or their embeddings [B, T, H] in the multimodal layout;
        `inputs`: that layout's other inputs by name (token_type_ids, per_layer_inputs, …)."""
        self.tokens, self.attention_mask, self.position_ids = tokens, attention_mask, position_ids
        self.inputs = inputs or {}
        self.images_both_ways_in_full_attention = True
        self.batch = ops.gather(ops.shape_of(tokens), vector([0]), scalar(0)).output(0)
        self.beam_idx = beam_idx.output(0) if beam_idx is not None else None  # None: a model without state
        self.sinks: list = []
        self._shared: dict = {}

    def shared(self, key, build):
        """The value under `key`, built by `build()` the first time a layer asks."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def mask(self, sliding_window: int | None) -> ov.Output:
        """The attention mask; where the inputs give token_type_ids, each image's tokens see each other (in
        sliding-window layers only, where `images_both_ways_in_full_attention` is false: Gemma 4)."""
        def build():
            blocks = None
            if "token_type_ids" in self.inputs and (sliding_window or self.images_both_ways_in_full_attention):
                blocks = self.shared("image_blocks", lambda: image_blocks(self.inputs["token_type_ids"], self.attention_mask))
            return causal_mask(self.tokens, self.attention_mask, sliding_window, blocks)

        return self.shared(("mask", sliding_window), build)

    def rope(self, rope: Rope) -> tuple[ov.Output, ov.Output]:
        return self.shared(("rope", id(rope)), lambda: rope_cos_sin(self.position_ids, rope))


def read_state(name: str, ctx: Context, shape: list[int]) -> ov.Output:
    """The value a layer carried over from the previous call, [batch, *shape], for the selected beams.

    Zeros at the start of a conversation. The initializer's shape is how GenAI tells kinds of state
    apart (utils::get_cache_types): a 0 in `shape` is a KV cache growing along that axis; rank 3
    with no 0 a convolution's window, rank 4 with no 0 a linear-attention state — both fixed-size,
    which GenAI resets rather than trims. Store the next value with write_state under the same name."""
    empty = ops.broadcast(scalar(0.0, np.float32), ops.concat([ctx.batch, vector(shape)], 0))
    past = ops.read_value(empty, name, F32, ov.PartialShape([-1, *(-1 if n == 0 else n for n in shape)]))
    return ops.gather(past, ctx.beam_idx, scalar(0)).output(0)


def write_state(value, name: str, ctx: Context) -> None:
    if isinstance(value, ov.Output):  # Python's Assign takes a node, and of it the first output only
        value = value.get_node() if value.get_index() == 0 else ops.convert(value, value.get_element_type())  # a no-op the plugin removes
    ctx.sinks.append(ops.assign(value, name))


def kv_cache(new, name: str, ctx: Context, num_kv_heads: int, head_dim: int) -> ov.Output:
    """Past keys (or values) for the selected beams, followed by the new ones; stored back as state."""
    present = ops.concat([read_state(name, ctx, [num_kv_heads, 0, head_dim]), new], axis=2)
    write_state(present, name, ctx)
    return present.output(0)


def short_conv(x, kernel: np.ndarray, layer: int, ctx: Context, bias: np.ndarray | None = None) -> ov.Output:
    """Causal depthwise convolution over time, [B, C, T] → [B, C, T], each channel with its own K taps
    (kernel [C, K], or [C, 1, K] as checkpoints store it; H3 and Mamba's short convolution) and, where
    given, its bias [C] (added after the Slice, outside the form below). The last K
    inputs are carried as the layer's state [B, C, K], `cache_params.past.conv.{layer}`:
    Concat(state, x) → GroupConvolution (no padding) → Slice off the first output is the form GenAI's
    PagedCausalConv1DFusion rewrites for paged attention; the oldest column only keeps that form."""
    kernel = kernel.reshape(kernel.shape[0], -1)
    channels, taps = kernel.shape
    name = f"cache_params.past.conv.{layer}"
    window = ops.concat([read_state(name, ctx, [channels, taps]), x], axis=-1)
    write_state(ops.slice(window, vector([-taps]), vector([INT_MAX]), vector([1]), vector([2])), name, ctx)
    filters = ops.reshape(weight(kernel), vector([channels, 1, 1, taps]), special_zero=False)
    y = ops.group_convolution(window, filters, strides=[1], pads_begin=[0], pads_end=[0], dilations=[1])
    y = ops.slice(y, vector([1]), vector([INT_MAX]), vector([1]), vector([2]))
    if bias is not None:
        y = ops.add(y, ops.unsqueeze(weight(bias), vector([-1])))
    return y.output(0)


def l2_normalize(x, eps: float = 1e-6) -> ov.Output:
    """x / sqrt(Σx² + eps) over the last axis, written x · 1/sqrt(…), the form the CPU plugin folds into
    its GatedDeltaNet node when nothing sits between the two."""
    sum_sq = ops.reduce_sum(ops.multiply(x, x), vector([-1]), keep_dims=True)
    return ops.multiply(x, ops.divide(scalar(1.0, np.float32), ops.sqrt(ops.add(sum_sq, scalar(eps, np.float32))))).output(0)


def repeat_heads(x, n_rep: int, tiled: bool = False) -> ov.Output:
    """[B, T, H, D] → [B, T, H·n_rep, D]: each head n_rep times in place (repeat_interleave), or, `tiled`,
    all heads n_rep times over."""
    if n_rep == 1:
        return x
    heads = np.arange(x.get_partial_shape()[2].get_length())
    return ops.gather(x, vector(np.tile(heads, n_rep) if tiled else np.repeat(heads, n_rep)), scalar(2)).output(0)


def gated_delta_rule(q, k, v, g, beta, state, heads_tiled: bool = False) -> tuple[ov.Output, ov.Output]:
    """The gated delta rule (Yang et al., 2024) token by token: with q, k l2-normalised and q scaled by
    1/√dk, for each t: S ← S·exp(g_t); S ← S + k_t ⊗ β_t(v_t − Sᵀk_t); o_t = Sᵀq_t.

    q, k [B, T, Hk, Dk] (Hk dividing Hv: value head j reads key head j // (Hv/Hk), or j mod Hk when
    `heads_tiled`), v [B, T, Hv, Dv],
    g and beta [B, T, Hv], state [B, Hv, Dk, Dv] → (o [B, T, Hv, Dv], the last S). Written as the Loop
    the CPU plugin replaces with one GatedDeltaNet node (FuseGDNLoop: l2norm and the √dk from q's shape
    outside; a body of [timestep, q, k, v, S, g, β, output buffer] whose results are the condition, S and
    the buffer the step's output is scattered into), which GenAI's paged-attention conversion also knows.
    q and k are normalised before their heads are repeated, which keeps the repeat out of the fused op:
    folded into it, GenAI's paged conversion would shape the op's output by the key heads (a wrong
    element count whenever Hk < Hv)."""
    n_rep = v.get_partial_shape()[2].get_length() // q.get_partial_shape()[2].get_length()
    q, k = (repeat_heads(l2_normalize(x), n_rep, heads_tiled) for x in (q, k))
    heads_first = vector([0, 2, 1, 3])
    q, k, v = (ops.transpose(t, heads_first) for t in (q, k, v))  # [B, H, T, D]
    g, beta = (ops.transpose(t, vector([0, 2, 1])) for t in (g, beta))  # [B, H, T]
    key_dim = ops.convert(ops.gather(ops.shape_of(q), scalar(3), scalar(0)), F32)
    q = ops.divide(q, ops.power(key_dim, scalar(0.5, np.float32)))
    v_shape = ops.shape_of(v)
    steps = ops.convert(ops.gather(v_shape, vector([2]), scalar(0)), ov.Type.i32)

    # One step: inputs sliced at t along axis 2 ([B, H, 1, ·]), S and the output buffer carried.
    t = ops.parameter([], ov.Type.i32, name="timestep")
    q_t, k_t, v_t = (ops.parameter([-1, -1, 1, -1], F32, name=n) for n in ("q_t", "k_t", "v_t"))
    s_prev = ops.parameter([-1, -1, -1, -1], F32, name="state")
    g_t, beta_t = (ops.parameter([-1, -1, 1], F32, name=n) for n in ("g_t", "beta_t"))
    out_prev = ops.parameter([-1, -1, -1, -1], F32, name="output")
    axis, rows, cols = scalar(2, np.int32), vector([-1], np.int32), vector([-2], np.int32)
    q1, k1, v1 = (ops.squeeze(x, axis) for x in (q_t, k_t, v_t))  # [B, H, D]
    s = ops.multiply(s_prev, ops.unsqueeze(ops.exp(g_t), rows))
    k_col = ops.unsqueeze(k1, rows)  # [B, H, Dk, 1]
    recalled = ops.reduce_sum(ops.multiply(s, k_col), cols, keep_dims=False)  # Sᵀk [B, H, Dv]
    s = ops.add(s, ops.multiply(k_col, ops.unsqueeze(ops.multiply(ops.subtract(v1, recalled), beta_t), cols)))
    o = ops.reduce_sum(ops.multiply(s, ops.unsqueeze(q1, rows)), cols, keep_dims=True)  # [B, H, 1, Dv]
    out = ops.scatter_update(out_prev, ops.unsqueeze(t, vector([0], np.int32)), o, axis)
    body = ov.Model([ops.constant(np.array([True])).output(0), s.output(0), out.output(0)],
                    [t, q_t, k_t, v_t, s_prev, g_t, beta_t, out_prev], "gated_delta_step")

    loop = ops.loop(steps, ops.constant(np.array([True])))
    loop.set_function(body)
    loop.set_special_body_ports([0, 0])
    for param, value in ((q_t, q), (k_t, k), (v_t, v), (g_t, g), (beta_t, beta)):
        loop.set_sliced_input(param, value.output(0), 0, 1, 1, -1, 2)
    loop.set_merged_input(s_prev, state, s.output(0))
    loop.set_merged_input(out_prev, ops.broadcast(scalar(0.0, np.float32), v_shape).output(0), out.output(0))
    outputs = ops.transpose(loop.get_iter_value(out.output(0), -1), heads_first)
    return outputs.output(0), loop.get_iter_value(s.output(0), -1)


def selective_scan(x, dt, a, b, c, state, name: str = "selective_scan") -> tuple[ov.Output, ov.Output]:
    """Mamba-2's selective state-space scan (Dao & Gu, 2024) token by token: for each t,
    S ← S·exp(A·dt_t) + dt_t · x_t ⊗ B_t and y_t = S·C_t (the D skip is the caller's).

    x [B, T, H, P], dt [B, T, H] (after softplus and clamp), `a` [H] (A = −exp(A_log)), b and c
    [B, T, G, N] (head h reads group h // (H/G)), state [B, H, P, N] → (y [B, T, H, P], the last S).
    Written as the Loop GenAI's paged conversion replaces with PagedSelectiveSSM (openvino's FuseSSMLoop):
    exp(A·dt), dt·B ⊗ x and C per head computed for every token before the Loop, which slices them along
    time; its body [timestep, dA, dBx, C, S, output buffer] returns the condition, S and the buffer the
    step's y is scattered into. Outside paged attention the CPU runs it as a TensorIterator, slowly (a
    runtime that finds a Loop `name`d …selective_scan runs the model on paged attention)."""
    heads, head_dim = (x.get_partial_shape()[i].get_length() for i in (2, 3))
    groups, state_size = (b.get_partial_shape()[i].get_length() for i in (2, 3))

    def per_head(v):  # [B, T, G, N] → [B, T, H, N], each group repeated for its heads in place
        tiled = ops.tile(ops.unsqueeze(v, scalar(3)), vector([1, 1, 1, heads // groups, 1]))
        return ops.reshape(tiled, vector([0, 0, -1, state_size]), special_zero=True)

    decay = ops.reshape(ops.exp(ops.multiply(ops.constant(a), dt)), vector([0, 0, 0, 1, 1]), special_zero=True)
    db = ops.multiply(ops.unsqueeze(dt, scalar(-1)), per_head(b))
    dbx = ops.multiply(ops.unsqueeze(db, scalar(-2)), ops.unsqueeze(x, scalar(-1)))  # [B, T, H, P, N]
    c5 = ops.unsqueeze(per_head(c), scalar(-2))  # [B, T, H, 1, N]
    steps = ops.convert(ops.gather(ops.shape_of(x), scalar(1), scalar(0)), ov.Type.i32)

    t = ops.parameter([], ov.Type.i32, name="timestep")
    decay_t = ops.parameter([-1, 1, heads, 1, 1], F32, name="decay_t")
    dbx_t = ops.parameter([-1, 1, heads, head_dim, state_size], F32, name="dbx_t")
    c_t = ops.parameter([-1, 1, heads, 1, state_size], F32, name="c_t")
    s_prev = ops.parameter([-1, heads, head_dim, state_size], F32, name="state")
    out_prev = ops.parameter([-1, -1, heads, head_dim], F32, name="output")
    time_axis = scalar(1)
    s = ops.add(ops.multiply(s_prev, ops.squeeze(decay_t, time_axis)), ops.squeeze(dbx_t, time_axis))
    y = ops.unsqueeze(ops.reduce_sum(ops.multiply(s, ops.squeeze(c_t, time_axis)), scalar(-1), keep_dims=False), time_axis)
    out = ops.scatter_update(out_prev, ops.unsqueeze(t, scalar(0)), y, time_axis)
    body = ov.Model([ops.constant(np.array([True])).output(0), s.output(0), out.output(0)],
                    [t, decay_t, dbx_t, c_t, s_prev, out_prev], "selective_scan_step")

    loop = ops.loop(steps, ops.constant(np.array([True])))
    loop.set_friendly_name(name)
    loop.set_function(body)
    loop.set_special_body_ports([0, 0])
    for param, value in ((decay_t, decay), (dbx_t, dbx), (c_t, c5)):
        loop.set_sliced_input(param, value.output(0), 0, 1, 1, -1, 1)
    loop.set_merged_input(s_prev, state, s.output(0))
    loop.set_merged_input(out_prev, ops.broadcast(scalar(0.0, np.float32), ops.shape_of(x)).output(0), out.output(0))
    return loop.get_iter_value(out.output(0), -1), loop.get_iter_value(s.output(0), -1)


def mamba2(x, w: "LayerWeights", ctx: Context, heads: int, head_dim: int, groups: int, state_size: int, eps: float,
           time_step_limit=(0.0, float("inf")), prefix: str = "mamba") -> ov.Output:
    """A Mamba-2 mixer (Dao & Gu, 2024) under transformers' names (Mamba2, Bamba, Granite 4.0-H):
    in_proj → gate z, xBC, dt; a causal depthwise convolution over xBC (short_conv, with its bias) and
    SiLU; x, B, C split off; dt = softplus(dt + dt_bias) clamped to time_step_limit; the selective scan
    with state `cache_params.past.ssm.{layer}` [B, H, P, N]; y + D·x; an RMSNorm of y·SiLU(z) in each of
    the `groups` groups of channels, scaled by norm.weight; out_proj."""
    inner, bc = heads * head_dim, groups * state_size
    z, xbc, dt = ops.variadic_split(w.linear(x, f"{prefix}.in_proj"), scalar(-1), vector([inner, inner + 2 * bc, heads])).outputs()
    conv_bias = w.optional(f"{prefix}.conv1d.bias")
    xbc = short_conv(ops.transpose(xbc, vector([0, 2, 1])), w[f"{prefix}.conv1d.weight"], w.layer, ctx, conv_bias)
    xs, b, c = ops.variadic_split(ops.transpose(ops.swish(xbc), vector([0, 2, 1])), scalar(-1), vector([inner, bc, bc])).outputs()
    xs = split_heads(xs, heads, head_dim)
    b, c = split_heads(b, groups, state_size), split_heads(c, groups, state_size)

    dt = ops.softplus(ops.add(dt, ops.constant(np.asarray(w[f"{prefix}.dt_bias"], np.float32))))
    low, high = time_step_limit
    if (low, high) != (0.0, float("inf")):  # softplus is never negative: the default limit clamps nothing
        dt = ops.clamp(dt, low, high)
    if f"{prefix}.A" in w:  # a GGUF file stores A itself, [H, 1]
        a = np.asarray(w[f"{prefix}.A"], np.float32).reshape(-1)
    else:
        a = -np.exp(np.asarray(w[f"{prefix}.A_log"], np.float32))
    state_name = f"cache_params.past.ssm.{w.layer}"
    y, state = selective_scan(xs, dt.output(0), a, b, c, read_state(state_name, ctx, [heads, head_dim, state_size]),
                              name=w.key(f"{prefix}.selective_scan"))
    write_state(state, state_name, ctx)

    skip = ops.constant(np.asarray(w[f"{prefix}.D"], np.float32).reshape(heads, 1))
    y = ops.reshape(ops.add(y, ops.multiply(xs, skip)), vector([0, 0, inner]), special_zero=True)
    gated = split_heads(ops.multiply(y, ops.swish(z)), groups, inner // groups)
    normed = ops.reshape(rms_norm(gated, None, eps), vector([0, 0, inner]), special_zero=True)
    scale = w[f"{prefix}.norm.weight"]  # [inner]; a GGUF file's is [groups, inner / groups]
    return w.linear(ops.multiply(normed, weight(scale.reshape(-1))), f"{prefix}.out_proj")


def repeat_kv(x, n_rep: int, num_kv_heads: int, head_dim: int) -> ov.Output:
    """[B, Hkv, S, D] → [B, Hkv·n_rep, S, D], each KV head shared by n_rep query heads.

    Unsqueeze → bidirectional Broadcast → Reshape is the shape the CPU plugin's stateful SDPA
    fusion recognises; anything reading the KV tensors' shapes in between would break it.
    """
    if n_rep == 1:
        return x
    expanded = ops.broadcast(ops.unsqueeze(x, scalar(2)), vector([1, 1, n_rep, 1, 1]), broadcast_spec="BIDIRECTIONAL")
    return ops.reshape(expanded, vector([0, num_kv_heads * n_rep, -1, head_dim]), special_zero=True).output(0)


def split_heads(x, num_heads: int, head_dim: int) -> ov.Output:
    """[B, S, H·D] → [B, S, H, D]"""
    return ops.reshape(x, vector([0, 0, num_heads, head_dim]), special_zero=True).output(0)


def soft_capped_attention(q, k, v, mask, scale: float, cap: float) -> ov.Output:
    """softmax(cap · tanh(q·kᵀ·scale / cap) + mask)·v (Gemma 2): scaled_dot_product_attention has no
    soft cap, so the scores are computed op by op."""
    scores = ops.multiply(ops.matmul(q, k, transpose_a=False, transpose_b=True), scalar(scale, np.float32))
    scores = ops.multiply(ops.tanh(ops.divide(scores, scalar(cap, np.float32))), scalar(cap, np.float32))
    weights = ops.softmax(ops.add(scores, mask), -1)
    return ops.matmul(weights, v, transpose_a=False, transpose_b=False).output(0)


def cached_kv(k, v, layer: int, ctx: Context) -> tuple[ov.Output, ov.Output]:
    """Keys and values [B, Hkv, T, D] of the past and the new tokens, kept as layer `layer`'s state
    under the names GenAI's paged-attention conversion expects."""
    kv_heads, d = (k.get_partial_shape()[i].get_length() for i in (1, 3))
    return (kv_cache(k, f"past_key_values.{layer}.keypresent.{layer}.key", ctx, kv_heads, d),
            kv_cache(v, f"past_key_values.{layer}.valuepresent.{layer}.value", ctx, kv_heads, d))


def attend(q, k, v, mask, scale: float | None = None, softcap: float | None = None, sinks=None) -> ov.Output:
    """Each query head's attention over the keys and values of its KV head: q [B, H, T, D], k and v
    [B, Hkv, S, D] → [B, T, H·D]. `scale` None: 1/√D; `softcap`: soft_capped_attention; `sinks` [H]:
    attention sinks (gpt-oss), one learned logit per head that joins every row's softmax and takes its
    share of the probability but adds no value."""
    heads, d = (q.get_partial_shape()[i].get_length() for i in (1, 3))
    kv_heads = k.get_partial_shape()[1].get_length()
    k, v = repeat_kv(k, heads // kv_heads, kv_heads, d), repeat_kv(v, heads // kv_heads, kv_heads, d)
    if softcap:
        out = soft_capped_attention(q, k, v, mask, scale or d**-0.5, softcap)
    elif sinks is not None:
        # SDPA's sixth input (opset13's Python helper has no parameter for it): a Constant of q's rank,
        # which the CPU plugin requires and GenAI's paged conversion hands to PagedAttention's `sinks`.
        sink = ops.constant(np.asarray(sinks, np.float32).reshape(1, heads, 1, 1))
        out = _OPSET13.create("ScaledDotProductAttention", [q, k, v, mask, scalar(scale or d**-0.5, np.float32), sink],
                              {"causal": False})
    elif scale is None:
        out = ops.scaled_dot_product_attention(q, k, v, mask, causal=False)
    else:
        out = ops.scaled_dot_product_attention(q, k, v, mask, scalar(scale, np.float32), causal=False)
    return ops.reshape(ops.transpose(out, vector([0, 2, 1, 3])), vector([0, 0, heads * d]), special_zero=True).output(0)


def attention(x, w: "LayerWeights", args: ModelArgs, ctx: Context, rope: Rope | None,
              sliding_window: int | None = None, qk_norm: str | None = None, scale: float | None = None,
              output_gate: bool = False, softcap: float | None = None, query_scale=None, sinks: bool = False) -> ov.Output:
    """Multi-head attention with grouped KV heads and a stateful KV cache (Vaswani et al., 2017).

    `rope` None is a NoPE layer (no positional rotation); `qk_norm` "rms" or "rms+1" normalises each
    head of q and k before the rotation (Qwen3, Gemma 3), "rms_across_heads" the whole projections
    (OLMo 2); `scale` replaces 1/√head_dim. `output_gate`: q_proj gives each head's query and then
    as many gate values, and the heads' output is multiplied by σ(gate) (gated attention, Qwen3-Next).
    `softcap`: scores soft-capped (soft_capped_attention); `query_scale` [B, 1, T, 1]: multiplies the
    rotated queries, position by position (Llama 4's attention temperature); `sinks`: the layer's
    `self_attn.sinks` [H] join each head's softmax (attend)."""
    heads, kv_heads, d = args.num_attention_heads, args.num_key_value_heads, args.head_dim
    q, k, v = (w.linear(x, f"self_attn.{name}_proj") for name in ("q", "k", "v"))
    if qk_norm == "rms_across_heads":
        q = rms_norm(q, w["self_attn.q_norm.weight"], args.rms_norm_eps)
        k = rms_norm(k, w["self_attn.k_norm.weight"], args.rms_norm_eps)
    if output_gate:
        q, gate = ops.split(split_heads(q, heads, 2 * d), -1, 2).outputs()
        gate = ops.reshape(gate, vector([0, 0, heads * d]), special_zero=True)
    else:
        q = split_heads(q, heads, d)
    k, v = split_heads(k, kv_heads, d), split_heads(v, kv_heads, d)
    if qk_norm in ("rms", "rms+1"):  # per head, before the heads move to axis 1: Transpose → RoPE stays one fused node
        plus_one = qk_norm == "rms+1"
        q = rms_norm(q, w["self_attn.q_norm.weight"], args.rms_norm_eps, plus_one)
        k = rms_norm(k, w["self_attn.k_norm.weight"], args.rms_norm_eps, plus_one)
    q, k, v = (ops.transpose(t, vector([0, 2, 1, 3])).output(0) for t in (q, k, v))
    if rope is not None:
        cos, sin = ctx.rope(rope)
        q, k = apply_rope(q, cos, sin, rope.rotary_dim, d), apply_rope(k, cos, sin, rope.rotary_dim, d)
    if query_scale is not None:
        q = ops.multiply(q, query_scale).output(0)
    k, v = cached_kv(k, v, w.layer, ctx)
    out = attend(q, k, v, ctx.mask(sliding_window), scale, softcap, w["self_attn.sinks"] if sinks else None)
    if output_gate:
        out = ops.multiply(out, ops.sigmoid(gate))
    return w.linear(out, "self_attn.o_proj")


def gated_mlp(x, w: "LayerWeights", activation: str = "silu") -> ov.Output:
    """down(act(gate(x)) · up(x)): SwiGLU with silu (Shazeer, 2020), GeGLU with tanh-approximated gelu."""
    gate = w.linear(x, "mlp.gate_proj")
    gate = ops.swish(gate) if activation == "silu" else ops.gelu(gate, approximation_mode="tanh")
    return w.linear(ops.multiply(gate, w.linear(x, "mlp.up_proj")), "mlp.down_proj")


def keep(name: str, tensor, role: str):
    """The `compress` hook that leaves every weight as it is stored."""
    return tensor


class LayerWeights:
    """One decoder layer's tensors, taken (removed) from the checkpoint as the graph uses them; each
    projection weight passes through `compress` on its way in."""

    def __init__(self, weights: Weights, layer: int, compress=keep, prefix: str = "model.layers"):
        """`prefix`: where the layers' tensors are, `model.layers` (`mtp.layers`: a multi-token-prediction head's)."""
        self.weights, self.layer, self.compress, self.prefix = weights, layer, compress, prefix

    def key(self, name: str) -> str:
        """The checkpoint's name of the layer's tensor `name`, which also names the nodes made from it."""
        return f"{self.prefix}.{self.layer}.{name}"

    def __getitem__(self, name: str) -> np.ndarray:
        return self.weights.pop(self.key(name))

    def __contains__(self, name: str) -> bool:
        return self.key(name) in self.weights

    def optional(self, name: str) -> np.ndarray | None:
        """The layer's tensor `name` if the checkpoint has it (a bias some families store), else None."""
        return self.weights.pop(self.key(name), None)

    def linear(self, x, name: str) -> ov.Output:
        """The layer's projection `name`, with its bias when the checkpoint has one (qwen2)."""
        bias, key = self.optional(f"{name}.bias"), self.key(f"{name}.weight")
        return linear(x, self.compress(key, self.weights.pop(key), "linear"), bias, name=self.key(name))

    def full_precision_linear(self, x, name: str, node_name: str) -> ov.Output:
        """The layer's projection `name` (and its bias) as the checkpoint stores it, past `compress`: kept for
        the few weights that decide more than they cost (a router's); its MatMul is named `node_name`."""
        return linear(x, self[f"{name}.weight"], self.optional(f"{name}.bias"), name=node_name)

    def experts(self, name: str) -> ov.Output:
        """The layer's stacked expert weights `name` [E, N, K] (convert.experts), compressed as one weight."""
        key = self.key(f"{name}.weight")
        return weight(self.compress(key, self.weights.pop(key), "experts"))


def build_model(arch, args: ModelArgs, weights: Weights, on_layer=lambda done, total: None, compress=keep) -> ov.Model:
    """The whole decoder: the embedding (scaled by args.embed_scale where the architecture says so),
    `arch.decoder_layer` for each layer, the final norm, the output projection (scaled by
    args.logits_scale, soft-capped by args.final_logit_softcapping where the architecture says so).
    Each tensor is taken from `weights` (llama names) as it is used; `on_layer(done, total)` follows
    the progress. Every weight the model multiplies by goes through `compress(name, tensor, role)`,
    role "embedding", "linear" or "lm_head", which returns it or an ov.Output that computes it."""
    input_ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    ctx = Context(input_ids, *_state_inputs([-1, -1]))
    table = compress("model.embed_tokens.weight", weights.pop("model.embed_tokens.weight"), "embedding")
    # A tied lm_head reads the lookup's own constant: the table is stored once (blocks with an
    # offset build their S∘Q twice, which OpenVINO's writer stores once).
    table = table if has_offset(table) else weight(table)
    h = scaled_embedding(table, input_ids, args)
    return _decoder(arch, args, weights, ctx, h, table, on_layer, compress, [input_ids])


def build_multimodal(arch, args: ModelArgs, weights: Weights, on_layer=lambda done, total: None,
                     compress=keep) -> dict[str, ov.Model]:
    """The decoder in the layout GenAI's VLMPipeline loads, by role (file openvino_{role}_model.xml):
    "language", the decoder on `inputs_embeds` [B, T, H] (text and image embeddings merged by GenAI)
    with the inputs the architecture's pipeline sends besides (`arch.multimodal_inputs`, and its
    `POSITION_ROWS` rows of M-RoPE positions), and "text_embeddings", the token ids' scaled embeddings
    in f32; plus the architecture's other embedding models (`arch.embedding_models`)."""
    rows = getattr(arch, "POSITION_ROWS", None)
    inputs_embeds = ops.parameter([-1, -1, args.hidden_size], F32, name="inputs_embeds")
    extra = arch.multimodal_inputs(args) if hasattr(arch, "multimodal_inputs") else {}
    ctx = Context(inputs_embeds, *_state_inputs([rows, -1, -1] if rows else [-1, -1]), inputs=extra)
    ctx.images_both_ways_in_full_attention = getattr(arch, "IMAGES_BOTH_WAYS_IN_FULL_ATTENTION", True)
    table = weights.pop("model.embed_tokens.weight")
    models = {"text_embeddings": text_embeddings_model(table, args, compress)}
    if hasattr(arch, "embedding_models"):
        models.update(arch.embedding_models(args, weights, compress))
    tied = compress("model.embed_tokens.weight", table, "embedding") if args.tie_word_embeddings else None
    del table
    models["language"] = _decoder(arch, args, weights, ctx, inputs_embeds, tied, on_layer, compress,
                                  [inputs_embeds, *extra.values()])
    if getattr(args, "mtp_num_hidden_layers", 0):
        models["mtp"] = build_mtp(arch, args.mtp, weights, compress)
    return models


def build_mtp(arch, args: ModelArgs, weights: Weights, compress=keep) -> ov.Model:
    """A multi-token-prediction head (Qwen3-Next, Qwen3.5) as GenAI's MTP speculative decoding runs it
    (openvino_mtp_model.xml): the main model's final hidden state at position t (`hidden_states`) and the
    embedding of token t + 1 (`inputs_embeds`), each RMS-normed, `mtp.fc` over their concatenation
    [e, h], `arch.decoder_layer` for each of `args`' layers (the head's: `mtp.layers.*`, with their own
    KV cache as state), the head's norm → `last_hidden_state`. No lm_head: GenAI grafts the main model's,
    which it finds as the MatMul that makes the main model's `logits`. Position ids are [B, T], one row:
    GenAI sends the head plain positions, which rotate text tokens as the main model's M-RoPE rows do."""
    def norm(x, name: str):
        return rms_norm(x, weights.pop(f"mtp.{name}.weight"), args.rms_norm_eps, args.norm_plus_one)

    hidden_states = ops.parameter([-1, -1, args.hidden_size], F32, name="hidden_states")
    inputs_embeds = ops.parameter([-1, -1, args.hidden_size], F32, name="inputs_embeds")
    ctx = Context(inputs_embeds, *_state_inputs([-1, -1]))
    x = ops.concat([norm(inputs_embeds, "pre_fc_norm_embedding"), norm(hidden_states, "pre_fc_norm_hidden")], axis=-1)
    x = linear(x, compress("mtp.fc.weight", weights.pop("mtp.fc.weight"), "linear"), name="mtp.fc")
    for i in range(args.num_hidden_layers):
        x = arch.decoder_layer(x, LayerWeights(weights, i, compress, prefix="mtp.layers"), args, ctx)
    params = [hidden_states, inputs_embeds, ctx.attention_mask, ctx.position_ids, ctx.beam_idx.get_node()]
    return named_model({"last_hidden_state": norm(x, "norm")}, params, ctx.sinks, "mtp")


def scaled_embedding(table, ids, args: ModelArgs) -> ov.Output:
    h = embedding(table, ids)
    if args.embed_scale is not None:
        # Named as PyTorch's frontend names it: GenAI's Gemma 4 MTP pipeline finds the token embedding it
        # feeds the drafter by this name (gemma4_mtp_strategy.cpp, create_embedding_model).
        h = ops.multiply(h, scalar(args.embed_scale, np.float32), name="model.embed_tokens/aten::mul/Multiply").output(0)
    return h


def text_embeddings_model(table, args: ModelArgs, compress=keep) -> ov.Model:
    """Token ids `input` [B, T] → `inputs_embeds` [B, T, H] in f32 (GenAI reads them as floats and merges
    the images' in), scaled inside: GenAI multiplies only by MiniCPM's scale_emb."""
    ids = ops.parameter([-1, -1], np.int64, name="input")
    compressed = compress("model.embed_tokens.weight", table, "embedding")
    h = scaled_embedding(compressed if has_offset(compressed) else weight(compressed), ids, args)
    return named_model({"inputs_embeds": h}, [ids], [], "text_embeddings")


def _state_inputs(position_shape: list[int]) -> tuple:
    attention_mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    position_ids = ops.parameter(position_shape, np.int64, name="position_ids")
    beam_idx = ops.parameter([-1], np.int32, name="beam_idx")
    return attention_mask, position_ids, beam_idx


def _decoder(arch, args, weights, ctx: Context, h, table, on_layer, compress, inputs: list) -> ov.Model:
    """From the embedded tokens `h` to the logits: the layers, the final norm and the output projection
    (`table` where it is tied to the embedding)."""
    for i in range(args.num_hidden_layers):
        h = arch.decoder_layer(h, LayerWeights(weights, i, compress), args, ctx)
        on_layer(i + 1, args.num_hidden_layers)
    h = rms_norm(h, weights.pop("model.norm.weight"), args.rms_norm_eps, args.norm_plus_one)

    lm_head = weights.pop("lm_head.weight", None)
    logits = linear(h, table if lm_head is None else compress("lm_head.weight", lm_head, "lm_head"), name="lm_head")
    if args.logits_scale is not None:
        logits = ops.multiply(logits, scalar(args.logits_scale, np.float32)).output(0)
    if args.final_logit_softcapping:
        cap = scalar(args.final_logit_softcapping, np.float32)
        logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap).output(0)
    params = [inputs[0], ctx.attention_mask, ctx.position_ids, *inputs[1:], ctx.beam_idx.get_node()]
    outputs = {"logits": logits}
    if hasattr(arch, "extra_outputs"):  # what a drafter reads from its target (Gemma 4's assistant)
        outputs.update(arch.extra_outputs(args, ctx, h))
    return named_model(outputs, params, ctx.sinks, "decoder")


def named_model(outputs: dict, params: list, sinks: list, model_name: str) -> ov.Model:
    """An ov.Model whose tensors are named as GenAI looks them up: each output by its key in `outputs`,
    each input by its friendly name."""
    for name, out in outputs.items():
        out.get_tensor().set_names({name})
    for param in params:
        param.output(0).get_tensor().set_names({param.get_friendly_name()})
    return ov.Model([ops.result(out) for out in outputs.values()], sinks, params, model_name)
