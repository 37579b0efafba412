"""OLMo 3: OLMo 2's layer; three sliding-window layers to one full one (layer_types), the full layers
with their own (possibly YaRN-scaled) rope."""

from dataclasses import dataclass

from . import base
from .olmo2 import post_norm_block


@dataclass
class ModelArgs(base.ModelArgs):
    def __post_init__(self):
        super().__post_init__()
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if (i + 1) % 4 else "full_attention"
                                for i in range(self.num_hidden_layers)]

    @classmethod
    def from_config(cls, config: dict) -> "ModelArgs":
        theta = config.get("rope_theta", 500_000.0)  # Olmo3Config's default base
        return super().from_config({**config, **base.ropes_by_layer_type(
            config, {**(config.get("rope_scaling") or {}), "rope_theta": theta}, {"rope_theta": theta})})


def decoder_layer(x, w, args, ctx):
    return post_norm_block(x, w, args, ctx, args.layer_rope(w.layer), qk_norm="rms_across_heads")
