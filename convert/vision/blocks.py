"""The blocks vision transformers share (Dosovitskiy et al., 2020): LayerNorm, bidirectional
multi-head attention, the MLP; every output f32, as GenAI reads them."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import linear, scalar, split_heads, vector


def layer_norm(x, w, b, eps: float) -> ov.Output:
    """(x − mean) / sqrt(var + eps) · w + b over the last axis (Ba et al., 2016), as one MVN the CPU fuses."""
    normed = ops.mvn(x, vector([-1]), normalize_variance=True, eps=eps, eps_mode="inside_sqrt")
    return ops.add(ops.multiply(normed, ops.constant(np.asarray(w, np.float32))), ops.constant(np.asarray(b, np.float32))).output(0)


class TowerWeights:
    """A tower's tensors under `prefix`, taken (removed) from the checkpoint as the graph uses them;
    projections go through `compress`."""

    def __init__(self, weights, prefix: str, compress):
        self.weights, self.prefix, self.compress = weights, prefix, compress

    def __getitem__(self, name: str) -> np.ndarray:
        return self.weights.pop(self.prefix + name)

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self.weights

    def sub(self, prefix: str) -> "TowerWeights":
        return TowerWeights(self.weights, self.prefix + prefix, self.compress)

    def linear(self, x, name: str) -> ov.Output:
        """The projection `name` (its .weight [out, in], and its .bias where the checkpoint has one)."""
        key = f"{self.prefix}{name}.weight"
        bias = self.weights.pop(f"{self.prefix}{name}.bias", None)
        return linear(x, self.compress(key, self.weights.pop(key), "linear"), bias, name=self.prefix + name)


def encoder_attention(q, k, v, heads: int, mask=None) -> ov.Output:
    """Every position attends to every other (`mask`: additive, broadcast to [B, H, T, T]); q, k, v
    [B, T, H·D] → [B, T, H·D]."""
    d = q.get_partial_shape()[2].get_length() // heads
    q, k, v = (ops.transpose(split_heads(t, heads, d), vector([0, 2, 1, 3])) for t in (q, k, v))
    if mask is None:
        out = ops.scaled_dot_product_attention(q, k, v, causal=False)
    else:
        out = ops.scaled_dot_product_attention(q, k, v, mask, causal=False)
    return ops.reshape(ops.transpose(out, vector([0, 2, 1, 3])), vector([0, 0, heads * d]), special_zero=True).output(0)


def activation(x, name: str) -> ov.Output:
    """The MLP's nonlinearity by its transformers name."""
    if name in ("gelu_pytorch_tanh", "gelu_tanh"):
        return ops.gelu(x, approximation_mode="tanh").output(0)
    if name == "gelu":
        return ops.gelu(x, approximation_mode="erf").output(0)
    if name in ("silu", "swish"):
        return ops.swish(x).output(0)
    if name == "quick_gelu":
        return ops.multiply(x, ops.sigmoid(ops.multiply(x, scalar(1.702, np.float32)))).output(0)
    raise ValueError(f"vision activation {name!r} is not supported")
