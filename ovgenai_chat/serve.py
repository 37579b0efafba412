"""`ovchat serve`: the OpenAI chat and completions API over openvino_genai's
ContinuousBatchingPipeline, so that concurrent clients share each generation step.

One thread owns the pipeline and makes every call into it: the bindings hold the GIL through
step() and block in read(), so calling them from the event loop would stall or deadlock it. The
event loop hands that thread requests and cancellations through a queue, and each request gets its
tokens back through an asyncio.Queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import re
import secrets
import socket
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, AsyncIterator, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .chat import generation_config
from .engine import (ModelError, Precision, check_model_dir, context_window, first_inference, keep_telemetry_off,
                     model_precision, pick_device)

log = logging.getLogger("ovchat.serve")
MAX_TOKENS_BOUND = 1 << 20  # above any context window; keeps fuzzers from asking for 2**63 tokens
SHUTTING_DOWN = "the server is shutting down"


class APIError(Exception):
    """An error for the client, in the OpenAI shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.kind, self.code, self.param)


def error_response(status: int, message: str, kind: str, code: str | None = None, param: str | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


# --- the pipeline's thread -------------------------------------------------------------------------

class Job:
    """One request's way back from the pipeline's thread: ("tokens", ids, finish_reason or None),
    then ("end", finish_reason) or ("error", message)."""

    def __init__(self, job_id: int, loop: asyncio.AbstractEventLoop):
        self.id, self.loop, self.events = job_id, loop, asyncio.Queue()

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            pass


class Batcher:
    """Runs the ContinuousBatchingPipeline's steps on its own thread while there is work."""

    def __init__(self, pipe):
        import openvino_genai

        self.pipe = pipe
        self._status = openvino_genai.GenerationStatus
        reasons = openvino_genai.GenerationFinishReason
        self._finish_reasons = {reasons.LENGTH: "length", reasons.STOP: "stop"}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._live: dict[int, tuple[Job, object]] = {}
        self._ids = itertools.count()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="ovchat-batcher", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        return len(self._live)

    def submit(self, ids: list[int], config) -> Job:
        job = Job(next(self._ids), asyncio.get_running_loop())
        self._commands.put(("add", job, ids, config))
        return job

    def cancel(self, job: Job) -> None:
        self._commands.put(("cancel", job))

    def close(self) -> None:
        self._commands.put(("close", None))
        self._thread.join()

    def end_all_after(self, seconds: float) -> None:
        """Let the requests in flight finish for `seconds`, then end them with an error, so that
        each stream closes well-formed instead of being cut off."""
        self._commands.put(("deadline", None, time.monotonic() + seconds))

    def _run(self) -> None:
        while True:
            commands = [] if self._live else [self._commands.get()]  # idle: sleep until there is work
            while True:
                try:
                    commands.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            for kind, job, *arguments in commands:
                if kind == "close":
                    self._end_all(SHUTTING_DOWN)
                    return
                if kind == "deadline":
                    self._deadline = arguments[0]
                elif kind == "add":
                    self._add(job, *arguments)
                elif kind == "cancel" and (entry := self._live.pop(job.id, None)):
                    entry[1].cancel()  # its KV blocks go back to the pool at the next step
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._end_all(SHUTTING_DOWN)
            if not self.pipe.has_non_finished_requests():
                continue
            try:
                self.pipe.step()
            except Exception as e:  # one bad step fails the requests in it, not the server
                log.error("generation step failed: %s", e)
                self._end_all(f"generation failed: {e}")
                continue
            self._collect()

    def _end_all(self, message: str) -> None:
        for job, handle in self._live.values():
            handle.cancel()
            job.post("error", message)
        self._live.clear()

    def _add(self, job: Job, ids: list[int], config) -> None:
        import numpy as np
        import openvino as ov

        try:
            handle = self.pipe.add_request(job.id, ov.Tensor(np.array([ids], dtype=np.int64)), config)
        except Exception as e:
            job.post("error", f"cannot start generation: {e}")
            return
        self._live[job.id] = (job, handle)

    def _collect(self) -> None:
        for job_id, (job, handle) in list(self._live.items()):
            done = handle.get_status() != self._status.RUNNING
            finish = None
            while handle.can_read():
                for output in handle.read().values():
                    finish = self._finish_reasons.get(output.finish_reason)
                    job.post("tokens", list(output.generated_ids), finish)
            if done or finish:
                del self._live[job_id]
                if handle.get_status() == self._status.IGNORED:
                    job.post("error", "not enough KV-cache memory for this request (see --kv-cache)")
                else:
                    job.post("end", finish or "stop")


class IncrementalText:
    """Text of a growing list of token ids, handed out as the new part at each step. A piece that
    ends inside a multi-byte character is held back until the character is complete."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.sent = tokenizer, [], 0

    def add(self, ids: list[int]) -> str:
        self.ids += ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self.sent = text[self.sent:], len(text)
        return piece


# --- the API's shapes ------------------------------------------------------------------------------

class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required, unless an assistant message has tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def for_template(self) -> dict:
        """The message as chat templates read it: a tool call's arguments as an object, not a JSON text."""
        message = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function", "function": {
                "name": call.function.name, "arguments": _json_or_text(call.function.arguments)}}
                for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


class FunctionSpec(BaseModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


Text = Annotated[str, Field(min_length=1)]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="The served model's id (GET /v1/models); any other is a 404.")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; absent: the model's recommendation, else greedy.")
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = Field(
        None, description="Up to 4 texts that end the reply; not included in it.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    response_format: ResponseFormat | None = Field(
        None, description="json_object: the reply is a JSON object; json_schema: it validates against the schema.")
    tools: list[Tool] | None = Field(None, description="Functions the model may call, for a template that takes tools.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="required, or a named function: the reply is a call (generation constrained to one).")


class CompletionRequest(Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list must hold exactly one).")


# --- structured output and tool calls -------------------------------------------------------------
#
# Tool calls are written as the model's template asks: <tool_call>{"name": …, "arguments": …}</tool_call> in the
# Hermes / Qwen 2.5 / Qwen3 / SmolLM3 templates, a bare {"name": …, "parameters": …} in Llama 3.x's. A JSON schema
# or a forced call becomes GenAI's structured output (XGrammar). A grammar XGrammar
# cannot compile fails the pipeline's step and with it every request in the batch (and leaves the
# pipeline unusable), so each one is first tried on a stand-in pipeline: a model that returns zero logits,
# with the served model's tokenizer.

XGRAMMAR_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


class CallFormat:
    """How a model family writes a tool call: a JSON object with the function's name and its arguments under
    `arguments_key`, between `opening` and `closing` (or, with no opening, as the whole reply)."""

    def __init__(self, opening: str, closing: str, arguments_key: str):
        self.opening, self.closing, self.arguments_key = opening, closing, arguments_key
        self.blocks = re.compile(re.escape(opening.strip()) + r"\s*(.*?)\s*" + re.escape(closing.strip()), re.DOTALL)

    def schema(self, tool: Tool) -> dict:
        return {"type": "object", "properties": {"name": {"const": tool.function.name},
                                                 self.arguments_key: tool.function.parameters},
                "required": ["name", self.arguments_key]}

    def grammar(self, tools: list[Tool]):
        """Structured output that is a call of one of `tools`."""
        import openvino_genai

        structure = openvino_genai.StructuredOutputConfig
        schema = self.schema(tools[0]) if len(tools) == 1 else {"anyOf": [self.schema(t) for t in tools]}
        if not self.opening:
            return structure(json_schema=json.dumps(schema))
        return structure(compound_grammar=structure.Concat(structure.ConstString(self.opening),
                                                           structure.JSONSchema(json.dumps(schema)),
                                                           structure.ConstString(self.closing)))

    def parse(self, text: str) -> tuple[str | None, list[dict]]:
        """(content, tool calls) of a reply, the calls in OpenAI's form (arguments as a JSON text)."""
        found = [m[1] for m in self.blocks.finditer(text)] if self.opening else [text.strip()]
        calls = []
        for block in found:
            call = _json_or_text(block)
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                arguments = call.get(self.arguments_key, call.get("arguments", call.get("parameters", {})))
                calls.append({"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": {
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)}})
        if not calls:
            return text, []
        return (self.blocks.sub("", text).strip() or None) if self.opening else None, calls

    def streamable(self, text: str) -> int:
        """How much of a reply being streamed can go out as text: up to a call, or to the start of what could
        still become one (with no opening, a reply that starts as a JSON object is held back whole)."""
        if not self.opening:
            stripped = text.lstrip()
            return 0 if not stripped or stripped.startswith("{") else len(text)
        at = text.find(self.opening.strip())
        if at >= 0:
            return at
        tag = self.opening.strip()
        return len(text) - next((n for n in range(len(tag) - 1, 0, -1) if text.endswith(tag[:n])), 0)


HERMES_CALLS = CallFormat("<tool_call>\n", "\n</tool_call>", "arguments")
LLAMA3_CALLS = CallFormat("", "", "parameters")


def call_format(chat_template: str) -> CallFormat:
    """Llama 3.x's JSON calls where the template asks for them (it names <|python_tag|> or "parameters" and
    not <tool_call>), else the Hermes form most templates that take tools use."""
    if "<tool_call>" not in chat_template and ("<|python_tag|>" in chat_template or '"parameters"' in chat_template):
        return LLAMA3_CALLS
    return HERMES_CALLS


def structured_output(body: ChatRequest, tools: list[Tool] | None, calls: CallFormat):
    """The StructuredOutputConfig a request asks for, or None."""
    import openvino_genai

    structure = openvino_genai.StructuredOutputConfig
    choice = body.tool_choice
    if tools and (choice == "required" or isinstance(choice, NamedToolChoice)):
        chosen = [t for t in tools if choice == "required" or t.function.name == choice.function.name]
        if not chosen:
            raise APIError(400, f"tool_choice names {choice.function.name}, which is not in tools", param="tool_choice")
        return calls.grammar(chosen)
    form = body.response_format
    if form is None or form.type == "text":
        return None
    if form.type == "json_schema" and form.json_schema is None:
        raise APIError(400, "response_format.json_schema is required with type json_schema", param="response_format")
    schema = {"type": "object"} if form.type == "json_object" else form.json_schema.schema_
    return structure(json_schema=json.dumps(schema))


class GrammarCheck:
    """Compiles a StructuredOutputConfig on a stand-in LLMPipeline (the served model's tokenizer, a model of
    zero logits), so a grammar XGrammar refuses is a 400 and never reaches the served pipeline."""

    def __init__(self, model_dir: Path, vocabulary: int):
        import tempfile

        import numpy as np
        import openvino as ov
        import openvino_genai
        from openvino import opset13 as ops

        self.directory = tempfile.TemporaryDirectory(prefix="ovchat-grammar-")
        stand_in = Path(self.directory.name)
        for name in ("openvino_tokenizer.xml", "openvino_tokenizer.bin", "openvino_detokenizer.xml",
                     "openvino_detokenizer.bin"):
            (stand_in / name).symlink_to((model_dir / name).resolve())
        ids = ops.parameter([-1, -1], np.int64, name="input_ids")
        inputs = [ids] + [ops.parameter(shape, kind, name=name) for name, shape, kind in (
            ("attention_mask", [-1, -1], np.int64), ("position_ids", [-1, -1], np.int64), ("beam_idx", [-1], np.int32))]
        shape = ops.concat([ops.shape_of(ids), ops.constant(np.array([vocabulary], np.int64))], 0)
        logits = ops.broadcast(ops.constant(np.float32(0)), shape)
        logits.output(0).get_tensor().set_names({"logits"})
        ov.save_model(ov.Model([ops.result(logits)], inputs), stand_in / "openvino_model.xml")
        self.pipe = openvino_genai.LLMPipeline(stand_in, "CPU", ATTENTION_BACKEND="SDPA")
        self.lock = threading.Lock()

    def check(self, structure, param: str) -> None:
        config = self.pipe.get_generation_config()
        config.max_new_tokens, config.structured_output_config = 1, structure
        with self.lock:
            try:
                self.pipe.generate("a", config)
            except RuntimeError as e:
                reason = XGRAMMAR_PREFIX.sub("", str(e).strip().splitlines()[0])
                raise APIError(400, f"{param}: cannot constrain the reply to it: {reason}", param=param) from None


# --- the server ------------------------------------------------------------------------------------

class Server:
    """The loaded model, or why there is none yet."""

    def __init__(self, model_dir: Path, device: str, precision: Precision, kv_cache_gb: int, max_batch: int,
                 max_tokens: int | None):
        self.model_dir, self.name = model_dir, model_dir.name
        self.device, self.precision, self.kv_cache_gb, self.max_batch = device, precision, kv_cache_gb, max_batch
        self.context = context_window(model_dir)
        self.max_tokens = max_tokens
        self.batcher: Batcher | None = None
        self.tokenizer = None
        self.failure: str | None = None
        self.created = int(time.time())

    def load(self) -> None:
        import openvino_genai

        started = time.perf_counter()
        scheduler = openvino_genai.SchedulerConfig()
        # A fixed KV pool, in whole GB (the binding takes an integer): memory stays bounded on a small device.
        scheduler.cache_size = self.kv_cache_gb
        scheduler.max_num_seqs = self.max_batch
        scheduler.enable_prefix_caching = True  # a chat resends its history every turn
        scheduler.dynamic_split_fuse = True
        pipe = openvino_genai.ContinuousBatchingPipeline(str(self.model_dir), scheduler, self.device,
                                                         properties=self.precision.properties)
        self.tokenizer = pipe.get_tokenizer()
        self.takes_tools = "tools" in (self.tokenizer.chat_template or "")
        self.calls = call_format(self.tokenizer.chat_template or "")
        self.defaults = pipe.get_config  # a fresh copy of the model's generation config per call
        import openvino as ov

        logits = ov.Core().read_model(self.model_dir / "openvino_model.xml").output("logits")
        self.grammar = GrammarCheck(self.model_dir, logits.get_partial_shape()[-1].get_length())
        # The model's first inference (engine.first_inference) before the server says it is ready.
        config = self.defaults()
        config.max_new_tokens, config.apply_chat_template = 1, False
        with first_inference():
            pipe.generate(["Hello"], [config])
        self.batcher = Batcher(pipe)
        log.warning("model %s ready on %s in %.1f s, %s precision", self.name, self.device,
                    time.perf_counter() - started, self.precision.describe())

    def ready(self) -> "Server":
        if self.batcher is None:
            if self.failure:
                raise APIError(503, f"the model failed to load: {self.failure}", "server_error", "model_load_failed")
            raise APIError(503, "the model is still loading; retry shortly", "server_error", "model_loading")
        return self

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.name:
            raise APIError(404, f"the model '{model}' does not exist; this server has '{self.name}'",
                           "invalid_request_error", "model_not_found", "model")

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).input_ids.data[0].tolist()

    def config(self, body: Sampling, prompt_tokens: int, max_tokens: int | None):
        """The generation config for a request, or a 400 when the prompt leaves no room to answer."""
        room = None
        if self.context:
            room = self.context - prompt_tokens
            if room < 1:
                raise APIError(400, f"this model's context is {self.context} tokens, and the prompt has "
                               f"{prompt_tokens}", "invalid_request_error", "context_length_exceeded", "messages")
        limits = [n for n in (max_tokens, room, self.max_tokens) if n]
        stop = [body.stop] if isinstance(body.stop, str) else body.stop or []
        sampling = {"temperature": body.temperature, "top_p": body.top_p}
        config = generation_config(self.defaults(), max_new_tokens=min(limits) if limits else 1024,
                                   seed=body.seed, stop=stop, **{k: v for k, v in sampling.items() if v is not None})
        if body.presence_penalty is not None:
            config.presence_penalty = body.presence_penalty
        if body.frequency_penalty is not None:
            config.frequency_penalty = body.frequency_penalty
        try:
            config.validate()
        except RuntimeError as e:
            raise APIError(400, f"invalid sampling settings: {str(e).strip().splitlines()[-1]}") from None
        return config


def check_batchable(model_dir: Path) -> Path:
    """The server batches requests with paged attention, which GenAI makes from the model's
    ScaledDotProductAttention ops. A model whose attention is computed op by op has none: Gemma 2's
    soft-capped scores, which OpenVINO's paged attention cannot cap."""
    if 'type="ScaledDotProductAttention"' not in (model_dir / "openvino_model.xml").read_text(errors="replace"):
        raise ModelError(f"{model_dir.name} soft-caps its attention scores, which OpenVINO's paged attention (the "
                         "server's batching) cannot do; chat with it through `ovchat run`")
    return model_dir


def create_app(model_dir, device: str = "auto", api_key: str | None = None, kv_cache_gb: int = 1,
               max_batch: int = 8, max_tokens: int | None = None, on_load_failure=lambda message: None,
               precision: str = "auto") -> FastAPI:
    """The ASGI app. The model loads in the background once the app starts; until then the API
    answers 503."""
    import openvino as ov

    keep_telemetry_off()
    path = check_batchable(check_model_dir(model_dir))
    device, notice = pick_device(device, ov.Core().available_devices)
    if notice:
        print(notice, file=sys.stderr)
    chosen = model_precision(precision, device, path)
    server = Server(path, device, chosen, kv_cache_gb, max_batch, max_tokens)

    def load():
        try:
            server.load()
        except Exception as e:
            server.failure = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            log.error("cannot load %s on %s: %s", path, device, server.failure)
            on_load_failure(server.failure)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = threading.Thread(target=load, name="ovchat-loader", daemon=True)
        loader.start()
        yield
        await asyncio.to_thread(loader.join)
        if server.batcher:
            server.batcher.close()

    app = FastAPI(title="ovgenai-chat", version="1", lifespan=lifespan,
                  description=f"OpenAI-compatible API for {server.name}, on OpenVINO GenAI")
    app.state.server = server
    bearer = HTTPBearer(auto_error=False)

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_key and (credentials is None or not secrets.compare_digest(credentials.credentials, api_key)):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", "invalid_request_error")
        return error_response(400, f"{where or 'body'}: {first.get('msg')}", "invalid_request_error", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error: StarletteHTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(error.status_code, str(error.detail), kind)

    @app.exception_handler(Exception)
    async def unexpected(request, error: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error: {error}", "server_error")

    @app.get("/health")
    async def health():
        if server.batcher is None:
            status = "failed" if server.failure else "loading"
            return JSONResponse({"status": status, "error": server.failure}, status_code=503)
        return {"status": "ok", "model": server.name, "device": server.device, "precision": server.precision.name,
                "active_requests": server.batcher.active}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files(__package__).joinpath("web/index.html").read_text()

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        """The served model, then the others in the local store (`ovchat serve NAME` serves one of them)."""
        from .store import names

        listed = [server.name, *(name for name in names() if name != server.name)]
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": server.created, "owned_by": "ovgenai-chat",
             "loaded": name == server.name} for name in listed]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatRequest, request: Request):
        live = server.ready()
        live.check_model(body.model)
        tools = body.tools if body.tools and body.tool_choice != "none" else None
        if tools and not live.takes_tools:
            raise APIError(400, f"the chat template of {live.name} takes no tools", param="tools")
        messages = [m.for_template() for m in body.messages]
        try:
            prompt = live.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True,
                tools=[t.model_dump(exclude_none=True) for t in tools] if tools else None)
        except Exception as e:  # the template may refuse an order of roles
            raise APIError(400, f"the chat template cannot render these messages: {str(e).strip().splitlines()[-1]}",
                           param="messages") from None
        ids = live.encode(prompt, add_special_tokens=False)  # the template already wrote the special tokens
        config = live.config(body, len(ids), body.max_completion_tokens or body.max_tokens)
        if structure := structured_output(body, tools, live.calls):
            await asyncio.to_thread(live.grammar.check, structure, "tool_choice" if body.tool_choice and tools
                                    and body.tool_choice != "auto" else "response_format")
            config.structured_output_config = structure
        return await respond(request, live, body, ids, config, "chat.completion", tools is not None)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: CompletionRequest, request: Request):
        live = server.ready()
        live.check_model(body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        ids = live.encode(prompt, add_special_tokens=True)
        if not ids:
            raise APIError(400, "prompt: the prompt is empty", param="prompt")
        config = live.config(body, len(ids), body.max_tokens)
        return await respond(request, live, body, ids, config, "text_completion")

    return app


async def generate(request: Request, server: Server, ids: list[int], config) -> AsyncIterator[tuple[str, str | None]]:
    """(text piece, finish reason or None) as the pipeline makes them. Leaving early — a client
    that went away — cancels the generation, which frees its KV blocks."""
    start = time.perf_counter()
    job = server.batcher.submit(ids, config)
    text = IncrementalText(server.tokenizer)
    request.state.prompt_tokens, request.state.completion_tokens = len(ids), 0
    finished = False
    try:
        while True:
            kind, *data = await job.events.get()
            if kind == "error":
                finished = True
                raise APIError(500, data[0], "server_error")
            if kind == "end":
                finished = True
                yield "", data[0]
                return
            tokens, finish = data
            if request.state.completion_tokens == 0:
                request.state.ttft_ms = (time.perf_counter() - start) * 1000
            request.state.completion_tokens += len(tokens)
            yield text.add(tokens), None
    finally:
        if not finished:
            server.batcher.cancel(job)


async def respond(request: Request, server: Server, body: Sampling, ids: list[int], config, kind: str,
                  with_tools: bool = False):
    made = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{secrets.token_hex(12)}",
            "created": int(time.time()), "model": server.name}

    def usage() -> dict:
        prompt, completion = request.state.prompt_tokens, request.state.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def choice(piece: str | None, finish: str | None, first: bool = False) -> dict:
        if kind == "text_completion":
            return {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
        if not body.stream:
            return {"index": 0, "message": {"role": "assistant", "content": piece}, "finish_reason": finish,
                    "logprobs": None}
        delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece else {})
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}

    if not body.stream:
        pieces, finish = [], None
        async for piece, finish in generate(request, server, ids, config):
            pieces.append(piece)
        text = "".join(pieces)
        if with_tools and (found := server.calls.parse(text))[1]:
            message = {"role": "assistant", "content": found[0], "tool_calls": found[1]}
            return {**made, "object": kind, "usage": usage(), "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}]}
        return {**made, "object": kind, "choices": [choice(text, finish)], "usage": usage()}

    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"

    def event(data: dict) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def chunk(delta: dict, finish: str | None = None) -> str:
        return event({**made, "object": chunk_kind, "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    async def stream():
        if kind == "chat.completion":
            yield event({**made, "object": chunk_kind, "choices": [choice(None, None, first=True)]})
        text, sent = "", 0  # with tools: what could begin a <tool_call> is held back until it is known
        try:
            async for piece, finish in generate(request, server, ids, config):
                if not with_tools:
                    if piece or finish:
                        yield event({**made, "object": chunk_kind, "choices": [choice(piece, finish)]})
                    continue
                text += piece
                if finish is None:
                    safe = server.calls.streamable(text)
                    if safe > sent:
                        yield chunk({"content": text[sent:safe]})
                        sent = safe
                    continue
                content, calls = server.calls.parse(text[sent:])
                if content:
                    yield chunk({"content": content})
                if calls:
                    yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
                yield chunk({}, "tool_calls" if calls else finish)
        except APIError as e:
            yield event({"error": {"message": e.message, "type": e.kind, "param": None, "code": e.code}})
        else:
            if body.stream_options and body.stream_options.include_usage:
                yield event({**made, "object": chunk_kind, "choices": [], "usage": usage()})
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class RequestLog:
    """ASGI middleware: one line per request once its response has been sent, streamed ones too."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state", {})
            tokens = (f" tokens={state['prompt_tokens']}+{state['completion_tokens']}"
                      if "prompt_tokens" in state else "")
            ttft = f" ttft={state['ttft_ms']:.0f}ms" if "ttft_ms" in state else ""
            log.warning("%s %s %s%s%s %.0fms", scope["method"], scope["path"], status[0] or "-", tokens, ttft,
                        (time.perf_counter() - start) * 1000)


def serve(model_dir, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, device: str = "auto",
          kv_cache_gb: int = 1, max_batch: int = 8, max_tokens: int | None = None, precision: str = "auto") -> None:
    """Serve until Ctrl-C. Raises ModelError when the model cannot be served."""
    import uvicorn

    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    try:
        listener = socket.create_server((host, port))
    except OSError as e:
        raise ModelError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    failures: list[str] = []

    def stop_serving(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    app = create_app(model_dir, device, api_key, kv_cache_gb, max_batch, max_tokens, stop_serving, precision)
    name = app.state.server.name
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"Loading {name} on {app.state.server.device}, {app.state.server.precision.describe()} precision; serving http://{bound_host}:{bound_port}/ "
          f"(OpenAI API at /v1){' with an API key' if api_key else ''}. Ctrl-C stops.", file=sys.stderr, flush=True)
    grace = 5.0

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if batcher := app.state.server.batcher:
                batcher.end_all_after(grace - 0.5)  # ends the streams before uvicorn cuts them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(RequestLog(app), log_level="warning", access_log=False, timeout_graceful_shutdown=grace)
    server = GracefulServer(config)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it has already handled by shutting down
        pass
    if failures:
        raise ModelError(f"cannot serve {name}: {failures[0]}")
