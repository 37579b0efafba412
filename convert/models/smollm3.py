"""SmolLM3: llama's layer, with no rotary embedding (NoPE) in every `no_rope_layer_interval`-th layer,
or where `no_rope_layers` (1: rope, 0: none) says."""

from dataclasses import dataclass

from .llama import transformer_block
from .qwen2 import ModelArgs as Qwen2Args


@dataclass
class ModelArgs(Qwen2Args):
    no_rope_layers: list | None = None
    no_rope_layer_interval: int = 4

    def __post_init__(self):
        super().__post_init__()
        if self.no_rope_layers is None:
            self.no_rope_layers = [int((i + 1) % self.no_rope_layer_interval != 0) for i in range(self.num_hidden_layers)]


def decoder_layer(x, w, args, ctx):
    return transformer_block(x, w, args, ctx, args.rope if args.no_rope_layers[w.layer] else None)
