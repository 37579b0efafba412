"""Tiny random vision-language checkpoints as their families ship them (a vision tower, its
projector, a language model, an image processor, a tokenizer with the image tokens and a chat
template that places them), made with transformers + torch, the reference they are checked against."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from checkpoints import GEMMA4_MOE, QWEN3_5, QWEN3_5_MOE, SMALL, randomize_moe_scales

# Each family's image tokens, as its tokenizer names them (transformers' extra_special_tokens), and the
# text its chat template writes for an image item of a message.
GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}
GEMMA4_TOKENS = {"boi_token": "<|image>", "image_token": "<|image|>", "eoi_token": "<image|>", "video_token": "<|video|>",
                 "audio_token": "<|audio|>"}
QWEN_TOKENS = {"vision_bos_token": "<|vision_start|>", "image_token": "<|image_pad|>", "vision_eos_token": "<|vision_end|>",
               "video_token": "<|video_pad|>"}


def _template(turn_start: str, turn_end: str, assistant: str, image: str, generation_prompt: str) -> str:
    """A chat template whose user content may be a string or a list of image and text items, as the
    shipped VLM templates are."""
    return (
        "{{ bos_token }}{%- for message in messages -%}"
        f"{{{{ '{turn_start}' + ('{assistant}' if message['role'] == 'assistant' else message['role']) + '\\n' }}}}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for item in message['content'] -%}"
        f"{{%- if item['type'] == 'image' -%}}{{{{ '{image}' }}}}"
        "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        f"{{{{ '{turn_end}\\n' }}}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ '{generation_prompt}' }}}}{{%- endif -%}}"
    )


GEMMA3_TEMPLATE = _template("<start_of_turn>", "<end_of_turn>", "model", "<start_of_image>", "<start_of_turn>model\\n")
GEMMA4_TEMPLATE = _template("<start_of_turn>", "<end_of_turn>", "model", "<|image|>", "<start_of_turn>model\\n")
QWEN_TEMPLATE = _template("<|im_start|>", "<|im_end|>", "assistant", "<|vision_start|><|image_pad|><|vision_end|>",
                          "<|im_start|>assistant\\n")

QWEN_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, spatial_merge_size=2,
                   temporal_patch_size=2, out_hidden_size=64, initializer_range=0.2)


def _gemma3(tokenizer):
    config = transformers.Gemma3Config(
        text_config=dict(SMALL, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                         vocab_size=len(tokenizer)),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14),
        mm_tokens_per_image=4, **{f"{kind}_index": tokenizer.convert_tokens_to_ids(GEMMA3_TOKENS[kind])
                                  for kind in ("boi_token", "eoi_token")},
        image_token_index=tokenizer.convert_tokens_to_ids(GEMMA3_TOKENS["image_token"]))
    processor = transformers.Gemma3Processor(
        image_processor=transformers.Gemma3ImageProcessorPil(size={"height": 56, "width": 56}),
        tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE, image_seq_length=4)
    return config, processor


def _gemma4(text: dict):
    """Gemma 4 E2B-like: per-layer embeddings, a vision tower of 16-px patches pooled 3 × 3 into at most
    70 soft tokens; the images attended both ways (use_bidirectional_attention "vision", as the larger
    models do) in a sliding window longer than a picture, as Gemma 4's (512, 1024) are than its 280 tokens:
    GenAI's paged attention departs from transformers when one picture's tokens outnumber the window.
    `text`: what the language model has otherwise (26B-A4B's mixture of experts)."""
    def make(tokenizer):
        ids = {f"{kind}_id": tokenizer.convert_tokens_to_ids(GEMMA4_TOKENS[kind])
               for kind in ("boi_token", "eoi_token", "image_token", "video_token", "audio_token")}
        config = transformers.Gemma4Config(
            text_config={**SMALL, "head_dim": 16, "global_head_dim": 32, "hidden_size_per_layer_input": 8, **text,
                         "sliding_window": 96, "vocab_size": len(tokenizer), "vocab_size_per_layer_input": len(tokenizer),
                         "layer_types": ["sliding_attention", "full_attention"], "use_bidirectional_attention": "vision"},
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=2, head_dim=16, patch_size=16, pooling_kernel_size=3,
                               position_embedding_size=64, standardize=True, initializer_range=0.2),
            audio_config=None, **ids)
        # Gemma4Processor cannot be made without torchvision (its video processor): the image processor.
        return config, transformers.Gemma4ImageProcessorPil(patch_size=16, pooling_kernel_size=3, max_soft_tokens=70)
    return make


def _qwen(model_type: str):
    def make(tokenizer):
        ids = {"image_token_id": tokenizer.convert_tokens_to_ids(QWEN_TOKENS["image_token"]),
               "video_token_id": tokenizer.convert_tokens_to_ids(QWEN_TOKENS["video_token"]),
               "vision_start_token_id": tokenizer.convert_tokens_to_ids(QWEN_TOKENS["vision_bos_token"]),
               "vision_end_token_id": tokenizer.convert_tokens_to_ids(QWEN_TOKENS["vision_eos_token"])}
        text = dict(SMALL, head_dim=16, vocab_size=len(tokenizer))
        if model_type in ("qwen3_5", "qwen3_5_moe"):
            experts = QWEN3_5_MOE if model_type == "qwen3_5_moe" else {}
            config = transformers.AutoConfig.for_model(
                model_type, text_config=dict(text, **QWEN3_5, **experts, layer_types=["linear_attention", "full_attention"]),
                vision_config=dict(QWEN_VISION, patch_size=16, num_position_embeddings=64), **ids)
        else:
            config = transformers.Qwen3VLConfig(
                text_config=dict(text, rope_parameters=dict(rope_type="default", rope_theta=5_000_000.0,
                                                            mrope_section=[2, 3, 3], mrope_interleaved=True)),
                vision_config=dict(QWEN_VISION, patch_size=14, num_position_embeddings=16,
                                   deepstack_visual_indexes=[0, 1]), **ids)
        patch = config.vision_config.patch_size
        image_processor = transformers.Qwen2VLImageProcessorPil(
            patch_size=patch, temporal_patch_size=2, merge_size=2,
            size={"shortest_edge": (patch * 2) ** 2 * 4, "longest_edge": (patch * 2) ** 2 * 64})
        # Qwen3VLProcessor cannot be made without torchvision (its video processor): the image processor
        # and the tokenizer with the template are what it would save.
        return config, image_processor
    return make


VLM_VARIANTS = {  # name → (config and processor maker, image tokens, chat template)
    "gemma3-vision": (_gemma3, GEMMA3_TOKENS, GEMMA3_TEMPLATE),
    "gemma4-vision": (_gemma4({}), GEMMA4_TOKENS, GEMMA4_TEMPLATE),
    # Gemma 4 26B-A4B-like: a mixture of experts beside each layer's MLP, no per-layer embeddings.
    "gemma4-moe-vision": (_gemma4(GEMMA4_MOE), GEMMA4_TOKENS, GEMMA4_TEMPLATE),
    "qwen3_5-vision": (_qwen("qwen3_5"), QWEN_TOKENS, QWEN_TEMPLATE),
    "qwen3_5_moe-vision": (_qwen("qwen3_5_moe"), QWEN_TOKENS, QWEN_TEMPLATE),
    "qwen3_vl-vision": (_qwen("qwen3_vl"), QWEN_TOKENS, QWEN_TEMPLATE),
}


def randomize_tower(model) -> None:
    """Vision weights all random and of order one: transformers initialises biases, projections and
    Gemma's norms to zero, which would test nothing."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not any(part in name for part in ("vision_tower", "multi_modal_projector", "visual", "embed_vision")):
                continue
            if "norm" in name:
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
            else:
                param.normal_(0.0, 0.2)


def make_vlm_checkpoint(name: str, out: Path, smollm2_dir: Path) -> Path:
    """The tiny vision-language checkpoint `name` in `out`: SmolLM2's tokenizer with the family's image
    tokens, its processor (preprocessor_config.json, chat template), random weights."""
    make, tokens, template = VLM_VARIANTS[name]
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir, extra_special_tokens=tokens)
    tokenizer.chat_template = template
    config, processor = make(tokenizer)
    config.text_config.initializer_range = 0.2
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, key, getattr(tokenizer, key))
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    randomize_tower(model)
    randomize_moe_scales(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out


class MtpHead(torch.nn.Module):
    """A Qwen3.5 multi-token-prediction head (`mtp.*`) made of transformers' own Qwen3.5 blocks, which
    transformers' model leaves out: the two pre-fc RMSNorms, fc over [embedding, hidden state], one
    full-attention decoder layer (the mixture of experts for qwen3_5_moe), the final norm."""

    def __init__(self, text_config):
        super().__init__()
        family = "qwen3_5_moe" if text_config.model_type.startswith("qwen3_5_moe") else "qwen3_5"
        blocks = getattr(transformers.models, family).__dict__[f"modeling_{family}"]
        prefix = "Qwen3_5Moe" if family == "qwen3_5_moe" else "Qwen3_5"
        config = type(text_config).from_dict({**text_config.to_dict(), "num_hidden_layers": 1,
                                               "layer_types": ["full_attention"]})
        config._attn_implementation = config._experts_implementation = "eager"
        hidden, eps = config.hidden_size, config.rms_norm_eps
        norm = getattr(blocks, f"{prefix}RMSNorm")
        self.pre_fc_norm_embedding, self.pre_fc_norm_hidden, self.norm = norm(hidden, eps), norm(hidden, eps), norm(hidden, eps)
        self.fc = torch.nn.Linear(2 * hidden, hidden, bias=False)
        self.layers = torch.nn.ModuleList([getattr(blocks, f"{prefix}DecoderLayer")(config, layer_idx=0)])
        self.rotary_emb = getattr(blocks, f"{prefix}TextRotaryEmbedding")(config)

    def forward(self, hidden_states, inputs_embeds, position_ids, cache) -> torch.Tensor:
        """The head's last hidden state for new tokens at `position_ids` [B, T] after what `cache` holds."""
        x = self.fc(torch.cat([self.pre_fc_norm_embedding(inputs_embeds), self.pre_fc_norm_hidden(hidden_states)], -1))
        past, new = cache.get_seq_length(), x.shape[1]
        mask = torch.full((new, past + new), torch.finfo(x.dtype).min).triu(past + 1)[None, None]
        x = self.layers[0](x, self.rotary_emb(x, position_ids), attention_mask=mask, position_ids=position_ids,
                           cache=cache)
        return self.norm(x)


def add_mtp_head(path: Path, seed: int) -> MtpHead:
    """Give the (multimodal or text) checkpoint in `path` a random one-layer multi-token-prediction head as Qwen
    ships it: `mtp.*` tensors (in a file of their own) and mtp_num_hidden_layers 1 in its (text) config. Returns
    the head."""
    import json

    import safetensors.torch

    config = transformers.AutoConfig.from_pretrained(path)
    torch.manual_seed(seed)
    head = MtpHead(getattr(config, "text_config", config)).eval()
    with torch.no_grad():
        for param in head.parameters():
            param.normal_(0.0, 0.2)
    safetensors.torch.save_file({f"mtp.{name}": t.contiguous() for name, t in head.state_dict().items()
                                 if not name.startswith("rotary_emb.")}, path / "mtp.safetensors")
    raw = json.loads((path / "config.json").read_text())
    raw.get("text_config", raw)["mtp_num_hidden_layers"] = 1
    (path / "config.json").write_text(json.dumps(raw, indent=2))
    return head
