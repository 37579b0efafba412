"""A mixture of experts (Shazeer et al., 2017): a router scores E expert MLPs for each token and the
token's output is the weighted sum of its top k experts' outputs.

Written in the one form OpenVINO's CPU plugin computes sparsely (its ConvertTiledMoeBlockTo{2,3}GatherMatmuls
make GatherMatmul nodes, which run only the k routed experts per token): the tokens tiled over all E
experts, MatMuls against stacked weights [E, N, K] with transpose_b, the router's top-k weights scattered
into a dense [T, E] table, and a weighted ReduceSum over the experts. Read literally it computes every
expert; the plugin does not. What silently stops the rewrite (../shared/research/moe_mamba.md, verified on
2026.4.1): weights [E, K, N] without transpose_b, a fused gate_up MatMul followed by a Split, a Swish with
a second (beta) input in the three-matrix form.

Expert weights arrive stacked under llama-like names, `{prefix}.gate_proj.weight` [E, I, H],
`{prefix}.up_proj.weight` [E, I, H], `{prefix}.down_proj.weight` [E, H, I] (`stacked_experts` makes them
from a checkpoint's per-expert or fused tensors), and pass through the compress hook with role "experts".
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.utils.node_factory import NodeFactory

from .gguf_source import take_rows
from .graph import INT_MAX, scalar, vector, weight

_OPSET4 = NodeFactory("opset4")


def stack_experts(weights, prefix: str, num_experts: int, names: dict[str, str]) -> None:
    """Per-expert tensors `{prefix}.{e}.{old}.weight` (as Qwen3-MoE, LFM2-MoE checkpoints store them) become one
    stacked tensor `{prefix}.{new}.weight` [E, N, K] per `names` {old: new}, read when taken."""
    for old, new in names.items():
        if f"{prefix}.{new}.weight" in weights:  # stacked in the file already (a GGUF's ffn_*_exps)
            continue
        weights.stack([f"{prefix}.{e}.{old}.weight" for e in range(num_experts)], f"{prefix}.{new}.weight")


def split_fused_gate_up(weights, name: str, prefix: str) -> None:
    """A fused `name` [E, 2I, H] (gate rows, then up rows) as `{prefix}.gate_proj.weight` and `.up_proj.weight`:
    the fused MatMul + Split form is not one the plugin makes sparse."""
    weights.derive(name, {f"{prefix}.gate_proj.weight": lambda gate_up: take_rows(gate_up, 0, gate_up.shape[1] // 2),
                          f"{prefix}.up_proj.weight": lambda gate_up: take_rows(gate_up, gate_up.shape[1] // 2,
                                                                                gate_up.shape[1])})


def stacked_experts(weights, prefix: str, num_experts: int, names: dict[str, str]) -> None:
    """A layer's experts as stacked [E, N, K] tensors under the llama-like names, from either form a
    checkpoint stores them in: one tensor per expert (`stack_experts`, `names` {old: new}), or already
    stacked as transformers 5 holds them, `{prefix}.gate_up_proj` [E, 2I, H] and `{prefix}.down_proj`
    [E, H, I] (Qwen3.5-MoE's hub checkpoints)."""
    if f"{prefix}.gate_up_proj" in weights:
        split_fused_gate_up(weights, f"{prefix}.gate_up_proj", prefix)
        weights.transform(f"{prefix}.down_proj", f"{prefix}.down_proj.weight", lambda down: down)
    else:
        stack_experts(weights, prefix, num_experts, names)


def silu(x) -> ov.Output:
    """x·σ(x) as a one-input Swish: openvino's Python swish() always adds beta, which keeps the block dense."""
    return _OPSET4.create("Swish", [x]).output(0)


ACTIVATIONS = {"silu": silu, "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximation_mode="tanh").output(0),
               "gelu": lambda x: ops.gelu(x, approximation_mode="erf").output(0)}


# Routers: router logits [T, E] → (indices [T, k] straight from the TopK, weights [T, k]).

def softmax_top_k(logits, k: int, normalize: bool = True, expert_scale=None):
    """Softmax over all experts, the k most probable, renormalised to sum 1 where `normalize` (Qwen3-MoE,
    Qwen3.5-MoE, Gemma 4); `expert_scale` [E]: each chosen weight times its expert's scale (Gemma 4)."""
    probs = ops.softmax(logits, -1)
    top = ops.topk(probs, scalar(k), axis=-1, mode="max", sort="value", index_element_type=ov.Type.i64)
    weights = top.output(0)
    if normalize:
        weights = ops.divide(weights, ops.reduce_sum(weights, vector([-1]), keep_dims=True))
    if expert_scale is not None:
        weights = ops.multiply(weights, ops.gather(weight(expert_scale), top.output(1), scalar(0)))
    return top.output(1), _output(weights)


def top_k_softmax(logits, k: int):
    """The k largest logits, then a softmax over those k only (gpt-oss, Granite)."""
    top = ops.topk(logits, scalar(k), axis=-1, mode="max", sort="value", index_element_type=ov.Type.i64)
    return top.output(1), ops.softmax(top.output(0), -1).output(0)


def sigmoid_top_k(logits, k: int, bias=None, normalize: bool = True, scale: float = 1.0):
    """σ(logits) per expert; the k experts chosen by σ + `bias` (the load-balancing bias, DeepSeek-V3 style),
    weighted by σ alone, renormalised where `normalize` (over their sum + 1e-6, as Lfm2MoeTopKRouter),
    times `scale` (LFM2-MoE's routed_scaling_factor)."""
    scores = ops.sigmoid(logits)
    choice = scores if bias is None else ops.add(scores, weight(np.asarray(bias, np.float32)))
    top = ops.topk(choice, scalar(k), axis=-1, mode="max", sort="value", index_element_type=ov.Type.i64)
    weights = ops.gather_elements(scores, top.output(1), -1)
    if normalize:
        weights = ops.divide(weights, ops.add(ops.reduce_sum(weights, vector([-1]), keep_dims=True),
                                              scalar(1e-6, np.float32)))
    if scale != 1.0:
        weights = ops.multiply(weights, scalar(scale, np.float32))
    return top.output(1), _output(weights)


def router_logits(x2d, w, name: str) -> ov.Output:
    """The router's linear layer `name`, kept in full precision as llama.cpp keeps it (a few thousand weights
    that decide which experts run); its MatMul is named `….router_logits`."""
    return w.full_precision_linear(x2d, name, f"{w.key(name)}.router_logits")


def routed_experts(x, w, prefix: str, num_experts: int, route, activation: str = "silu") -> ov.Output:
    """Σ over the top-k experts e of weight_e · down_e(act(gate_e(x)) · up_e(x)), x [B, T, H] → [B, T, H].

    `route(x2d)` gives the token's expert indices and weights [T, k] (softmax_top_k & co. on router_logits)."""
    x2d, tiled = _tokens_tiled(x, num_experts)
    indices, top_weights = route(x2d)
    project = lambda h, name: _project(h, w, f"{prefix}.{name}")
    h = ops.multiply(ACTIVATIONS[activation](project(tiled, "gate_proj")), project(tiled, "up_proj"))
    return _weighted_sum(project(h, "down_proj"), x2d, indices, top_weights, num_experts, x)


def clamped_swiglu_experts(x, w, prefix: str, num_experts: int, route, alpha: float, limit: float) -> ov.Output:
    """gpt-oss's experts: biased projections and a clamped SwiGLU, (clamp(up, ±limit) + 1) · g·σ(alpha·g) with
    g = min(gate, limit), in the plugin's two-matrix form: one `gate_up_proj` weight [E, 2I, H] whose even rows
    are the gate's and odd rows the up projection's (as gpt-oss interleaves them), its bias [E, 2I] added
    before the two strided slices, then `down_proj` [E, H, I] and its bias [E, H]. The plugin's match asks
    for constant biases, a two-input Swish (the beta), Minimum on the gate and Clamp on the up branch. Biases
    that are all zero (±0.0 alike) are simplified away when the model compiles, and the block then runs
    densely over all E experts (checked on 2026.4.1; trained gpt-oss biases are not zero)."""
    x2d, tiled = _tokens_tiled(x, num_experts)
    indices, top_weights = route(x2d)

    def project(h, name: str):
        bias = np.asarray(w[f"{prefix}.{name}.bias"], np.float32)
        return ops.add(_project(h, w, f"{prefix}.{name}"), ops.constant(bias[:, None, :]))

    gate_up = project(tiled, "gate_up_proj")
    gate, up = (ops.slice(gate_up, vector([start]), vector([INT_MAX]), vector([2]), vector([2])) for start in (0, 1))
    up = ops.add(ops.clamp(up, -limit, limit), scalar(1.0, np.float32))
    gate = ops.swish(ops.minimum(gate, scalar(limit, np.float32)), scalar(alpha, np.float32))
    return _weighted_sum(project(ops.multiply(up, gate), "down_proj"), x2d, indices, top_weights, num_experts, x)


def _tokens_tiled(x, num_experts: int):
    """x [B, T, H] as tokens [T', H] (a Reshape, which the two-matrix match needs as the Tile's input) and
    those tokens once per expert, [E, T', H]."""
    hidden = x.get_partial_shape()[2].get_length()
    x2d = ops.reshape(x, vector([-1, hidden]), special_zero=False)
    tiled = ops.reshape(ops.tile(x2d, vector([num_experts, 1])), vector([num_experts, -1, hidden]), special_zero=False)
    return x2d.output(0), tiled.output(0)


def _project(h, w, name: str) -> ov.Output:
    """h [E, T, K] by each expert's weight `name` [E, N, K] (transpose_b: the only layout the plugin makes sparse)."""
    return ops.matmul(h, w.experts(name), transpose_a=False, transpose_b=True, name=w.key(name)).output(0)


def _weighted_sum(per_expert, x2d, indices, top_weights, num_experts: int, x) -> ov.Output:
    """Σ_e dense[t, e] · per_expert[e, t], dense the top-k weights scattered into [T, E] (zero elsewhere)."""
    tokens = ops.gather(ops.shape_of(x2d), vector([0]), scalar(0))
    zeros = ops.broadcast(scalar(0.0, np.float32), ops.concat([tokens, vector([num_experts])], 0))
    dense = ops.scatter_elements_update(zeros, indices, top_weights, scalar(1))
    hidden = x.get_partial_shape()[2].get_length()
    per_expert = ops.reshape(per_expert, vector([num_experts, -1, hidden]), special_zero=False)
    routing = ops.reshape(ops.transpose(dense, vector([1, 0])), vector([num_experts, -1]), special_zero=False)
    routing = ops.unsqueeze(routing, vector([-1]))  # [E, T, 1]
    out = ops.reduce_sum(ops.multiply(per_expert, routing), vector([0]), keep_dims=False)  # [T, H]
    return ops.reshape(out, ops.shape_of(x), special_zero=False).output(0)


def shared_expert(x, w, prefix: str, gate: str | None = None) -> ov.Output:
    """A dense SwiGLU MLP every token goes through beside the routed ones; `gate`: scaled by σ(gate(x))
    (Qwen3.5-MoE's shared_expert_gate)."""
    h = ops.multiply(ops.swish(w.linear(x, f"{prefix}.gate_proj")), w.linear(x, f"{prefix}.up_proj"))
    out = w.linear(h, f"{prefix}.down_proj")
    if gate is not None:
        out = ops.multiply(out, ops.sigmoid(w.full_precision_linear(x, gate, w.key(gate))))
    return _output(out)


def _output(value) -> ov.Output:
    return value.output(0) if isinstance(value, ov.Node) else value
