"""What a weight format costs in accuracy: next-token logits of model directories against a reference
directory (say, an fp32 conversion of the same checkpoint), on a few chat prompts, all computed with f32
inference so that only the weights differ.

    python benchmarks/fidelity.py REFERENCE_DIR CANDIDATE_DIR [CANDIDATE_DIR ...]

Prints, per candidate, the mean cosine of the logit vectors and how often the top token agrees.
"""

from __future__ import annotations

import argparse

import numpy as np
import openvino as ov
import openvino_genai

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea and the wind.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # explain this",
    "Explain photosynthesis to a ten year old, step by step.",
    "List three facts about the planet Mars.",
]
# f32 everywhere, and no int8 activations: the comparison is about the weights alone
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}


def prompt_ids(model_dir: str) -> list[np.ndarray]:
    tokenizer = openvino_genai.Tokenizer(model_dir)
    return [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                           add_generation_prompt=True),
                             add_special_tokens=False).input_ids.data.copy() for text in PROMPTS]


def logits(core: ov.Core, model_dir: str, prompts: list[np.ndarray]) -> np.ndarray:
    """Logits at every position of every prompt, [positions, vocab]."""
    compiled = core.compile_model(f"{model_dir}/openvino_model.xml", "CPU", EXACT)
    rows = []
    for ids in prompts:
        request, n = compiled.create_infer_request(), ids.shape[1]  # a fresh KV cache per prompt
        request.infer({"input_ids": ids, "attention_mask": np.ones((1, n), np.int64),
                       "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)})
        rows.append(request.get_tensor("logits").data[0].copy())
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("candidates", nargs="+")
    args = parser.parse_args()
    core = ov.Core()
    prompts = prompt_ids(args.reference)
    expected = logits(core, args.reference, prompts)
    for candidate in args.candidates:
        got = logits(core, candidate, prompts)
        cosine = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
        top1 = np.mean(got.argmax(-1) == expected.argmax(-1))
        print(f"{candidate}: mean cosine {cosine.mean():.5f}, top-1 agreement {top1:.3f} over {len(cosine)} positions")


if __name__ == "__main__":
    main()
