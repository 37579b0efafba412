"""Qwen2 / 2.5: llama's layer plus q/k/v biases, which LayerWeights.linear picks up when present."""

from dataclasses import dataclass

from . import base
from .base import UnsupportedModel
from .llama import decoder_layer  # noqa: F401


@dataclass
class ModelArgs(base.ModelArgs):
    use_sliding_window: bool = False

    def __post_init__(self):
        super().__post_init__()
        # Qwen2 configs carry a sliding_window that applies only when use_sliding_window is set,
        # and then only to some layers.
        if self.use_sliding_window:
            raise UnsupportedModel(f"{self.model_type} with use_sliding_window is not supported")
        self.sliding_window = None
