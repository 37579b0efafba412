"""Qwen2 / 2.5: llama's layout plus q/k/v biases, which graph.linear picks up when present."""

from dataclasses import dataclass

from . import base
from .base import UnsupportedModel


@dataclass
class ModelArgs(base.ModelArgs):
    use_sliding_window: bool = False

    def __post_init__(self):
        super().__post_init__()
        # Qwen2 configs carry a sliding_window that applies only when use_sliding_window is set,
        # and then only to some layers.
        if self.use_sliding_window:
            raise UnsupportedModel("qwen2 with use_sliding_window is not supported")
        self.sliding_window = None


def sanitize(weights, args: ModelArgs) -> None:
    pass
