"""The models the server has loaded, as ollama keeps them: a request naming a model loads it (the request waits)
into a runner process of its own (runner.py); it stays loaded for its keep-alive after its last request, and when
the next one would not fit (--max-loaded models, --max-memory bytes) the least recently used idle ones are
unloaded first. A model in use is never unloaded: its requests hold a lease on it, and eviction waits for one to
end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ..engine import ModelError, error_line, model_files, model_precision, sees_images
from ..speculative import own_drafter
from ..store import DEFAULT_MODEL, check_name, default_model_dir, stored
from .schemas import APIError
from .structured import call_format

log = logging.getLogger("ovchat.serve")

# --max-memory's default: a share of the RAM, the rest left to the system and to the page cache, which holds
# each model's weight file for its next load (engine.first_inference).
DEFAULT_MEMORY_SHARE = 0.5
UNSET = object()  # a request that gives no keep_alive: the server's
def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]i?b?|b)?\s*$", re.IGNORECASE)
SCALE = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_memory(text: str) -> int:
    """Bytes from a size as --max-memory takes it: 8GB, 8G, 7.5GiB, 12000MB, a number of bytes, or 60% of the RAM."""
    found = MEMORY.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a memory size: give one like 8GB, 12000MB or 60%")
    number, unit = float(found[1]), (found[2] or "").lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{text!r}: a share of the RAM is between 0 and 100%")
        return int(physical_memory() * number / 100)
    binary = "i" in unit
    scale = SCALE[unit[:1] if unit not in ("", "b") else unit]
    return int(number * (1024 ** ("kmgt".index(unit[0]) + 1) if binary else scale))


@dataclass
class Settings:
    """How the server loads models (`ovchat serve`'s options)."""

    device: str = "CPU"
    precision: str = "auto"
    kv_cache_gb: int = 1
    max_batch: int = 8
    max_tokens: int | None = None
    keep_alive: float | None = 300.0
    max_loaded: int | None = None
    max_memory: int | None = None  # bytes; None: DEFAULT_MEMORY_SHARE of the RAM

    @property
    def memory_budget(self) -> int:
        return self.max_memory or int(physical_memory() * DEFAULT_MEMORY_SHARE)


class Job:
    """One request's way back from its model's runner: ("tokens", text, tokens, finish_reason or None), then
    ("end", finish_reason, speculation: {draft_tokens, accepted_tokens, tokens_per_pass}) or ("error", message)."""

    def __init__(self, job_id: int, loop: asyncio.AbstractEventLoop):
        self.id, self.loop, self.events = job_id, loop, asyncio.Queue()

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            pass


class LoadedModel:
    """A model the server has loaded: its runner process (runner.py), with the leases of the requests using it and
    when it expires."""

    def __init__(self, model_dir: Path, settings: Settings):
        self.model_dir, self.name, self.settings = model_dir, model_dir.name, settings
        self.device = settings.device
        self.precision = model_precision(settings.precision, settings.device, model_dir)
        self.sees_images = sees_images(model_dir)
        self.drafter = own_drafter(model_dir, notify=log.warning)  # for its greedy requests
        self.size_bytes = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
        self.loaded_at = time.time()
        self.active = 0
        self.keep_alive = settings.keep_alive
        self.expires_at: float | None = None  # time.time() when it goes, None: while in use, or never
        self.stopping = False  # `ovchat stop`: unloaded once its requests end
        self.process: subprocess.Popen | None = None
        self.calls: dict[int, asyncio.Future] = {}
        self.jobs: dict[int, Job] = {}
        self.ids = itertools.count()
        self.sending = threading.Lock()

    @property
    def estimated_bytes(self) -> int:
        """What loading should take, before it is measured: the weights (its drafter's too) and the whole KV-cache
        pool."""
        weights = sum(xml.with_suffix(".bin").stat().st_size for model_dir in (self.model_dir, self.drafter
                      and self.drafter.model_dir) if model_dir for xml in model_files(model_dir))
        return weights + (self.settings.kv_cache_gb << 30)

    @property
    def memory_bytes(self) -> int:
        """The runner's resident memory."""
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError, IndexError):
            return 0

    def load(self, loop: asyncio.AbstractEventLoop, on_end) -> None:
        """Start the runner and wait until it has the model on the device (or says why not: ModelError);
        `on_end(self)` is called on the event loop if the runner ends before close()."""
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.serve.runner", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        # The reader thread blocks in recv(): only a shutdown of the socket ends that (a close would wait for it).
        self.socket, self.connection = ours, Connection(os.dup(ours.fileno()))
        s = self.settings
        self.connection.send((self.model_dir, self.device, self.precision, s.kv_cache_gb, s.max_batch, s.max_tokens,
                              self.drafter))
        try:
            kind, found = self.connection.recv()
        except (EOFError, OSError):
            self.process.wait()
            raise ModelError(f"cannot load {self.name}: its process ended (exit status {self.process.returncode})") from None
        if kind == "failed":
            raise ModelError(found)
        self.chat_template, self.has_system_role, self.context = (found["chat_template"], found["has_system_role"],
                                                                   found["context"])
        self.takes_tools, self.tool_calls = "tools" in self.chat_template, call_format(self.chat_template)
        self.loop, self.on_end, self.closing = loop, on_end, False
        threading.Thread(target=self._read, name=f"ovchat-runner-{self.name}", daemon=True).start()

    def _read(self) -> None:
        """Hand the runner's answers to the calls and jobs waiting for them, until it ends."""
        while True:
            try:
                kind, key, *data = self.connection.recv()
            except (EOFError, OSError):
                break
            if kind == "job":
                if job := self.jobs.get(key):
                    job.post(*data)
            elif future := self.calls.pop(key, None):
                self.loop.call_soon_threadsafe(_settle, future, kind, data[0])
        ended = APIError(500, f"the process of {self.name} ended", "server_error")
        for future in list(self.calls.values()):
            self.loop.call_soon_threadsafe(_settle, future, "refused", (500, ended.message, ended.kind, None, None))
        for job in list(self.jobs.values()):
            job.post("error", ended.message)
        if not self.closing:
            self.loop.call_soon_threadsafe(self.on_end, self)

    def _send(self, *message) -> None:
        with self.sending:
            try:
                self.connection.send(message)
            except OSError:
                raise APIError(500, f"the process of {self.name} ended", "server_error") from None

    async def call(self, method: str, *arguments):
        """What the runner's Model.`method` returns, or the APIError it raised."""
        call_id = next(self.ids)
        future = self.calls[call_id] = asyncio.get_running_loop().create_future()
        self._send("call", call_id, method, arguments)
        return await future

    async def generate(self, body, tools=None) -> tuple[Job, int]:
        """Start generating for a request (its body, and the tools it lets the model call): its job and the
        prompt's token count; an APIError when the request cannot be served."""
        job = Job(next(self.ids), asyncio.get_running_loop())
        self.jobs[job.id] = job
        try:
            prompt_tokens = await self.call("prepare", job.id, body, tools)
            await self.call("start", job.id)
        except BaseException:
            self.end(job, cancel=True)
            raise
        return job, prompt_tokens

    def end(self, job: Job, cancel: bool) -> None:
        """Forget a job; `cancel` stops its generation too, which frees its KV blocks."""
        self.jobs.pop(job.id, None)
        if cancel:
            with contextlib.suppress(APIError):
                self._send("call", None, "cancel", (job.id,))

    def end_all_after(self, seconds: float) -> None:
        with contextlib.suppress(APIError):
            self._send("call", None, "end_all_after", (seconds,))

    def close(self) -> None:
        """End the runner: it sees its connection end; a runner that does not end in 30 s is killed."""
        if self.process is None:
            return
        self.closing = True
        with contextlib.suppress(AttributeError, OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
            self.socket.close()
            self.connection.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def status(self) -> dict:
        """What `ovchat ps` lists."""
        expires = None if self.expires_at is None else time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                      time.localtime(self.expires_at))
        return {"name": self.name, "path": str(self.model_dir), "device": self.device,
                "precision": self.precision.name, "drafter": self.drafter.describe() if self.drafter else None, "memory_bytes": self.memory_bytes, "size_bytes": self.size_bytes,
                "active_requests": self.active, "expires_at": expires,
                "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - time.time()),
                "keep_alive": self.keep_alive, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                          time.localtime(self.loaded_at))}


def _settle(future: asyncio.Future, kind: str, value) -> None:
    if future.done():
        return
    if kind == "reply":
        future.set_result(value)
    else:
        future.set_exception(APIError(*value))


class Lease:
    """A request's use of a loaded model; release() (once, however often called) lets it expire or be evicted."""

    def __init__(self, registry: "Registry", model: LoadedModel, keep_alive):
        self.registry, self.model, self.keep_alive, self.released = registry, model, keep_alive, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.registry.release(self)


class Registry:
    """Every loaded model by name, least recently used first. Loads and unloads happen one at a time, off the
    event loop; requests for a model being loaded wait for that load."""

    def __init__(self, settings: Settings, served: Path | None = None):
        self.settings, self.served = settings, served
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loading: dict[str, asyncio.Future] = {}
        self.residency = asyncio.Lock()  # one load or unload at a time
        self.changed = asyncio.Event()  # a lease ended or a keep-alive changed
        self.reaper: asyncio.Task | None = None

    def start(self) -> None:
        self.reaper = asyncio.get_running_loop().create_task(self._reap())

    def is_served(self, name: str) -> bool:
        return self.served is not None and name == self.served.name

    def default_name(self) -> str:
        """The model a request without `model` gets: `ovchat serve MODEL`'s, else the default model."""
        return self.served.name if self.served else DEFAULT_MODEL

    def model_dir(self, name: str) -> Path:
        """The directory of a model a request names: the served one or a store name (never a path: a request
        does not choose files), the default model imported on first use; else a 404 naming the close ones."""
        if self.is_served(name):
            return self.served
        try:
            if name == DEFAULT_MODEL:
                return default_model_dir()
            return stored(check_name(name))
        except ModelError as e:
            raise APIError(404, str(e), "invalid_request_error", "model_not_found", "model") from None

    async def lease(self, name: str | None, keep_alive=UNSET) -> Lease:
        """A lease on the model `name` (None: default_name()), loading it first if it is not loaded."""
        name = name or self.default_name()
        while True:
            if (model := self.loaded.get(name)) is not None:
                self.loaded.move_to_end(name)
                model.active += 1
                model.expires_at = None
                return Lease(self, model, keep_alive)
            if name not in self.loading:
                self.loading[name] = asyncio.get_running_loop().create_task(self._load(name))
            load = self.loading[name]
            try:
                await asyncio.shield(load)
            finally:
                if load.done() and self.loading.get(name) is load:
                    del self.loading[name]

    async def _load(self, name: str) -> None:
        model = LoadedModel(await asyncio.to_thread(self.model_dir, name), self.settings)
        async with self.residency:
            await self._make_room(model.estimated_bytes)
            try:
                await asyncio.to_thread(model.load, asyncio.get_running_loop(), self._lost)
            except Exception as e:
                await asyncio.to_thread(model.close)
                message = str(e) if isinstance(e, ModelError) else f"cannot load {name}: {error_line(e)}"
                log.error("%s", message)
                raise APIError(500, message, "server_error", "model_load_failed", "model") from None
            model.loaded_at = time.time()
            if self.is_served(name):
                model.keep_alive = None  # the model `ovchat serve MODEL` names stays until stopped or evicted
            self.loaded[name] = model
            self._expire_later(model)

    def _lost(self, model: LoadedModel) -> None:
        """A runner that ended by itself (it crashed, or was killed): its model is no longer loaded; the next
        request for it loads it again."""
        if self.loaded.get(model.name) is model:
            del self.loaded[model.name]
        model.process.wait()
        log.error("the process of %s ended by itself (exit status %s); it loads again on its next request",
                  model.name, model.process.returncode)
        self.changed.set()

    async def _make_room(self, needed: int) -> None:
        """Unload the least recently used idle models until one more of `needed` bytes fits; wait for a request
        to end while every loaded model is in use."""
        budget, limit = self.settings.memory_budget, self.settings.max_loaded
        while self.loaded:
            used = sum(m.memory_bytes for m in self.loaded.values())
            if (limit is None or len(self.loaded) < limit) and used + needed <= budget:
                return
            idle = next((m for m in self.loaded.values() if m.active == 0), None)
            if idle is None:
                self.changed.clear()
                await self.changed.wait()
                continue
            log.warning("unloading %s to make room (%.0f MB in use of %.0f MB)", idle.name, used / 1e6, budget / 1e6)
            await self._unload(idle)
        if needed > budget:
            log.warning("a model of about %.0f MB is loaded alone, over --max-memory (%.0f MB)", needed / 1e6,
                        budget / 1e6)

    async def _unload(self, model: LoadedModel) -> None:
        """Called holding `residency`, for an idle model."""
        self.loaded.pop(model.name, None)
        freed = model.memory_bytes
        await asyncio.to_thread(model.close)
        log.warning("unloaded %s (%.0f MB freed)", model.name, freed / 1e6)

    def release(self, lease: Lease) -> None:
        model = lease.model
        model.active -= 1
        if model.stopping:
            model.keep_alive = 0
        elif lease.keep_alive is not UNSET:  # the last request's keep-alive holds, as in ollama
            model.keep_alive = lease.keep_alive
        elif not self.is_served(model.name):
            model.keep_alive = self.settings.keep_alive
        self._expire_later(model)
        self.changed.set()

    def _expire_later(self, model: LoadedModel) -> None:
        if model.active == 0:
            model.expires_at = None if model.keep_alive is None else time.time() + model.keep_alive

    async def stop(self, name: str) -> bool:
        """Unload `name` now, or once its requests end (True: it was unloaded now); a 404 if it is not loaded."""
        model = self.loaded.get(name)
        if model is None:
            raise APIError(404, f"{name} is not loaded", "invalid_request_error", "model_not_loaded", "model")
        model.stopping = True
        if model.active:
            return False
        model.expires_at = time.time()
        await self._reap_once()
        return name not in self.loaded

    async def _reap_once(self) -> None:
        async with self.residency:
            now = time.time()
            for model in list(self.loaded.values()):
                if model.active == 0 and model.expires_at is not None and model.expires_at <= now:
                    await self._unload(model)

    async def _reap(self) -> None:
        """Unload each model whose keep-alive has run out, waking at the next expiry or when a lease ends."""
        while True:
            expiries = [m.expires_at for m in self.loaded.values() if m.active == 0 and m.expires_at is not None]
            wait = max(0.0, min(expiries) - time.time()) if expiries else None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), wait)
            except asyncio.TimeoutError:
                pass
            await self._reap_once()

    def end_all_after(self, seconds: float) -> None:
        for model in self.loaded.values():
            model.end_all_after(seconds)

    async def close(self) -> None:
        if self.reaper:
            self.reaper.cancel()
        for load in list(self.loading.values()):
            with contextlib.suppress(BaseException):
                await load
        for model in list(self.loaded.values()):
            await asyncio.to_thread(model.close)
        self.loaded.clear()

    def status(self) -> list[dict]:
        return [model.status() for model in reversed(self.loaded.values())]  # the most recently used first
