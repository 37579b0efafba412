"""EXAONE 4.0: OLMo 2's post-norm layer with q/k normalised per head; where the model mixes sliding
and full attention layers (layer_types, or a sliding_window_pattern such as "LLLG" or 4), only the
sliding layers rotate: the full ones are NoPE."""

from dataclasses import dataclass

from . import base
from .olmo2 import post_norm_block


@dataclass
class ModelArgs(base.ModelArgs):
    sliding_window_pattern: str | int | None = 4

    def __post_init__(self):
        super().__post_init__()
        pattern = self.sliding_window_pattern
        if self.sliding_window is None:
            self.layer_types = None  # full attention with rope everywhere (EXAONE 4.0 1.2B)
        elif self.layer_types is None and pattern:
            # "LLLG": three sliding layers, then a full one; n: every n-th layer full
            kinds = pattern if isinstance(pattern, str) else "L" * (pattern - 1) + "G"
            self.layer_types = ["sliding_attention" if kinds[i % len(kinds)] == "L" else "full_attention"
                                for i in range(self.num_hidden_layers)]


def decoder_layer(x, w, args, ctx):
    rope = args.rope if args.sliding_window is None or args.window(w.layer) is not None else None
    return post_norm_block(x, w, args, ctx, rope, qk_norm="rms")
