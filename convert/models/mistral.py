"""Mistral: llama's layout with an explicit head_dim (Nemo: head_dim ≠ hidden/heads) and a
sliding attention window, both read by ModelArgs."""

from .base import ModelArgs  # noqa: F401


def sanitize(weights, args: ModelArgs) -> None:
    pass
