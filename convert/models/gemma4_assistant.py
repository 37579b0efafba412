"""Gemma 4's assistant drafter (`gemma4_assistant`: google/gemma-4-*-it-assistant), in the IR GenAI's Gemma 4
MTP pipeline drafts with (gemma4_mtp_strategy.cpp, StatefulGemma4MTPLLMPipeline).

A few Gemma 4 decoder layers that keep no keys or values: every layer is a shared one (gemma4.decoder_layer),
attending with the keys and values of its target's last full-attention and last sliding-window layer. Its input
is the target's scaled embedding of the last token beside the target's final hidden state (2·backbone wide),
projected to its own width (pre_projection); after the layers and the final norm, its logits (the tied table,
or, with use_ordered_embeddings, only the tokens of the centroids it ranks highest) and its hidden state
projected back to the target's width (post_projection), which GenAI feeds it for the next draft token. Every
draft token of a round sits at the position after the last accepted token, where a rotation of its query puts it.

Inputs `inputs_embeds` [B, T, 2·backbone], `position_ids` [B, T], `attention_mask` [B, ≥ S] (GenAI's is one
longer than the keys), `full_attention_key` / `_value` and `sliding_attention_key` / `_value` [B, Hkv, S, D]
(the target's mtp_* outputs, cropped); outputs `logits` [B, T, V] (f32: GenAI asserts it) and
`last_hidden_state` [B, T, backbone]. Masks as transformers makes them (create_attention_masks): every key
that is not padding, and in the sliding layers only the last sliding_window + 1 of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..graph import F32, MASKED, Context, LayerWeights, embedding, keep, linear, named_model, rms_norm, scalar, vector
from . import gemma4
from .base import UnsupportedModel

KINDS = ("full_attention", "sliding_attention")
# A drafter: GenAI runs it with its target's tokenizer (and checks nothing of its own), so none is converted.
DRAFTER = True


@dataclass
class ModelArgs(gemma4.ModelArgs):
    backbone_hidden_size: int = 1536
    use_ordered_embeddings: bool = False
    num_centroids: int = 2048
    centroid_intermediate_top_k: int = 32

    def __post_init__(self):
        self.num_kv_shared_layers = self.num_hidden_layers  # as transformers' config forces it
        super().__post_init__()
        if self.hidden_size_per_layer_input or self.enable_moe_block or self.use_double_wide_mlp:
            raise UnsupportedModel("gemma4_assistant: per-layer inputs, experts and double-wide MLPs are a target's")
        if self.use_ordered_embeddings and self.vocab_size % self.num_centroids:
            raise UnsupportedModel("gemma4_assistant: num_centroids does not divide the vocabulary")

    def check_kv_sources(self) -> None:
        """Every key and value comes from the target."""

    def kv_source(self, layer: int) -> str:
        return self.layer_types[layer]

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        """The decoder's settings are under text_config; the pairing ones beside it."""
        outer = {k: v for k, v in config.items() if k not in ("text_config", "model_type")}
        return super().from_config({**config, "text_config": {**config.get("text_config", {}), **outer}})


def sanitize(weights, args: ModelArgs) -> None:
    if not args.use_ordered_embeddings:
        for name in ("masked_embedding.centroids.weight", "masked_embedding.token_ordering"):
            weights.discard(name)


def build_model(arch, args: ModelArgs, weights, on_layer=lambda done, total: None, compress=keep) -> ov.Model:
    """The drafter as GenAI runs it (the module's docstring); `compress` as graph.build_model applies it."""
    inputs_embeds = ops.parameter([-1, -1, 2 * args.backbone_hidden_size], F32, name="inputs_embeds")
    position_ids = ops.parameter([-1, -1], np.int64, name="position_ids")
    attention_mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    kv = {}  # kind → the target's keys and values
    for kind in KINDS:
        layer = args.layer_types.index(kind)
        shape = [-1, args.layer_kv_heads(layer), -1, args.layer_head_dim(layer)]
        kv[kind] = tuple(ops.parameter(shape, F32, name=f"{kind}_{part}") for part in ("key", "value"))
    # What Context builds for a decoder's layers the first time one asks is given here instead: the keys and
    # values each kind of layer attends with, and the masks over them.
    ctx = Context(inputs_embeds, attention_mask, position_ids, None)
    full_keys, sliding_keys = (kv[kind][0].output(0) for kind in KINDS)
    for kind in KINDS:
        ctx.shared(("kv", kind), lambda pair=kv[kind]: tuple(p.output(0) for p in pair))
    ctx.shared(("mask", None), lambda: drafter_mask(inputs_embeds, attention_mask, full_keys))
    ctx.shared(("mask", args.sliding_window), lambda: drafter_mask(inputs_embeds, attention_mask, full_keys,
                                                                   sliding_keys, args.sliding_window))

    projection = compress("pre_projection.weight", weights.pop("pre_projection.weight"), "linear")
    h = linear(inputs_embeds, projection, name="pre_projection")
    for i in range(args.num_hidden_layers):
        h = gemma4.decoder_layer(h, LayerWeights(weights, i, compress), args, ctx)
        on_layer(i + 1, args.num_hidden_layers)
    h = rms_norm(h, weights.pop("model.norm.weight"), args.rms_norm_eps)
    table = compress("model.embed_tokens.weight", weights.pop("model.embed_tokens.weight"),
                     "embedding" if args.use_ordered_embeddings else "lm_head")
    logits = ordered_logits(h, table, weights, args, compress) if args.use_ordered_embeddings else \
        linear(h, table, name="lm_head")
    hidden = linear(h, compress("post_projection.weight", weights.pop("post_projection.weight"), "linear"),
                    name="post_projection")
    params = [inputs_embeds, position_ids, attention_mask, *(p for kind in KINDS for p in kv[kind])]
    return named_model({"logits": logits, "last_hidden_state": hidden}, params, [], "gemma4_assistant")


def drafter_mask(queries, attention_mask, full_keys, keys=None, sliding_window: int | None = None) -> ov.Output:
    """Additive mask [B, 1, T, S] over the S keys given (`keys`, or the full layers' `full_keys`): a key is
    seen where attention_mask, cut to the full layers' keys, is not 0; in a sliding layer (`sliding_window`)
    also only if |q + k − (S − 1)| ≤ sliding_window for query q and key k, transformers' both-ways window
    over keys in reverse order (for the one query GenAI sends: the last sliding_window + 1 keys)."""
    keys = full_keys if keys is None else keys
    full_length = ops.gather(ops.shape_of(full_keys), vector([2]), scalar(0))
    length = ops.gather(ops.shape_of(keys), vector([2]), scalar(0))
    padding = ops.slice(attention_mask, ops.subtract(full_length, length), full_length, vector([1]), vector([1]))
    allowed = ops.unsqueeze(ops.not_equal(padding, scalar(0)), vector([1, 2]))  # [B, 1, 1, S]
    if sliding_window is not None:
        new = ops.gather(ops.shape_of(queries), scalar(1), scalar(0))
        query = ops.unsqueeze(ops.range(scalar(0), new, scalar(1), output_type="i64"), scalar(1))  # [T, 1]
        key = ops.range(scalar(0), ops.squeeze(length, scalar(0)), scalar(1), output_type="i64")  # [S]
        distance = ops.abs(ops.subtract(ops.add(query, key), ops.subtract(length, scalar(1))))
        allowed = ops.logical_and(allowed, ops.less_equal(distance, scalar(sliding_window)))
    return ops.select(allowed, scalar(0.0, np.float32), scalar(MASKED, np.float32)).output(0)


def ordered_logits(h, table, weights, args: ModelArgs, compress) -> ov.Output:
    """transformers' Gemma4AssistantMaskedEmbedder: the centroids' scores pick the top centroid_intermediate_top_k
    of num_centroids clusters of vocab / num_centroids tokens each (token_ordering lists them cluster by
    cluster); only those tokens' logits are computed (their rows of the table · h), every other token gets
    the smallest of them minus 1. GenAI takes the argmax, which is always one of the computed ones."""
    per_centroid = args.vocab_size // args.num_centroids
    centroids = compress("masked_embedding.centroids.weight", weights.pop("masked_embedding.centroids.weight"), "linear")
    scores = linear(h, centroids, name="masked_embedding.centroids")
    top = ops.topk(scores, scalar(args.centroid_intermediate_top_k), -1, "max", "value", ov.Type.i64).output(1)
    ordering = np.asarray(weights.pop("masked_embedding.token_ordering"), np.int64).reshape(args.num_centroids, -1)
    tokens = ops.reshape(ops.gather(ops.constant(ordering), top, scalar(0)),  # [B, T, k · per_centroid]
                         vector([0, 0, args.centroid_intermediate_top_k * per_centroid]), special_zero=True)
    rows = embedding(table, tokens, "masked_embedding.rows")  # [B, T, N, H]
    chosen = ops.squeeze(ops.matmul(ops.unsqueeze(h, scalar(-2)), rows, transpose_a=False, transpose_b=True),
                         scalar(-2))  # [B, T, N]
    floor = ops.subtract(ops.reduce_min(chosen, vector([0, 1, 2]), keep_dims=False), scalar(1.0, np.float32))
    shape = ops.concat([ops.slice(ops.shape_of(tokens), vector([0]), vector([2]), vector([1])),
                        vector([args.vocab_size])], 0)
    logits = ops.scatter_elements_update(ops.broadcast(floor, shape), tokens, chosen, scalar(-1))
    return logits.output(0)
