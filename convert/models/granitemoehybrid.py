"""Granite 4.0 (`granitemoehybrid`), its dense models (350M, 1B, micro): Granite 3's layer and
multipliers, the MLP as a fused shared_mlp (split here), rope or none (NoPE) by position_embedding_type.
Its Mamba-2 layers (the "-H" models) and its experts are not built yet."""

from dataclasses import dataclass

from . import granite
from .base import UnsupportedModel
from .granite import decoder_layer  # noqa: F401
from .phi3 import split_gate_up

ATTENTION, MAMBA = ("attention", "full_attention"), ("mamba", "linear_attention")


@dataclass
class ModelArgs(granite.ModelArgs):
    position_embedding_type: str | None = None
    num_local_experts: int = 8
    shared_intermediate_size: int = 1024

    def __post_init__(self):
        super().__post_init__()
        kinds = self.layer_types or [MAMBA[1]] * self.num_hidden_layers  # GraniteMoeHybridConfig's default
        if unknown := [kind for kind in kinds if kind not in ATTENTION]:
            what = "Mamba-2 layers (a Granite 4.0 -H model)" if unknown[0] in MAMBA else f"layer type {unknown[0]!r}"
            raise UnsupportedModel(f"granitemoehybrid: {what} are not supported yet; its dense models are")
        if self.num_local_experts:
            raise UnsupportedModel(f"granitemoehybrid: mixture-of-experts layers ({self.num_local_experts} experts) "
                                   "are not supported yet; its dense models are")
        self.layer_types = None  # every layer full attention
        self.intermediate_size = self.shared_intermediate_size

    def layer_rope(self, layer: int):
        return self.rope if self.position_embedding_type == "rope" else None


def sanitize(weights, args: ModelArgs) -> None:
    weights.rename({"shared_mlp": "mlp", "output_linear": "down_proj"})
    split_gate_up(weights, args, "mlp.input_linear")
