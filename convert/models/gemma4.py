"""Gemma 4 (text; also the language model inside a multimodal `gemma4` checkpoint: E2B, E4B, 31B).

Against Gemma 3: norms scale by w (not 1 + w), attention is unscaled (q and k are RMS-normalised per
head, v too, without a weight); full-attention layers have their own head size (`global_head_dim`,
or per_layer_config) and a 'proportional' rope; with attention_k_eq_v they have no v_proj and take
the keys' projection, before its norm, as values. The last num_kv_shared_layers layers compute only
queries: they attend with the keys and values of the last earlier layer of their type, and keep no
cache of their own; with use_double_wide_mlp their MLP is twice as wide. Per-layer embeddings (PLE):
a second table gives each token hidden_size_per_layer_input numbers for every layer, mixed with a
projection of the token's embedding; each layer gates its slice by its own output, projects it back,
norms it and adds it. Every layer's output is scaled by its layer_scalar; the logits may be soft-capped.
With enable_moe_block (26B-A4B) every layer has, beside its dense MLP, a mixture of num_experts GeGLU
experts of width moe_intermediate_size, top_k_experts of them per token (see `feed_forward`).
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..experts import router_logits, routed_experts, softmax_top_k, stacked_experts
from ..graph import apply_rope, attend, cached_kv, embedding, gated_mlp, linear, rms_norm, scalar, split_heads, vector
from ..vision.gemma4 import gemma4_vision
from . import base, gemma3, qwen3_moe
from .base import UnsupportedModel, make_rope

# Gemma4TextConfig's defaults, for keys a hub config leaves out.
DEFAULTS = dict(vocab_size=262_144, hidden_size=2304, intermediate_size=9216, num_hidden_layers=30,
                num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
                max_position_embeddings=131_072, sliding_window=512, tie_word_embeddings=True,
                vocab_size_per_layer_input=262_144, hidden_size_per_layer_input=256, global_head_dim=512)
# An image's tokens attend to each other both ways in the sliding-window layers only (transformers'
# create_masks_for_vision_model); full-attention layers stay causal.
IMAGES_BOTH_WAYS_IN_FULL_ATTENTION = False
FULL_ROPE = dict(rope_type="proportional", partial_rotary_factor=0.25, rope_theta=1_000_000.0)
SLIDING_ROPE = dict(rope_type="default", rope_theta=10_000.0)


@dataclass
class ModelArgs(base.ModelArgs):
    hidden_activation: str | None = None
    vocab_size_per_layer_input: int = 262_144
    hidden_size_per_layer_input: int | None = 256
    attention_k_eq_v: bool = False
    num_kv_shared_layers: int = 0
    use_double_wide_mlp: bool = False
    enable_moe_block: bool = False
    num_experts: int | None = None
    top_k_experts: int | None = None
    use_bidirectional_attention: str | None = None
    global_head_dim: int | None = None
    num_global_key_value_heads: int | None = None
    per_layer_config: dict = field(default_factory=dict)
    pad_token_id: int = 0
    # The image, video and audio placeholders of a multimodal checkpoint, whose per-layer rows are pad's.
    placeholder_token_ids: list = field(default_factory=list)
    # Not from config.json: the IR also outputs what Gemma 4's assistant drafter reads (extra_outputs).
    mtp_outputs: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.embed_scale = self.hidden_size**0.5
        if self.enable_moe_block and not (self.num_experts and self.top_k_experts):
            raise UnsupportedModel("gemma4: enable_moe_block without num_experts and top_k_experts")
        if self.use_bidirectional_attention not in (None, "vision"):
            raise UnsupportedModel("gemma4: bidirectional attention is not a chat model's")
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention"
                                for i in range(self.num_hidden_layers)]
        self.layer_types[-1] = "full_attention"  # as transformers forces it
        # per_layer_config ({"05": {"head_dim": 512, …}}, as transformers saves it) or, as Google's configs
        # say it, global_head_dim / num_global_key_value_heads for every full-attention layer.
        self.per_layer_config = {int(k): v for k, v in self.per_layer_config.items()}
        for i, kind in enumerate(self.layer_types):
            if kind == "full_attention" and not self.per_layer_config.get(i) and self.global_head_dim:
                self.per_layer_config[i] = {"head_dim": self.global_head_dim}
                if self.attention_k_eq_v and self.num_global_key_value_heads:
                    self.per_layer_config[i]["num_key_value_heads"] = self.num_global_key_value_heads
        self.first_shared = self.num_hidden_layers - self.num_kv_shared_layers
        self.check_kv_sources()

    def check_kv_sources(self) -> None:
        for kind in set(self.layer_types[self.first_shared:]):
            if kind not in self.layer_types[:self.first_shared]:
                raise UnsupportedModel(f"gemma4: no layer before the shared ones keeps {kind} keys and values")

    check_activation = gemma3.ModelArgs.check_activation

    def layer_head_dim(self, layer: int) -> int:
        return self.per_layer_config.get(layer, {}).get("head_dim", self.head_dim)

    def layer_kv_heads(self, layer: int) -> int:
        return self.per_layer_config.get(layer, {}).get("num_key_value_heads", self.num_key_value_heads)

    def kv_source(self, layer: int):
        """The key under which `layer` finds the keys and values it attends with (Context.shared): its own
        index, or for a shared layer that of the last layer of its type before the shared ones (kv_store)."""
        return layer if layer < self.first_shared else self.kv_store(self.layer_types[layer])

    def kv_store(self, kind: str) -> int:
        """The last layer of `kind` before the shared ones: the shared layers of that kind, and an assistant
        drafter, attend with its keys and values (transformers' kv_sharing_modes "store")."""
        return max(i for i in range(self.first_shared) if self.layer_types[i] == kind)

    def full_head_dim(self) -> int:
        full = [i for i, kind in enumerate(self.layer_types) if kind == "full_attention"]
        return self.layer_head_dim(full[0]) if full else self.head_dim

    @cached_property
    def rope(self) -> base.Rope:
        return make_rope(self.rope_parameters, self.full_head_dim(), self.max_position_embeddings)

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        placeholders = [config[key] for key in ("image_token_id", "video_token_id", "audio_token_id")
                        if config.get(key) is not None]
        config = {**DEFAULTS, "hidden_act": "gelu_pytorch_tanh", **base.text_config(config),
                  "placeholder_token_ids": placeholders}
        return super().from_config({**config, **base.ropes_by_layer_type(config, FULL_ROPE, SLIDING_ROPE)})


def sanitize(weights, args: ModelArgs) -> None:
    """The language model of a multimodal checkpoint, without its vision and audio towers; the key and
    value weights a shared layer does not use (transformers ignores them too) dropped."""
    base.keep_language_model(weights, ("vision_tower.", "audio_tower.", "embed_vision.", "embed_audio."))
    for layer in range(args.first_shared, args.num_hidden_layers):
        for name in ("k_proj.weight", "v_proj.weight", "k_norm.weight"):
            weights.discard(f"model.layers.{layer}.self_attn.{name}")
    if args.enable_moe_block:  # stored stacked as transformers saves them (gate_up_proj [E, 2I, H]), or per expert
        for layer in range(args.num_hidden_layers):
            stacked_experts(weights, f"model.layers.{layer}.experts", args.num_experts, qwen3_moe.EXPERT_NAMES)


def vision_models(config: dict, weights, compress) -> dict:
    return {"vision_embeddings": gemma4_vision(config, weights, compress)}


def multimodal_inputs(args: ModelArgs) -> dict:
    """GenAI sends the per-layer rows (computed by the model of its own, embedding_models) and, where images
    are attended both ways, token_type_ids."""
    inputs = {}
    if args.hidden_size_per_layer_input:
        inputs["per_layer_inputs"] = ops.parameter(
            [-1, -1, args.num_hidden_layers, args.hidden_size_per_layer_input], np.float32, name="per_layer_inputs")
    if args.use_bidirectional_attention == "vision":
        inputs["token_type_ids"] = ops.parameter([-1, -1], np.int64, name="token_type_ids")
    return inputs


def embedding_models(args: ModelArgs, weights, compress) -> dict:
    """The per-layer rows of token ids `input_ids` (GenAI sets it by that name), an image's placeholders
    read as pad, as transformers reads them."""
    if not args.hidden_size_per_layer_input:
        return {}
    ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    text_ids = ids
    for placeholder in args.placeholder_token_ids:
        text_ids = ops.select(ops.equal(text_ids, scalar(placeholder)), scalar(args.pad_token_id), text_ids)
    rows = per_layer_rows(text_ids, weights, args, compress)
    rows.get_tensor().set_names({"per_layer_inputs"})
    ids.output(0).get_tensor().set_names({"input_ids"})
    return {"text_embeddings_per_layer": ov.Model([ops.result(rows)], [ids], "text_embeddings_per_layer")}


def per_layer_rows(ids, weights, args: ModelArgs, compress):
    """The tokens' rows of the per-layer table · √P, [B, T, layers, P]."""
    name = "model.embed_tokens_per_layer"
    rows = embedding(compress(f"{name}.weight", weights.pop(f"{name}.weight"), "embedding"), ids, name)
    by_layer = vector([0, 0, args.num_hidden_layers, args.hidden_size_per_layer_input])
    return ops.multiply(ops.reshape(rows, by_layer, special_zero=True),
                        scalar(args.hidden_size_per_layer_input**0.5, np.float32)).output(0)


def per_layer_inputs(embedded, ctx, weights, args: ModelArgs, compress):
    """Every layer's PLE input [B, T, layers, P]: (norm(projection of the scaled embedding) + the
    token's row of the per-layer table · √P) · 2^-½."""
    layers, width = args.num_hidden_layers, args.hidden_size_per_layer_input
    by_layer = vector([0, 0, layers, width])
    rows = ctx.inputs.get("per_layer_inputs")  # the multimodal layout computes them in a model of their own
    if rows is None:
        rows = per_layer_rows(ctx.tokens, weights, args, compress)
    projection = "model.per_layer_model_projection"
    projected = linear(embedded, compress(f"{projection}.weight", weights.pop(f"{projection}.weight"), "linear"),
                       name=projection)
    projected = ops.multiply(projected, scalar(args.hidden_size**-0.5, np.float32))
    projected = rms_norm(ops.reshape(projected, by_layer, special_zero=True),
                         weights.pop("model.per_layer_projection_norm.weight"), args.rms_norm_eps)
    return ops.multiply(ops.add(projected, rows), scalar(2**-0.5, np.float32)).output(0)


def extra_outputs(args: ModelArgs, ctx, hidden) -> dict:
    """With mtp_outputs, what GenAI's Gemma 4 MTP pipeline hands the assistant drafter (gemma4_mtp_strategy.cpp,
    is_gemma4_mtp_model_pair): the final normed hidden state and, over the whole sequence so far, the keys and
    values of the last full-attention and the last sliding-window layer before the shared ones (kv_store), which
    GenAI crops to the accepted tokens. GenAI finds the token embedding by its name (graph.scaled_embedding)."""
    if not args.mtp_outputs:
        return {}
    outputs = {"mtp_last_hidden_state": hidden}
    for kind in ("full_attention", "sliding_attention"):
        if kind not in args.layer_types[:args.first_shared]:
            raise UnsupportedModel(f"gemma4: a drafter reads the keys and values of a {kind} layer; this model has none")
        k, v = ctx.shared(("kv", args.kv_store(kind)), None)  # built by that layer
        outputs.update({f"mtp_{kind}_key": k, f"mtp_{kind}_value": v})
    return outputs


def attention(x, w, args: ModelArgs, ctx):
    layer, heads = w.layer, args.num_attention_heads
    d, kv_heads = args.layer_head_dim(layer), args.layer_kv_heads(layer)
    rope = args.layer_rope(layer)
    cos, sin = ctx.rope(rope)

    def heads_first(t):
        return ops.transpose(t, vector([0, 2, 1, 3])).output(0)

    def own_keys_and_values():
        k = split_heads(w.linear(x, "self_attn.k_proj"), kv_heads, d)
        v = k  # without a v_proj (attention_k_eq_v): the raw keys
        if "self_attn.v_proj.weight" in w:
            v = split_heads(w.linear(x, "self_attn.v_proj"), kv_heads, d)
        k = apply_rope(heads_first(rms_norm(k, w["self_attn.k_norm.weight"], args.rms_norm_eps)), cos, sin, rope.rotary_dim, d)
        return cached_kv(k, heads_first(rms_norm(v, None, args.rms_norm_eps)), layer, ctx)

    q = rms_norm(split_heads(w.linear(x, "self_attn.q_proj"), heads, d), w["self_attn.q_norm.weight"], args.rms_norm_eps)
    q = apply_rope(heads_first(q), cos, sin, rope.rotary_dim, d)
    # A shared layer's source came earlier and has built its keys and values already.
    k, v = ctx.shared(("kv", args.kv_source(layer)), own_keys_and_values)
    out = attend(q, k, v, ctx.mask(args.window(layer)), scale=1.0)
    return w.linear(out, "self_attn.o_proj")


def feed_forward(h, w, args: ModelArgs, norm):
    """The dense GeGLU MLP of the normed residual stream h; with the mixture of experts beside it, each
    branch normed on its way in and out, their sum."""
    mlp = gated_mlp(norm(h, "pre_feedforward_layernorm"), w, activation="gelu_tanh")
    if not args.enable_moe_block:
        return mlp
    hidden = args.hidden_size

    def route(_experts_input):
        # The router reads the residual stream itself, not the experts' normed input: normed without a
        # weight, scaled by router.scale · hidden^-½; a softmax's top k, renormalised, each weight times
        # its expert's per_expert_scale.
        x2d = rms_norm(ops.reshape(h, vector([-1, hidden]), special_zero=False), None, args.rms_norm_eps)
        scale = np.asarray(w["router.scale"], np.float32) * np.float32(hidden**-0.5)
        logits = router_logits(ops.multiply(x2d, ops.constant(scale)), w, "router.proj")
        return softmax_top_k(logits, args.top_k_experts, expert_scale=w["router.per_expert_scale"])

    experts = routed_experts(norm(h, "pre_feedforward_layernorm_2"), w, "experts", args.num_experts, route,
                             activation="gelu_pytorch_tanh")
    return ops.add(norm(mlp, "post_feedforward_layernorm_1"), norm(experts, "post_feedforward_layernorm_2")).output(0)


def decoder_layer(x, w, args: ModelArgs, ctx):
    def norm(h, name: str):
        return rms_norm(h, w[f"{name}.weight"], args.rms_norm_eps)

    ple = None
    if args.hidden_size_per_layer_input:  # built at layer 0, whose input is the scaled embedding
        ple = ctx.shared("per_layer_inputs", lambda: per_layer_inputs(x, ctx, w.weights, args, w.compress))
    h = ops.add(x, norm(attention(norm(x, "input_layernorm"), w, args, ctx), "post_attention_layernorm"))
    h = ops.add(h, norm(feed_forward(h, w, args, norm), "post_feedforward_layernorm"))
    if ple is not None:
        mine = ops.gather(ple, scalar(w.layer), scalar(2))
        gated = ops.multiply(ops.gelu(w.linear(h, "per_layer_input_gate"), approximation_mode="tanh"), mine)
        h = ops.add(h, norm(w.linear(gated, "per_layer_projection"), "post_per_layer_input_norm"))
    return ops.multiply(h, ops.constant(np.asarray(w["layer_scalar"], np.float32).reshape(-1))).output(0)
