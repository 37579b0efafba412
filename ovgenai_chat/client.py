"""The client side of `ovchat serve`: `ovchat ps`, `ovchat stop`, and `ovchat run` through a server that keeps its
models loaded, so that a new process answers in the time of one prompt instead of one model load.

This path imports neither openvino nor openvino_genai (a client's start is a fraction of an in-process one): it
speaks HTTP with the standard library, and the chat itself is chat.Chat over a RemoteModel.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from .chat import Chat, Metrics
from .engine import DEFAULT_MODEL, ModelError, Precision

DEFAULT_HOST = "127.0.0.1:8000"  # `ovchat serve`'s default address
CONNECT_SECONDS = 0.5  # how long a client waits to learn whether anything listens at OVCHAT_HOST
ANSWER_SECONDS = 5.0  # and for a server there to answer /health


class ServerError(ModelError):
    """The server refused a request (`reason`: what it said), or went away; the message is one line."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def server_url(host: str | None = None) -> str:
    """The server's base URL from OVCHAT_HOST (or `host`): host, host:port, :port or a http:// URL; default
    DEFAULT_HOST."""
    host = (host if host is not None else os.environ.get("OVCHAT_HOST", "")).strip() or DEFAULT_HOST
    if "://" not in host:
        host = f"http://{host}"
    parts = urlsplit(host)
    if parts.scheme != "http" or not (parts.hostname or parts.port):
        raise ModelError(f"OVCHAT_HOST={host!r} is not a server address: give host:port or http://host:port")
    try:
        port = parts.port or 8000
    except ValueError:
        raise ModelError(f"OVCHAT_HOST={host!r} has no valid port") from None
    hostname = parts.hostname or "127.0.0.1"
    return f"http://{f'[{hostname}]' if ':' in hostname else hostname}:{port}"


class Client:
    """HTTP to one server, with the API key from OVCHAT_API_KEY."""

    def __init__(self, host: str | None = None, api_key: str | None = None):
        self.url = server_url(host)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.api_key = api_key if api_key is not None else os.environ.get("OVCHAT_API_KEY")

    def health(self) -> dict:
        """The server's /health: its models loaded, loading and requests in progress."""
        return self._call("GET", "/health", timeout=CONNECT_SECONDS)

    def answers(self) -> bool:
        """Whether an ovchat server answers at the address."""
        try:
            health = self.health()
        except ServerError:
            return False
        return isinstance(health, dict) and health.get("status") == "ok"

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A connection made within `timeout` seconds (None: no limit), which then waits up to ANSWER_SECONDS for
        each answer (or, with no limit, for ever: a load or a long reply)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        connection.connect()
        connection.sock.settimeout(timeout and ANSWER_SECONDS)
        return connection

    def _send(self, method: str, path: str, body: dict | None, timeout: float | None):
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        connection = None
        try:
            connection = self._connection(timeout)
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            if connection:
                connection.close()
            raise ServerError(f"no ovchat server answers at {self.url} ({getattr(e, 'strerror', None) or e}); "
                              f"start one with `ovchat serve`, or set OVCHAT_HOST") from None
        if response.status >= 400:
            try:
                message = json.loads(response.read())["error"]["message"]
            except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
                message = f"HTTP {response.status} {response.reason}"
            connection.close()
            raise ServerError(f"the server at {self.url} says: {message}", message)
        return connection, response

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        connection, response = self._send(method, path, body, timeout)
        try:
            return json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException):
            raise ServerError(f"the server at {self.url} went away before it answered") from None
        finally:
            connection.close()

    def events(self, path: str, body: dict) -> Iterator[dict]:
        """The data of a server-sent event stream, up to its [DONE]; ServerError when it ends before."""
        connection, response = self._send("POST", path, body, None)
        try:
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException):
                    line = b""
                if not line:
                    raise ServerError(f"the server at {self.url} went away in the middle of the reply")
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    return
                data = json.loads(line[len(b"data: "):])
                if "error" in data:
                    message = data["error"]["message"]
                    raise ServerError(f"the server at {self.url} says: {message}", message)
                yield data
        finally:
            connection.close()

    def ps(self) -> list[dict]:
        return self._call("GET", "/api/ps")["models"]

    def stop(self, name: str) -> dict:
        return self._call("POST", "/api/stop", {"model": name})

    def show(self, model: str | None, options: dict) -> dict:
        return self._call("POST", "/api/show", {"model": model, "options": options})

    def tokenize(self, model: str, messages: list[dict], template_context: dict) -> int:
        return self._call("POST", "/api/tokenize", {"model": model, "messages": messages,
                                                     "chat_template_kwargs": template_context or None})["tokens"]


# `ovchat run`'s settings (generation_config's names) as the chat API takes them
REQUEST_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                  "min_p": "min_p", "repetition_penalty": "repetition_penalty", "seed": "seed", "stop": "stop"}


class RemoteModel:
    """A model a server holds, with what Chat asks of a model (chat.LocalModel is the same in-process)."""

    def __init__(self, client: Client, model: str, keep_alive: str | None = None):
        self.client, self.keep_alive = client, keep_alive
        if model not in {m["name"] for m in client.ps()}:
            print(f"Loading {model} on the server at {client.url}…", file=sys.stderr, flush=True)
        info = client.show(model, {})  # loads it, if it is not loaded
        self.name, self.model_dir, self.device = info["name"], Path(info["path"]), info["device"]
        self.precision = Precision(info["precision"]["name"], info["precision"]["properties"],
                                   info["precision"]["reason"])
        self.context, self.chat_template = info["context"], info["chat_template"] or ""
        self._has_system_role, self.sees_images = info["has_system_role"], info.get("sees_images", False)

    def has_system_role(self) -> bool:
        return self._has_system_role

    def check(self, settings: dict) -> str:
        try:
            return self.client.show(self.name, settings)["settings"]
        except ServerError as e:
            raise ValueError(e.reason) from None

    def count_tokens(self, messages: list[dict], template_context: dict) -> int:
        return self.client.tokenize(self.name, openai_messages(messages), template_context)

    def warm_up(self) -> threading.Thread:
        """Nothing to do: the server ran the model's first inference when it loaded it."""
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread

    def generate(self, messages: list[dict], template_context: dict, settings: dict,
                 on_text: Callable[[str], None] | None, stopped: threading.Event) -> tuple[str, Metrics]:
        body = {"model": self.name, "messages": openai_messages(messages), "stream": True, "stream_options": {"include_usage": True},
                **{REQUEST_FIELDS[name]: value for name, value in settings.items() if value not in (None, ())}}
        if isinstance(body.get("stop"), tuple):
            body["stop"] = list(body["stop"])
        if template_context:
            body["chat_template_kwargs"] = template_context
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        pieces, usage = [], {}
        events = self.client.events("/v1/chat/completions", body)
        try:
            for event in events:
                usage = event.get("usage") or usage
                for choice in event.get("choices", ()):
                    if piece := choice.get("delta", {}).get("content"):
                        pieces.append(piece)
                        if on_text:
                            on_text(piece)
                if stopped.is_set():  # closing the connection cancels the generation on the server
                    break
        finally:
            events.close()
        if not usage:  # a reply stopped early ends before the usage chunk: its prompt counted apart, a token a piece
            usage = {"prompt_tokens": self.count_tokens(messages, template_context), "completion_tokens": len(pieces)}
        timings = usage.get("timings", {})
        return "".join(pieces), Metrics(timings.get("ttft_ms", 0.0), timings.get("tpot_ms", 0.0),
                                        timings.get("throughput_tps", 0.0), usage["prompt_tokens"],
                                        usage["completion_tokens"], self.precision.name,
                                        usage.get("draft_tokens", 0), usage.get("accepted_tokens", 0),
                                        timings.get("tokens_per_pass", 1.0))


def openai_messages(messages: list[dict]) -> list[dict]:
    """Chat's messages as the chat API takes them: a message's pictures as image_url parts with data: URLs, before
    its text."""
    return [{"role": m["role"], "content": [*({"type": "image_url", "image_url": {"url": p.data_url()}}
                                              for p in m["images"]), {"type": "text", "text": m["content"]}]}
            if m.get("images") else m for m in messages]


def connect(model: str | None, keep_alive: str | None = None, **chat) -> Chat | None:
    """A Chat with `model` (None: the default model) through the server at OVCHAT_HOST, or None when no server
    answers there."""
    client = Client()
    if not client.answers():
        return None
    return Chat(RemoteModel(client, model or DEFAULT_MODEL, keep_alive), **chat)


def looks_like_path(model: str | None) -> bool:
    """A model given as a directory, which only this process can open (a server serves names of its store)."""
    return model is not None and (os.sep in model or model.startswith(".") or Path(model).expanduser().is_dir())

