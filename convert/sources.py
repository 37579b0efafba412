"""SOURCE → Checkpoint: a local HF directory or a hub model id, read without executing anything
from it (config.json as data, tensors from safetensors only)."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes  # noqa: F401  (registers numpy's bfloat16, which safetensors needs for bf16 tensors)
import numpy as np


# How images are preprocessed (sizes, mean and std) and, for some checkpoints, the chat template.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


class SourceError(ValueError):
    """The source cannot be read as a checkpoint."""


@dataclass
class Checkpoint:
    path: Path
    config: dict

    def safetensors_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [self.path / shard for shard in shards]
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise SourceError(f"{self.path}: shards listed in the index are missing: {', '.join(missing)}")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        if files:
            return files
        if any(self.path.glob("pytorch_model*.bin")) or any(self.path.glob("*.pt")) or any(self.path.glob("*.pth")):
            raise SourceError(
                f"{self.path} has only pickle weights (pytorch_model.bin), which can run code when loaded; "
                "convert needs safetensors (resave them with safetensors, or use a repo that ships them)"
            )
        raise SourceError(f"{self.path} has no *.safetensors weights")

    def check_weights(self) -> None:
        """Fail fast on missing or damaged weight files: opening one validates its header and that
        its data covers every tensor (a truncated download does not)."""
        for file in self.safetensors_files():
            with _open_safetensors(file):
                pass

    def hf_tokenizer(self):
        from .tokenizer import load_hf_tokenizer

        return load_hf_tokenizer(self.path)

    def dequantized_blocks(self) -> dict[str, list[str]]:
        return {}  # safetensors hold plain floats

    def generation_config(self) -> dict:
        source = self.path / "generation_config.json"
        return json.loads(source.read_text()) if source.is_file() else {}

    def write_files(self, out: Path, hf_tokenizer) -> None:
        """config.json, the tokenizer files and the image processor's beside the IR: GenAI reads the
        model type and the image preprocessing from them, other tools (optimum-intel) the rest."""
        import shutil

        from .tokenizer import TOKENIZER_FILES

        for name in ("config.json", *TOKENIZER_FILES, *PROCESSOR_FILES):
            if (self.path / name).is_file():
                shutil.copyfile(self.path / name, out / name)
        # transformers 5 saves the image processor's settings inside processor_config.json; GenAI reads
        # them from preprocessor_config.json (or from a processor_config.json that has a video
        # processor's too).
        processor = self.path / "processor_config.json"
        if processor.is_file() and not (out / "preprocessor_config.json").exists():
            image_processor = json.loads(processor.read_text()).get("image_processor")
            if image_processor:
                (out / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")

    def weights(self, dtype=None, dequantize: bool = False) -> "Weights":
        """The checkpoint's tensors, read when taken; in their stored dtype unless `dtype` is given."""
        refs = {}
        for file in self.safetensors_files():
            with _open_safetensors(file) as f:
                refs.update({name: TensorRef(file, name) for name in f.keys()})
        return Weights(refs, dtype)


@dataclass(frozen=True)
class TensorRef:
    """Where a tensor, or a band of its rows, lies in a safetensors file."""

    file: Path
    name: str
    rows: tuple[int, int] | None = None

    def load(self) -> np.ndarray:
        with _open_safetensors(self.file) as f:
            if self.rows is None:
                return f.get_tensor(self.name)
            return f.get_slice(self.name)[self.rows[0] : self.rows[1]]

    def num_rows(self) -> int:
        with _open_safetensors(self.file) as f:
            return f.get_slice(self.name).get_shape()[0]

    def band(self, start: int, stop: int) -> "TensorRef":
        return TensorRef(self.file, self.name, (start, stop))


_MISSING = object()


@dataclass(frozen=True)
class _Transformed:
    ref: object
    function: object

    def load(self):
        return self.function(self.ref.load())


@dataclass(frozen=True)
class _Combined:
    refs: tuple
    function: object

    def load(self):
        return self.function(*(ref.load() for ref in self.refs))


@dataclass(frozen=True)
class _Stacked:
    refs: tuple

    def load(self):
        first = self.refs[0].load()
        stacked = np.empty((len(self.refs), *first.shape), first.dtype)
        stacked[0] = first
        for i, ref in enumerate(self.refs[1:], 1):
            stacked[i] = ref.load()
        return stacked


class Weights:
    """A checkpoint's tensors by name, each read from disk only when the graph takes it, so a
    conversion holds one source tensor at a time beside the constants built so far (reading all of
    Phi-3-mini up front doubled peak memory to 15 GB)."""

    def __init__(self, refs: dict, dtype=None, to_compress: set[str] | None = None):
        self._refs, self._dtype = refs, dtype
        # Names of the weights compression may change; None: all of them.
        self.to_compress = to_compress

    def __contains__(self, name: str) -> bool:
        return name in self._refs

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def pop(self, name: str, default=_MISSING) -> np.ndarray:
        if name not in self._refs:
            if default is _MISSING:
                raise KeyError(f"checkpoint has no tensor {name}")
            return default
        array = self._refs.pop(name).load()
        # Blocks that arrive quantized (graph.BlockQuantized) stay as they are.
        return array if self._dtype is None or not isinstance(array, np.ndarray) else array.astype(self._dtype)

    def discard(self, name: str) -> None:
        self._refs.pop(name, None)

    def rename_prefix(self, old: str, new: str) -> None:
        """Every tensor named old… is named new… from now on."""
        for name in [name for name in self._refs if name.startswith(old)]:
            self._refs[new + name[len(old):]] = self._refs.pop(name)

    def rename(self, parts: dict[str, str]) -> None:
        """Every tensor with a dotted part `old` in its name has `parts[old]` there instead
        ("feed_forward.w1" → "mlp.gate_proj")."""
        for name in list(self._refs):
            renamed = f".{name}."
            for old, new in parts.items():
                renamed = renamed.replace(f".{old}.", f".{new}.")
            if renamed[1:-1] != name:
                self._refs[renamed[1:-1]] = self._refs.pop(name)

    def transform(self, name: str, new_name: str, function) -> None:
        """The tensor `name` is read as `function` of it, under `new_name`."""
        self._refs[new_name] = _Transformed(self._refs.pop(name), function)

    def combine(self, names: list[str], new_name: str, function) -> None:
        """The tensors `names` are read as one, `function` of them all, under `new_name` (quantized blocks
        and their scales as one weight)."""
        self._refs[new_name] = _Combined(tuple(self._refs.pop(name) for name in names), function)

    def stack(self, names: list[str], new_name: str) -> None:
        """The tensors `names` (of one shape) are read as one, stacked along a new first axis, under `new_name`
        (a mixture's per-expert weights as [E, N, K])."""
        self._refs[new_name] = _Stacked(tuple(self._refs.pop(name) for name in names))

    def derive(self, name: str, parts: dict) -> None:
        """The tensor `name` is replaced by tensors each read as a function of it: `parts` {new name: function}."""
        source = self._refs.pop(name)
        for part, function in parts.items():
            self._refs[part] = _Transformed(source, function)

    def split_rows(self, name: str, parts: dict[str, int]) -> None:
        """Replace the fused tensor `name` by consecutive bands of rows, `parts` mapping each new
        name to its number of rows."""
        fused = self._refs.pop(name)
        if sum(parts.values()) != fused.num_rows():
            raise KeyError(f"{name} has {fused.num_rows()} rows, expected {sum(parts.values())}")
        start = 0
        for part, rows in parts.items():
            self._refs[part] = fused.band(start, start + rows)
            if self.to_compress is not None and name in self.to_compress:
                self.to_compress.add(part)
            start += rows


@contextmanager
def _open_safetensors(file: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="numpy") as f:
            yield f
    except (SafetensorError, OSError, ValueError) as e:
        raise SourceError(f"{file.name} is not a readable safetensors file ({e})") from None


def _load_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SourceError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    try:
        return json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{config_file} is not valid JSON ({e})") from None


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _download(repo_id: str) -> Path:
    """Files the converter reads, from the hub or (HF_HUB_OFFLINE=1) the local HF cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            hint = "it is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
        else:
            hint = "the Hugging Face Hub is unreachable; connect, or download it elsewhere and pass its directory"
        raise SourceError(f"cannot get {repo_id!r}: {hint}") from None
    except RepositoryNotFoundError:
        raise SourceError(f"{repo_id!r} is not a model on the Hugging Face Hub (or it is gated: log in)") from None
    except HFValidationError as e:
        raise SourceError(f"{repo_id!r} is not a valid model id ({e})") from None
    except OSError as e:
        raise SourceError(f"cannot get {repo_id!r} from the Hugging Face Hub: {e}") from None


def open_source(source: str | os.PathLike) -> Checkpoint:
    """A local checkpoint directory, or a hub id such as `microsoft/Phi-3-mini-4k-instruct`."""
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix == ".gguf":
                from .gguf_source import read_gguf

                return read_gguf(path)
            raise SourceError(f"{path} is a file; pass a checkpoint directory, a .gguf file or a hub model id")
        return Checkpoint(path, _load_config(path))
    if not _looks_like_hub_id(str(source)):
        raise SourceError(f"{source}: no such directory, and not a hub model id (owner/name)")
    path = _download(str(source))
    return Checkpoint(path, _load_config(path))
