"""The batching engine of one loaded model: a ContinuousBatchingPipeline stepped on its own thread, so that
concurrent requests share each generation step.

The thread makes every call into the pipeline: the bindings hold the GIL through step() and block in read(), so
calling them from the event loop would stall or deadlock it. The event loop hands that thread requests and
cancellations through a queue, and each request gets its tokens back through an asyncio.Queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time

log = logging.getLogger("ovchat.serve")
SHUTTING_DOWN = "the server is shutting down"


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

