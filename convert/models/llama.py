"""Llama 2 / 3.x: the reference layout; rope scaling (linear, llama3) is in base.make_rope."""

from .base import ModelArgs  # noqa: F401


def sanitize(weights, args: ModelArgs) -> None:
    pass
