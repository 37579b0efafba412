"""Mistral: llama's layer with an explicit head_dim (Nemo: head_dim ≠ hidden/heads) and a sliding
attention window, both read by ModelArgs; Ministral's layer_types say which layers slide."""

from .base import ModelArgs  # noqa: F401
from .llama import decoder_layer  # noqa: F401
