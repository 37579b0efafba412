"""The batching engine of one loaded model, in its runner process (runner.py): a ContinuousBatchingPipeline
stepped on its own thread, so that concurrent requests share each generation step (or, for a model paged
attention cannot compute, an LLMPipeline that answers one request after another).

The thread makes every call into the pipeline; the runner hands it requests and cancellations through a queue,
and each request's job hears back ("tokens", ids, finish_reason or None), then ("end", finish_reason[, counts]) or
("error", message).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from ..chat import speculation

log = logging.getLogger("ovchat.serve")
SHUTTING_DOWN = "the server is shutting down"


class Batcher:
    """Runs the ContinuousBatchingPipeline's steps on its own thread while there is work."""

    def __init__(self, pipe):
        import openvino_genai

        self.pipe = pipe
        self._status = openvino_genai.GenerationStatus
        reasons = openvino_genai.GenerationFinishReason
        self._finish_reasons = {reasons.LENGTH: "length", reasons.STOP: "stop"}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._live: dict[int, tuple[object, object]] = {}  # job id → (job, GenerationHandle)
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="ovchat-batcher", daemon=True)
        self._thread.start()

    def submit(self, job, ids: list[int], config, with_pictures: tuple | None = None) -> None:
        """Generate for `job` (an `id` and a `post(*event)`) from the prompt's token ids or, for a model that sees
        images, `with_pictures`: (the prompt's text with GenAI's image tags, its images.Pictures)."""
        self._commands.put(("add", job, ids, config, with_pictures))

    def cancel(self, job_id: int) -> None:
        self._commands.put(("cancel", job_id))

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
                elif kind == "cancel" and (entry := self._live.pop(job, None)):
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

    def _add(self, job, ids: list[int], config, with_pictures: tuple | None) -> None:
        import numpy as np
        import openvino as ov

        try:
            if with_pictures is not None:  # GenAI expands each image tag of the text into the picture's tokens
                prompt, pictures = with_pictures
                config.apply_chat_template = False
                handle = self.pipe.add_request(job.id, prompt, [p.tensor() for p in pictures], config)
            else:
                handle = self.pipe.add_request(job.id, ov.Tensor(np.array([ids], dtype=np.int64)), config)
        except Exception as e:
            job.post("error", f"cannot start generation: {e}")
            return
        self._live[job.id] = (job, handle)

    def _collect(self) -> None:
        for job_id, (job, handle) in list(self._live.items()):
            done = handle.get_status() != self._status.RUNNING
            finish, ids = None, []
            while handle.can_read():  # what this step gave, in one event: a drafted pass gives several tokens
                for output in handle.read().values():
                    finish = self._finish_reasons.get(output.finish_reason)
                    ids += output.generated_ids
            if ids or finish:
                job.post("tokens", ids, finish)
            if done or finish:
                del self._live[job_id]
                if handle.get_status() == self._status.IGNORED:
                    job.post("error", "not enough KV-cache memory for this request (see --kv-cache)")
                else:
                    job.post("end", finish or "stop")


class OneAtATime:
    """Batcher's interface over an LLMPipeline (stateful SDPA), for a model paged attention cannot compute (Gemma
    2's soft-capped attention scores: OpenVINO's paged attention has no soft cap; a Gemma 4 with its assistant's
    outputs): one request after another."""

    def __init__(self, pipe):
        import openvino_genai

        self.pipe, self._status = pipe, openvino_genai.StreamingStatus
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled: set[int] = set()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="ovchat-one-at-a-time", daemon=True)
        self._thread.start()

    def submit(self, job, ids: list[int], config, with_pictures: tuple | None = None) -> None:
        if with_pictures is not None:  # never sent: a model that sees images is on a ContinuousBatchingPipeline
            raise ValueError("an LLMPipeline takes no pictures")
        self._commands.put((job, ids, config))

    def cancel(self, job_id: int) -> None:
        self._cancelled.add(job_id)

    def close(self) -> None:
        self._deadline = time.monotonic()
        self._commands.put(None)
        self._thread.join()

    def end_all_after(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def _ending(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _run(self) -> None:
        while (command := self._commands.get()) is not None:
            job, ids, config = command
            if job.id in self._cancelled:
                continue
            if self._ending():
                job.post("error", SHUTTING_DOWN)
                continue
            self._generate(job, ids, config)
        while not self._commands.empty():  # closed: the requests still waiting end too
            if command := self._commands.get():
                command[0].post("error", SHUTTING_DOWN)

    def _generate(self, job, ids: list[int], config) -> None:
        import numpy as np
        import openvino as ov
        import openvino_genai

        batcher, generated = self, [0]

        class Streamer(openvino_genai.StreamerBase):
            def write(self, token):
                tokens = [token] if isinstance(token, int) else list(token)
                generated[0] += len(tokens)
                job.post("tokens", tokens, None)
                if job.id in batcher._cancelled or batcher._ending():
                    return batcher._status.CANCEL
                return batcher._status.RUNNING

            def end(self):
                pass

        try:
            result = self.pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), config, Streamer())
        except Exception as e:  # one request's failure, not the model's
            log.error("generation failed: %s", e)
            job.post("error", f"generation failed: {e}")
            return
        if job.id in self._cancelled:
            self._cancelled.discard(job.id)
        elif self._ending():
            job.post("error", SHUTTING_DOWN)
        else:
            counts = dict(zip(("draft_tokens", "accepted_tokens", "tokens_per_pass"), speculation(result, None)))
            job.post("end", "length" if generated[0] >= config.max_new_tokens else "stop", counts)


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

