"""Tiny random-weight checkpoints of every supported architecture, made with transformers + torch
(the reference the converter is checked against), and the variants each must handle."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
import transformers

from templates import family_template

SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    initializer_range=0.2,  # peaky logits, so greedy decoding is not decided by rounding
)

LONGROPE_SWITCH = "phi3-longrope-switch-mid-generation"


def longrope(original_max_position_embeddings: int) -> dict:
    """Phi-3 128k-style config: distinct short and long factors per frequency (head_dim 16 → 8)."""
    return dict(
        max_position_embeddings=256,
        original_max_position_embeddings=original_max_position_embeddings,
        rope_parameters=dict(rope_type="longrope", rope_theta=10000.0,
                             short_factor=[1.0 + i / 8 for i in range(8)], long_factor=[1.0 + i for i in range(8)]),
    )


QWEN3_5 = dict(head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
               linear_value_head_dim=8, linear_conv_kernel_dim=4)

GRANITE_H = dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, shared_intermediate_size=48,
                 mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_d_conv=4, embedding_multiplier=12.0,
                 residual_multiplier=0.22, attention_multiplier=0.0625, logits_scaling=4.0)
QWEN3_MOE = dict(head_dim=16, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
QWEN3_5_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
LFM2_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
GEMMA4 = dict(head_dim=16, global_head_dim=32, sliding_window=12, hidden_size_per_layer_input=8)
GEMMA4_MOE = dict(GEMMA4, enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=32,
                  hidden_size_per_layer_input=0, attention_k_eq_v=True, num_global_key_value_heads=1)
# gpt-oss's YaRN stretches 4096 positions 32 times.
GPT_OSS = dict(head_dim=16, num_local_experts=8, num_experts_per_tok=2, intermediate_size=32, max_position_embeddings=131072)
MINISTRAL3_ROPE = dict(rope_type="yarn", rope_theta=1_000_000.0, factor=4.0, original_max_position_embeddings=16,
                      beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0, llama_4_scaling_beta=0.5)

# name → (config class, config overrides, safetensors dtype, write config.json as transformers 4.x did)
VARIANTS = {
    "llama": ("LlamaConfig", dict(tie_word_embeddings=True), torch.float32, False),
    # Wide enough for GGUF K-quants (super-blocks of 256 weights per row).
    "llama-256": ("LlamaConfig", dict(hidden_size=256, intermediate_size=512), torch.float32, False),
    "llama-bf16-llama3-rope": (
        "LlamaConfig",
        dict(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=64)),
        torch.bfloat16,
        False,
    ),
    "llama-linear-rope-v4-config": (
        "LlamaConfig",
        dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0)),
        torch.float32,
        True,
    ),
    "mistral-head-dim-sliding-window": (
        "MistralConfig", dict(head_dim=32, sliding_window=12), torch.bfloat16, False,
    ),
    "qwen2-bias-fp16-sharded": ("Qwen2Config", dict(tie_word_embeddings=True), torch.float16, False),
    "phi3": ("Phi3Config", dict(num_key_value_heads=4), torch.bfloat16, False),
    "phi3-longrope-v4-config": ("Phi3Config", longrope(original_max_position_embeddings=16), torch.float32, True),
    # Longrope switches to the long factors when the sequence outgrows 40 positions: the first test
    # prompt (37 tokens) crosses that while decoding.
    LONGROPE_SWITCH: ("Phi3Config", longrope(original_max_position_embeddings=40), torch.bfloat16, False),
    "qwen3-head-dim-tied": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=True), torch.bfloat16, False),
    "qwen3-fp32": ("Qwen3Config", dict(head_dim=16), torch.float32, False),
    # Layer 2 of 2 has no rotary embedding.
    "smollm3-nope": ("SmolLM3Config", dict(no_rope_layer_interval=2, tie_word_embeddings=True), torch.bfloat16, False),
    "smollm3-fp32": ("SmolLM3Config", dict(no_rope_layers=[0, 1]), torch.float32, False),  # NoPE first, untied
    # A sliding layer (window 12, shorter than every test prompt, local rope) and a full one (linearly
    # scaled global rope); query_pre_attn_scalar ≠ head_dim; final logits soft-capped.
    "gemma3-text": ("Gemma3TextConfig", dict(
        head_dim=32, sliding_window=12, layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=24,
        final_logit_softcapping=30.0, rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}), torch.bfloat16, False),
    "gemma3-text-fp32": ("Gemma3TextConfig", dict(
        head_dim=16, sliding_window=8, layer_types=["full_attention", "sliding_attention"]), torch.float32, False),
    # Gemma 3 as llama.cpp runs it: every 6th layer full, query_pre_attn_scalar = head_dim.
    "gemma3-text-6-layers": ("Gemma3TextConfig", dict(
        num_hidden_layers=6, head_dim=16, sliding_window=8, query_pre_attn_scalar=16, rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}), torch.bfloat16, False),
    # The language model of a multimodal checkpoint: config under text_config, weights under
    # model.language_model, a vision tower beside it.
    "gemma3-multimodal": ("Gemma3Config", dict(
        head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]), torch.bfloat16, False),
    # Scalar multipliers on the embedding, the residual branches, the attention scores and the logits.
    "granite": ("GraniteConfig", dict(embedding_multiplier=4.0, residual_multiplier=0.5, attention_multiplier=0.2,
                                      logits_scaling=2.0, tie_word_embeddings=True), torch.bfloat16, False),
    "granite-fp32": ("GraniteConfig", dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0078125,
                                           logits_scaling=8.0), torch.float32, False),  # Granite 3.x-like values
    "olmo2": ("Olmo2Config", {}, torch.bfloat16, False),
    "olmo2-fp32": ("Olmo2Config", dict(tie_word_embeddings=True), torch.float32, False),
    # A sliding layer with rope, then a full NoPE one.
    "exaone4-sliding-nope": ("Exaone4Config", dict(sliding_window=12, layer_types=["sliding_attention", "full_attention"],
                                                   head_dim=16), torch.bfloat16, False),
    "exaone4-fp32": ("Exaone4Config", dict(sliding_window=None, layer_types=["full_attention"] * 2, tie_word_embeddings=True), torch.float32, False),
    "ministral": ("MinistralConfig", dict(head_dim=16, sliding_window=12, layer_types=["full_attention", "sliding_attention"]),
                  torch.bfloat16, False),
    "ministral-fp32": ("MinistralConfig", dict(head_dim=32, sliding_window=8, layer_types=["sliding_attention"] * 2),
                       torch.float32, False),
    # Hybrids. Qwen3.5: a Gated DeltaNet layer (2 key heads shared by 4 value heads) and a gated
    # full-attention layer rotating a quarter of each head; (1 + w) norms.
    "qwen3_5-text": ("Qwen3_5TextConfig", dict(QWEN3_5, layer_types=["linear_attention", "full_attention"]),
                     torch.bfloat16, False),
    "qwen3_5-fp32-tied": ("Qwen3_5TextConfig", dict(QWEN3_5, num_hidden_layers=4, tie_word_embeddings=True,
                                                    linear_num_key_heads=4),  # 3 DeltaNet layers, then attention
                          torch.float32, False),
    # What Qwen ships: the language model of a vision-language checkpoint (model.language_model.*).
    "qwen3_5-multimodal": ("Qwen3_5Config", dict(QWEN3_5, layer_types=["full_attention", "linear_attention"]),
                           torch.bfloat16, False),
    # 256 wide, for GGUF K-quants (super-blocks of 256 weights per row): 4 value heads of 64.
    "qwen3_5-256": ("Qwen3_5TextConfig", dict(QWEN3_5, hidden_size=256, intermediate_size=512, linear_value_head_dim=64,
                                              layer_types=["linear_attention", "full_attention"]), torch.float32, False),
    "lfm2-256": ("Lfm2Config", dict(hidden_size=256, intermediate_size=768, layer_types=["conv", "full_attention"]),
                 torch.float32, False),
    # LFM2: a short-convolution layer, then attention; the MLP's width by Liquid's rule (192 → 128).
    "lfm2": ("Lfm2Config", dict(intermediate_size=192, block_multiple_of=32, layer_types=["conv", "full_attention"]),
             torch.bfloat16, False),
    "lfm2-fp32-attn-idxs": ("Lfm2Config", dict(num_hidden_layers=3, full_attn_idxs=[1], tie_word_embeddings=False,
                                               block_auto_adjust_ff_dim=False), torch.float32, False),
    # Gemma 2: a sliding layer and a full one sharing one rope, scores soft-capped at Gemma 2's 50 and,
    # in the fp32 variant, at 2 (which changes every score the test sees), logits at 30. Scores scaled by
    # 1/√head_dim as in Gemma 2 2B and 9B (what a GGUF file implies), or by 256^-½ ≠ 1/√32 (fp32).
    "gemma2": ("Gemma2Config", dict(head_dim=16, sliding_window=12, query_pre_attn_scalar=16), torch.bfloat16, False),
    "gemma2-fp32-softcap": ("Gemma2Config", dict(head_dim=32, sliding_window=8, attn_logit_softcapping=2.0,
                                                 final_logit_softcapping=5.0, layer_types=["full_attention",
                                                                                           "sliding_attention"]),
                            torch.float32, False),
    # OLMo 3: a sliding layer with the default rope, then a full one with YaRN.
    "olmo3": ("Olmo3Config", dict(sliding_window=12, rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 500_000.0},
        "full_attention": {"rope_type": "yarn", "rope_theta": 500_000.0, "factor": 4.0,
                           "original_max_position_embeddings": 64}}), torch.bfloat16, False),
    "olmo3-fp32": ("Olmo3Config", dict(num_hidden_layers=4, sliding_window=8, tie_word_embeddings=True), torch.float32, False),
    # GLM: biases, fused gate_up_proj, rope on interleaved pairs of half of each head.
    "glm4-bias": ("Glm4Config", dict(head_dim=16), torch.bfloat16, False),
    "glm-bias-fp32": ("GlmConfig", dict(head_dim=32, partial_rotary_factor=0.75), torch.float32, False),
    # Granite 4.0 dense: Granite's multipliers, a fused shared MLP; rope, or NoPE.
    "granitemoehybrid": ("GraniteMoeHybridConfig", dict(
        layer_types=["attention"] * 2, num_local_experts=0, shared_intermediate_size=96, position_embedding_type="rope",
        embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0625, logits_scaling=4.0,
        tie_word_embeddings=True), torch.bfloat16, False),
    "granitemoehybrid-nope-fp32": ("GraniteMoeHybridConfig", dict(
        layer_types=["attention"] * 2, num_local_experts=0, shared_intermediate_size=96, position_embedding_type=None,
        embedding_multiplier=4.0, residual_multiplier=0.5, attention_multiplier=0.25, logits_scaling=2.0),
        torch.float32, False),
    # Ministral 3: YaRN, and Llama 4's attention temperature from position 16 on (inside every test prompt).
    "ministral3": ("Ministral3Config", dict(head_dim=16, rope_parameters=MINISTRAL3_ROPE), torch.bfloat16, False),
    "mistral3-multimodal": ("Mistral3Config", dict(head_dim=16, rope_parameters=MINISTRAL3_ROPE), torch.bfloat16, False),
    # Gemma 4: per-layer embeddings; sliding layers of head size 16, full ones of 32 with proportional rope;
    # the last two layers (one of each kind) share the keys and values of layers 1 and 2 and have
    # double-wide MLPs; logits soft-capped.
    "gemma4-text": ("Gemma4TextConfig", dict(GEMMA4, num_hidden_layers=5, num_kv_shared_layers=2, use_double_wide_mlp=True,
                                             layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                                          "sliding_attention", "full_attention"],
                                             final_logit_softcapping=30.0), torch.bfloat16, False),
    # What Google ships: the language model of a multimodal checkpoint; full layers with keys as values
    # (attention_k_eq_v) and one KV head; no per-layer embeddings.
    "gemma4-multimodal-k-eq-v": ("Gemma4Config", dict(GEMMA4, num_hidden_layers=3, attention_k_eq_v=True,
                                                      num_global_key_value_heads=1, hidden_size_per_layer_input=0,
                                                      layer_types=["sliding_attention", "full_attention",
                                                                   "full_attention"]), torch.float32, False),
    # Mixtures of experts. Qwen3-MoE: 8 experts of width 32, 2 per token, renormalised; the second layer
    # dense (mlp_only_layers).
    "qwen3_moe": ("Qwen3MoeConfig", dict(QWEN3_MOE, norm_topk_prob=True, mlp_only_layers=[1]), torch.bfloat16, False),
    "qwen3_moe-fp32": ("Qwen3MoeConfig", dict(QWEN3_MOE, tie_word_embeddings=True), torch.float32, False),
    # Qwen3.5-MoE: Qwen3.5's hybrid with every MLP a mixture of 8 experts of width 32, 2 per token, beside a
    # shared expert scaled by its sigmoid gate; a DeltaNet layer and an attention layer each.
    "qwen3_5_moe-text": ("Qwen3_5MoeTextConfig", dict(QWEN3_5, **QWEN3_5_MOE, layer_types=["linear_attention",
                                                                                       "full_attention"]),
                         torch.bfloat16, False),
    # What Qwen ships: the language model of a vision-language checkpoint, its experts stored fused
    # (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I]).
    "qwen3_5_moe-multimodal-fused-experts": ("Qwen3_5MoeConfig", dict(QWEN3_5, **QWEN3_5_MOE, layer_types=[
        "full_attention", "linear_attention"]), torch.float32, False),
    # LFM2-MoE: a dense convolution layer, then an attention layer and a convolution layer with 8 experts of
    # width 32, 2 per token by sigmoid scores, chosen with a (random) expert bias.
    "lfm2_moe-expert-bias": ("Lfm2MoeConfig", dict(LFM2_MOE, num_hidden_layers=3, num_dense_layers=1,
                                                   layer_types=["conv", "full_attention", "conv"]), torch.bfloat16, False),
    # A dense attention layer, then a convolution layer with experts: no expert bias, weights not
    # renormalised but scaled.
    "lfm2_moe-fp32": ("Lfm2MoeConfig", dict(LFM2_MOE, num_dense_layers=1, layer_types=["full_attention", "conv"],
                                            use_expert_bias=False, norm_topk_prob=False, routed_scaling_factor=2.5,
                                            tie_word_embeddings=False), torch.float32, False),
    # Gemma 4 26B-A4B-like: in every layer a dense MLP and beside it 8 experts of width 32, 2 per token; no per-layer
    # embeddings (the 26B has none), full layers with keys as values; logits soft-capped.
    "gemma4-moe": ("Gemma4TextConfig", dict(GEMMA4_MOE, layer_types=["sliding_attention", "full_attention"],
                                            final_logit_softcapping=30.0), torch.bfloat16, False),
    # As Google ships it, the language model of a multimodal checkpoint; 3 experts per token, and with per-layer
    # embeddings too.
    "gemma4-moe-multimodal": ("Gemma4Config", dict(GEMMA4_MOE, num_hidden_layers=3, top_k_experts=3,
                                                   hidden_size_per_layer_input=8,
                                                   layer_types=["sliding_attention", "sliding_attention",
                                                                "full_attention"]), torch.float32, False),
    # gpt-oss: 8 biased clamped-SwiGLU experts of width 32, 2 per token; attention sinks; a sliding layer (window
    # 12, shorter than every test prompt), then a full one; gpt-oss's own YaRN (truncate: false). The fp32 one
    # tied, with a clamp at 1 that most gate and up values reach, another alpha, window and YaRN; the MXFP4 one
    # stores its experts as OpenAI ships them (mxfp4_experts), transformers dequantizing them as the reference.
    "gpt_oss": ("GptOssConfig", dict(GPT_OSS, sliding_window=12), torch.bfloat16, False),
    "gpt_oss-fp32-tied": ("GptOssConfig", dict(
        GPT_OSS, sliding_window=8, layer_types=["full_attention", "sliding_attention"], tie_word_embeddings=True,
        swiglu_limit=1.0, swiglu_alpha=2.5, max_position_embeddings=512,
        rope_parameters=dict(rope_type="yarn", rope_theta=10_000.0, factor=8.0, original_max_position_embeddings=64)),
        torch.float32, False),
    "gpt_oss-mxfp4": ("GptOssConfig", dict(GPT_OSS, sliding_window=12), torch.bfloat16, False),
    # Granite 4.0-H: Mamba-2 layers (8 heads of 16 = 2 × hidden, states of 16) beside attention, Granite's
    # multipliers, a shared MLP and, with experts, 4 experts of width 32, 2 per token. D and dt_bias are drawn
    # at random ("mamba" in the name). A Mamba layer then NoPE attention, with experts:
    "granitemoehybrid-mamba-moe": ("GraniteMoeHybridConfig", dict(GRANITE_H, layer_types=["mamba", "attention"]),
                                   torch.bfloat16, False),
    # Like Granite 4.0-H Micro: no experts; two Mamba layers first, their B and C in 2 groups, and transformers'
    # reference scanning in chunks of 8 tokens (every prompt crosses several).
    "granitemoehybrid-mamba-fp32": ("GraniteMoeHybridConfig", dict(
        GRANITE_H, num_hidden_layers=3, layer_types=["mamba", "mamba", "attention"], num_local_experts=0,
        mamba_n_groups=2, mamba_chunk_size=8), torch.float32, False),
    # Rope attention first, then Mamba with biased projections; experts.
    "granitemoehybrid-mamba-rope-bias": ("GraniteMoeHybridConfig", dict(
        GRANITE_H, layer_types=["attention", "mamba"], position_embedding_type="rope", mamba_proj_bias=True,
        attention_bias=True, tie_word_embeddings=True), torch.bfloat16, False),
    # GGUF imports of mixtures. Qwen3-MoE as llama.cpp runs it (experts in every layer, renormalised), 256 wide
    # for K-quants (super-blocks of 256 weights per row of every expert projection).
    "qwen3_moe-256": ("Qwen3MoeConfig", dict(QWEN3_MOE, hidden_size=256, moe_intermediate_size=256, norm_topk_prob=True),
                      torch.float32, False),
}
# Mixture-of-experts variants → (layers with experts, GatherMatmul nodes per such layer: gate, up, down; gpt-oss's
# fused gate_up and down): what the CPU plugin must compute sparsely (tests/test_experts.py).
EXPERT_LAYERS = {"qwen3_moe": (1, 3), "qwen3_moe-fp32": (2, 3), "qwen3_5_moe-text": (2, 3),
                 "qwen3_5_moe-multimodal-fused-experts": (2, 3), "lfm2_moe-expert-bias": (2, 3), "lfm2_moe-fp32": (1, 3),
                 "gemma4-moe": (2, 3), "gemma4-moe-multimodal": (3, 3),
                 "gpt_oss": (2, 2), "gpt_oss-fp32-tied": (2, 2), "gpt_oss-mxfp4": (2, 2),
                 "granitemoehybrid-mamba-moe": (2, 3), "granitemoehybrid-mamba-rope-bias": (2, 3),
                 "qwen3_moe-256": (2, 3)}
TINY_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                   patch_size=14)
TINY_PIXTRAL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
                    image_size=28, patch_size=14)
TINY_QWEN3_5_VISION = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64, patch_size=14)


def auto_model_class(model_type: str):
    """The transformers auto class that builds a whole checkpoint of `model_type` (Mistral 3's has no
    causal-LM class: it ships as an image-text-to-text model)."""
    return transformers.AutoModelForImageTextToText if model_type == "mistral3" else transformers.AutoModelForCausalLM


def to_v4_config(config_file: Path) -> None:
    """Rewrite a transformers-5 config.json in the 4.x form (rope_theta + rope_scaling with `type`)."""
    config = json.loads(config_file.read_text())
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    rope.pop("partial_rotary_factor", None)
    rope_type = rope.pop("rope_type")
    config["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
    config_file.write_text(json.dumps(config, indent=2))


def randomize_moe_scales(model) -> None:
    """A Gemma 4 mixture's norm weights and router scales random about one in the language model: transformers
    initialises them to one, which would not tell which norm or scale feeds what."""
    if not getattr(getattr(model.config, "text_config", model.config), "enable_moe_block", False):
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".layers." in name and "vision" not in name and param.dim() == 1 and ("norm" in name or ".router." in name):
                param.normal_(1.0, 0.2)


def fuse_experts(file: Path) -> None:
    """Per-expert `….experts.{e}.{gate,up,down}_proj.weight` (as transformers saves them) rewritten as the
    stacked `….experts.gate_up_proj` [E, 2I, H] (gate rows, then up rows) and `….experts.down_proj` [E, H, I]
    Qwen3.5-MoE's hub checkpoints store."""
    tensors = safetensors.torch.load_file(file)
    fused = {}
    for name in sorted(tensors):
        prefix, dot, rest = name.partition(".experts.")
        if not dot:
            fused[name] = tensors[name]
        elif rest.startswith("0.gate_proj."):
            count = sum(1 for n in tensors if n.startswith(f"{prefix}.experts.") and n.endswith(".gate_proj.weight"))
            expert = [f"{prefix}.experts.{e}" for e in range(count)]
            fused[f"{prefix}.experts.gate_up_proj"] = torch.stack([torch.cat(
                [tensors[f"{e}.gate_proj.weight"], tensors[f"{e}.up_proj.weight"]]) for e in expert])
            fused[f"{prefix}.experts.down_proj"] = torch.stack([tensors[f"{e}.down_proj.weight"] for e in expert])
    safetensors.torch.save_file(fused, file, metadata={"format": "pt"})


def make_checkpoint(name: str, out: Path, tokenizer) -> Path:
    """The tiny checkpoint `name` in `out`, with SmolLM2's tokenizer and its family's chat template."""
    config_class, overrides, dtype, v4_config = VARIANTS[name]
    text = {**SMALL, **overrides, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if config_class.startswith("Gemma4"):  # the per-layer embedding's table has a row per token too
        text["vocab_size_per_layer_input"] = len(tokenizer)
    if config_class in ("Qwen3_5Config", "Qwen3_5MoeConfig"):
        config = getattr(transformers, config_class)(text_config=text, vision_config=TINY_QWEN3_5_VISION)
    elif config_class == "Gemma3Config":
        config = transformers.Gemma3Config(text_config=text, vision_config=TINY_VISION, mm_tokens_per_image=4,
                                           image_token_index=len(tokenizer) - 1)
    elif config_class == "Gemma4Config":
        config = transformers.Gemma4Config(text_config=text, vision_config=None, audio_config=None)
    elif config_class == "Mistral3Config":
        config = transformers.Mistral3Config(text_config=transformers.Ministral3Config(**text), vision_config=TINY_PIXTRAL,
                                             image_token_index=len(tokenizer) - 1)
    else:
        config = getattr(transformers, config_class)(**text)
    torch.manual_seed(sum(map(ord, name)))
    model = auto_model_class(config.model_type).from_config(config, dtype=dtype)
    if "bias" in name or config.model_type == "gpt_oss":
        with torch.no_grad():  # transformers initialises biases to zero, which would test nothing
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias.normal_(0, 0.2)
            for parameter_name, parameter in model.named_parameters():
                if parameter_name.endswith("_proj_bias"):  # gpt-oss's experts' [E, N] biases
                    parameter.normal_(0, 0.2)
                elif parameter_name.endswith("self_attn.sinks"):  # large enough to change the greedy tokens
                    parameter.normal_(0, 2.0)
            for buffer_name, buffer in model.named_buffers():
                if buffer_name.endswith("expert_bias"):  # of the order of the sigmoid scores it is added to
                    buffer.normal_(0, 0.5)
    randomize_moe_scales(model)
    if "mamba" in name:  # transformers initialises D and dt_bias to ones, which would test less
        with torch.no_grad():
            for module in model.modules():
                if isinstance(getattr(module, "dt_bias", None), torch.nn.Parameter):
                    module.D.normal_(1.0, 0.5)
                    module.dt_bias.normal_(0.0, 1.0)
    # "sharded": several safetensors files and their index, as large checkpoints ship.
    model.save_pretrained(out, max_shard_size="1MB" if "sharded" in name else "50GB")
    assert ("sharded" in name) == (out / "model.safetensors.index.json").exists()
    if "fused-experts" in name:
        fuse_experts(out / "model.safetensors")
    tokenizer.save_pretrained(out)
    if template := family_template(name):
        (out / "chat_template.jinja").write_text(template)
    if v4_config:
        to_v4_config(out / "config.json")
    if "mxfp4" in name:
        mxfp4_experts(out)
    return out


def mxfp4_experts(out: Path) -> None:
    """A gpt-oss checkpoint's experts rewritten as OpenAI ships them: MXFP4 `{proj}_blocks` [E, out, in/32, 16]
    (32 e2m1 values per group, two to a byte, the even one in the low nibble) and `{proj}_scales` [E, out, in/32]
    (the group's power of two as an e8m0 exponent, bias 127), each weight rounded to the nearest value its group's
    scale gives; config.json says quant_method mxfp4, as theirs does."""
    e2m1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
    tensors = safetensors.torch.load_file(out / "model.safetensors")
    for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        weight = tensors.pop(name).float().transpose(1, 2)  # [E, in, out] → [E, out, in]
        groups = weight.reshape(*weight.shape[:2], -1, 32)
        largest = groups.abs().amax(-1, keepdim=True).clamp(min=2.0**-100)
        exponent = torch.ceil(torch.log2(largest / 6.0))  # the group's largest value fits under 6 · 2^e
        codes = (groups / 2.0**exponent).unsqueeze(-1).sub(e2m1).abs().argmin(-1).to(torch.uint8)
        tensors[f"{name}_blocks"] = codes[..., 0::2] | (codes[..., 1::2] << 4)
        tensors[f"{name}_scales"] = (exponent.squeeze(-1) + 127).to(torch.uint8)
    safetensors.torch.save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (out / "config.json").write_text(json.dumps(config, indent=2))
