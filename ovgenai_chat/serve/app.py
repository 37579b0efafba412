"""`ovchat serve`: the OpenAI chat and completions API, and ovchat's own /api (ps, stop, show, tokenize), over the
models of the store, each loaded on demand into its own batching engine (registry.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import sys
import time
from importlib import resources
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import ModelError, check_model_dir, keep_telemetry_off, pick_device
from ..store import default_available, names
from .registry import UNSET, Job, Lease, LoadedModel, Registry, Settings
from .schemas import (APIError, ChatRequest, CompletionRequest, ModelRequest, Sampling, ShowRequest, TokenizeRequest,
                      parse_duration)

log = logging.getLogger("ovchat.serve")


def error_response(status: int, message: str, kind: str, code: str | None = None, param: str | None = None):
    """An error in OpenAI's shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def create_app(model_dir=None, device: str = "auto", api_key: str | None = None, kv_cache_gb: int = 1,
               max_batch: int = 8, max_tokens: int | None = None, on_load_failure=lambda message: None,
               precision: str = "auto", keep_alive: float | None = 300.0, max_loaded: int | None = None,
               max_memory: int | None = None) -> FastAPI:
    """The ASGI app over the store's models; `model_dir` (if given) loads in the background once the app starts,
    and `on_load_failure` hears why it could not."""
    import openvino as ov

    keep_telemetry_off()
    served = check_model_dir(model_dir) if model_dir is not None else None
    device, notice = pick_device(device, ov.Core().available_devices)
    if notice:
        print(notice, file=sys.stderr)
    settings = Settings(device, precision, kv_cache_gb, max_batch, max_tokens, keep_alive, max_loaded, max_memory)
    registry = Registry(settings, served)

    async def load_served():
        try:
            (await registry.lease(served.name)).release()
        except APIError as e:
            on_load_failure(e.message)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        registry.start()
        loading = asyncio.get_running_loop().create_task(load_served()) if served else None
        yield
        if loading:
            await loading
        await registry.close()

    app = FastAPI(title="ovgenai-chat", version="1", lifespan=lifespan,
                  description="OpenAI-compatible API for the models of the ovchat store, on OpenVINO GenAI")
    app.state.registry = registry
    bearer = HTTPBearer(auto_error=False)

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_key and (credentials is None or not secrets.compare_digest(credentials.credentials, api_key)):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error_response(error.status, error.message, error.kind, error.code, error.param)

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
        """200 while the server runs, whether or not a model is loaded."""
        return {"status": "ok", "loaded": len(registry.loaded), "loading": len(registry.loading),
                "active_requests": sum(m.active for m in registry.loaded.values())}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("ovgenai_chat").joinpath("web/index.html").read_text()

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        """The models a request may name, the default one first: the store's and the one `ovchat serve MODEL`
        names; `loaded` says which are on the device."""
        default = [registry.default_name()] if served or default_available() else []
        listed = dict.fromkeys([*default, *registry.loaded, *names()])
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": int(registry.loaded[name].loaded_at) if name in registry.loaded
             else 0, "owned_by": "ovgenai-chat", "loaded": name in registry.loaded} for name in listed]}

    @app.get("/api/ps", dependencies=[Depends(authorize)])
    async def ps():
        """The loaded models, the most recently used first."""
        return {"models": registry.status()}

    @app.post("/api/stop", dependencies=[Depends(authorize)])
    async def stop(body: ModelRequest):
        """Unload a model now, or once the requests using it end."""
        name = body.model or registry.default_name()
        return {"model": name, "unloaded": await registry.stop(name)}

    @app.post("/api/show", dependencies=[Depends(authorize)])
    async def show(body: ShowRequest):
        """Load a model if it is not loaded, and say what `ovchat run` needs of it; with `options`, check those
        generation settings and describe the ones a reply would use."""
        lease = await registry.lease(body.model)
        try:
            live = lease.model
            return {"name": live.name, "path": str(live.model_dir), "device": live.device,
                    "precision": {"name": live.precision.name, "reason": live.precision.reason,
                                  "properties": live.precision.properties},
                    "context": live.context, "chat_template": live.chat_template, "sees_images": live.sees_images,
                    "has_system_role": live.has_system_role, "settings": await live.call("settings", body.options)}
        finally:
            lease.release()

    @app.post("/api/tokenize", dependencies=[Depends(authorize)])
    async def tokenize(body: TokenizeRequest):
        """How many tokens the messages take as a prompt, through the model's chat template."""
        lease = await registry.lease(body.model)
        try:
            tokens = await lease.model.call("tokens", [m.for_template() for m in body.messages],
                                            body.chat_template_kwargs)
            return {"model": lease.model.name, "tokens": tokens}
        finally:
            lease.release()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatRequest, request: Request):
        request.state.started = time.perf_counter()
        lease = await take(body)
        try:
            tools = body.tools if body.tools and body.tool_choice != "none" else None
            if tools and not lease.model.takes_tools:
                raise APIError(400, f"the chat template of {lease.model.name} takes no tools", param="tools")
            job, prompt_tokens = await lease.model.generate(body, tools)
        except BaseException:
            lease.release()
            raise
        return await respond(request, lease, body, job, prompt_tokens, "chat.completion", tools is not None)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: CompletionRequest, request: Request):
        request.state.started = time.perf_counter()
        lease = await take(body)
        try:
            job, prompt_tokens = await lease.model.generate(body)
        except BaseException:
            lease.release()
            raise
        return await respond(request, lease, body, job, prompt_tokens, "text_completion")

    async def take(body: Sampling) -> Lease:
        return await registry.lease(body.model, UNSET if body.keep_alive is None else parse_duration(body.keep_alive))

    return app


async def generate(request: Request, lease: Lease, job: Job, prompt_tokens: int) -> AsyncIterator[tuple[str, str | None]]:
    """(text piece, finish reason or None) as the model's runner makes them, then the lease ends. Leaving early — a
    client that went away — cancels the generation, which frees its KV blocks."""
    state = request.state
    state.prompt_tokens, state.completion_tokens = prompt_tokens, 0
    finished = False
    try:
        while True:
            kind, *data = await job.events.get()
            if kind == "error":
                finished = True
                raise APIError(500, data[0], "server_error")
            if kind == "end":
                finished = True
                state.seconds = time.perf_counter() - state.started
                state.speculation = data[1]
                yield "", data[0]
                return
            piece, tokens, _ = data
            if state.completion_tokens == 0:
                state.ttft_ms = (time.perf_counter() - state.started) * 1000
            state.completion_tokens += tokens
            yield piece, None
    finally:
        lease.model.end(job, cancel=not finished)
        lease.release()


def timings(state) -> dict:
    """ovchat's extension of `usage`: the reply's time to first token and per output token, as the server saw them,
    and its tokens per pass of the model (more than 1 where a drafter's tokens were accepted): the metrics
    `ovchat run --json` prints."""
    ttft = getattr(state, "ttft_ms", 0.0)
    after_first = state.completion_tokens - 1
    tpot = (getattr(state, "seconds", 0.0) * 1000 - ttft) / after_first if after_first > 0 else 0.0
    return {"ttft_ms": ttft, "tpot_ms": tpot, "throughput_tps": 1000 / tpot if tpot > 0 else 0.0,
            "tokens_per_pass": speculation(state)["tokens_per_pass"]}


def speculation(state) -> dict:
    """What the model's drafter did for the reply (runner.Job): draft_tokens, accepted_tokens, tokens_per_pass."""
    return getattr(state, "speculation", None) or {"draft_tokens": 0, "accepted_tokens": 0, "tokens_per_pass": 1.0}


async def respond(request: Request, lease: Lease, body: Sampling, job: Job, prompt_tokens: int, kind: str,
                  with_tools: bool = False):
    live = lease.model
    made = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{secrets.token_hex(12)}",
            "created": int(time.time()), "model": live.name}

    def usage() -> dict:
        prompt, completion = request.state.prompt_tokens, request.state.completion_tokens
        drafted = speculation(request.state)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "draft_tokens": drafted["draft_tokens"], "accepted_tokens": drafted["accepted_tokens"],
                "timings": timings(request.state)}

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
        async for piece, finish in generate(request, lease, job, prompt_tokens):
            pieces.append(piece)
        text = "".join(pieces)
        if with_tools and (found := live.tool_calls.parse(text))[1]:
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
            async for piece, finish in generate(request, lease, job, prompt_tokens):
                if not with_tools:
                    if piece or finish:
                        yield event({**made, "object": chunk_kind, "choices": [choice(piece, finish)]})
                    continue
                text += piece
                if finish is None:
                    safe = live.tool_calls.streamable(text)
                    if safe > sent:
                        yield chunk({"content": text[sent:safe]})
                        sent = safe
                    continue
                content, calls = live.tool_calls.parse(text[sent:])
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

    async def leased():
        pieces = stream()
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()  # cancels the generation of a client that went away
            lease.release()

    # Started here, not by the response: a generator that has started is closed when it is dropped, so the lease
    # ends even when the client is gone before the response would have begun to stream.
    chunks = leased()
    first = await anext(chunks)

    async def started():
        try:
            yield first
            async for piece in chunks:
                yield piece
        finally:
            await chunks.aclose()

    return StreamingResponse(started(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


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



def serve(model_dir=None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          device: str = "auto", kv_cache_gb: int = 1, max_batch: int = 8, max_tokens: int | None = None,
          precision: str = "auto", keep_alive: float | None = 300.0, max_loaded: int | None = None,
          max_memory: int | None = None) -> None:
    """Serve until Ctrl-C: `model_dir` loaded at once (if given), the store's models on demand. Raises ModelError
    when the server cannot listen, or `model_dir` cannot be served."""
    import uvicorn

    from ..engine import models_dir

    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    try:
        listener = socket.create_server((host, port))
    except OSError as e:
        raise ModelError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    failures: list[str] = []

    def stop_serving(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    app = create_app(model_dir, device, api_key, kv_cache_gb, max_batch, max_tokens, stop_serving, precision,
                     keep_alive, max_loaded, max_memory)
    registry: Registry = app.state.registry
    settings = registry.settings
    bound_host, bound_port = listener.getsockname()[:2]
    kept = "for ever" if keep_alive is None else f"for {keep_alive:g} s after their last request"
    on_demand = f"the models of {models_dir()} load on demand on {settings.device} and stay {kept}"
    if registry.served:
        chosen = LoadedModel(registry.served, settings).precision
        what = f"Loading {registry.served.name} on {settings.device}, {chosen.describe()} precision; {on_demand}"
    else:
        what = on_demand[0].upper() + on_demand[1:]
    print(f"{what}; serving http://{bound_host}:{bound_port}/ (OpenAI API at /v1){' with an API key' if api_key else ''}"
          f". Ctrl-C stops.", file=sys.stderr, flush=True)
    grace = 5.0

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            registry.end_all_after(grace - 0.5)  # ends the streams before uvicorn cuts them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(RequestLog(app), log_level="warning", access_log=False, timeout_graceful_shutdown=grace)
    server = GracefulServer(config)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it has already handled by shutting down
        pass
    if failures:
        raise ModelError(f"cannot serve {registry.served.name}: {failures[0]}")
