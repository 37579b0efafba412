"""One loaded model in a process of its own, as ollama runs each model in a runner.

OpenVINO GenAI's bindings hold the GIL through a pipeline's step(): in the server's process a 1500-token prefill of
a Phi-3-mini-size model left /health unanswered for 5.8 s, and every other model's streams with it. In a runner a
step stalls nothing but its own model, two models compute at once, and unloading a model ends its process, which
gives back all of its memory.

The server (registry.Runner) talks to the runner over a socket pair with multiprocessing's Connection (pickled
tuples). It sends ("call", call id, method, arguments) and hears ("reply", call id, value) or ("refused", call id,
APIError's fields); a request's generation is prepared by a call and then started, and its text comes back as
("job", job id, "tokens", text, tokens, finish_reason or None) per pass of the model, then ("job", job id, "end",
finish_reason, speculation: {draft_tokens, accepted_tokens, tokens_per_pass}) or ("job", job id, "error", message). The runner ends when the server closes the connection, or goes away.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from ..chat import check_settings, generation_config, template_has_system_role
from ..engine import (ModelError, Precision, context_window, error_line, first_inference, has_linear_state,
                      keep_telemetry_off, language_model, sees_images)
from ..speculative import MTP_OUTPUT
from ..images import ImageError, check_text, from_data_url, image_tags
from .batching import Batcher, IncrementalText, OneAtATime
from .schemas import APIError, ChatRequest, CompletionRequest, Sampling
from .structured import GrammarCheck, call_format, structured_output

log = logging.getLogger("ovchat.serve")


class Job:
    """A request's way back to the server: its tokens as text, each pass of the model's at once, and at its end what
    speculative decoding did: the candidates its drafter proposed (`drafted` per pass after the first, fewer where
    the reply's max_new_tokens leaves less room: as GenAI counts them) and how many the model accepted (the reply's
    tokens less its passes: a pass gives one token of the model's own and the candidates it accepted)."""

    def __init__(self, job_id: int, tokenizer, send, drafted: int = 0, max_new_tokens: int = 0):
        self.id, self.text, self.send = job_id, IncrementalText(tokenizer), send
        self.drafted, self.max_new_tokens = drafted, max_new_tokens
        self.passes = self.tokens = self.candidates = 0

    def post(self, kind: str, *data) -> None:
        if kind == "tokens":
            ids, finish = data
            if ids and self.passes and self.drafted:
                self.candidates += max(0, min(self.drafted, self.max_new_tokens - self.tokens - 1))
            self.passes, self.tokens = self.passes + bool(ids), self.tokens + len(ids)
            self.send("job", self.id, "tokens", self.text.add(ids), len(ids), finish)
        elif kind == "end":  # OneAtATime gives GenAI's counts: its streamer may hear a pass's tokens one by one
            finish, *counted = data
            self.send("job", self.id, "end", finish, counted[0] if counted else {
                "draft_tokens": self.candidates, "accepted_tokens": self.tokens - self.passes if self.drafted else 0,
                "tokens_per_pass": self.tokens / self.passes if self.passes else 1.0})
        else:
            self.send("job", self.id, kind, *data)


class Model:
    """The model on the device: its batching engine, tokenizer and what its requests need."""

    def __init__(self, model_dir: Path, device: str, precision: Precision, kv_cache_gb: int, max_batch: int,
                 max_tokens: int | None, drafter=None):
        self.model_dir, self.name, self.device, self.precision = model_dir, model_dir.name, device, precision
        self.kv_cache_gb, self.max_batch, self.max_tokens = kv_cache_gb, max_batch, max_tokens
        self.context = context_window(model_dir)
        # GenAI makes paged attention from the model's ScaledDotProductAttention ops; a model whose attention is
        # computed op by op (Gemma 2's soft-capped scores) has none, and is answered one request at a time.
        # A Gemma 4 converted with what its assistant drafter reads (speculative.MTP_OUTPUT) neither: paged attention
        # cannot run those outputs ("Model references undeclared parameters: beam_idx").
        self.sees_images = sees_images(model_dir)
        graph = language_model(model_dir).read_text(errors="replace")
        self.batchable = 'type="ScaledDotProductAttention"' in graph and MTP_OUTPUT not in graph
        # The model's own drafter (speculative.Drafter) drafts its greedy requests: on paged attention, but for a
        # Gemma 4 assistant, which drafts only on the stateful pipeline.
        self.drafter = drafter if drafter and drafter.stateful != self.batchable else None
        if drafter and not self.drafter:
            log.warning("%s is answered %s paged attention, where GenAI cannot draft with its %s: serving it without",
                        self.name, "on" if self.batchable else "without", drafter.name)
        self.sampling = None  # a drafted model's sampled requests go to a batcher without the drafter, made on the first
        # job id → (prompt ids, config, (prompt, pictures) for a model that sees images), until started
        self.prepared: dict[int, tuple[list[int], object, tuple | None]] = {}

    def load(self) -> dict:
        """Compile the model and run its first inference (engine.first_inference) before any request waits on it;
        what the server needs to know of it."""
        import openvino_genai

        started = time.perf_counter()
        pipe = self._pipeline(self.drafter)
        # a fresh copy of the model's generation config per call
        self.defaults = pipe.get_config if self.batchable else pipe.get_generation_config
        self.tokenizer = pipe.get_tokenizer()
        self.chat_template = self.tokenizer.chat_template or ""
        self.tool_calls = call_format(self.chat_template)
        config = self.defaults()
        config.max_new_tokens, config.apply_chat_template = 1, False
        if self.drafter:
            config.do_sample = False  # a draft model or MTP head drafts greedy replies only
            self.drafter.configure(config)
        with first_inference():
            if self.sees_images:  # a small grey picture, so that the vision model has run too
                import numpy as np
                import openvino as ov

                pipe.generate(["<ov_genai_image_0>Hello"], images=[[ov.Tensor(np.full((32, 32, 3), 128, np.uint8))]],
                              generation_config=[config])
            elif self.batchable:
                pipe.generate(["Hello"], [config])
            else:
                pipe.generate(self.tokenizer.encode("Hello").input_ids, config)  # as requests come: token ids
        self.batcher = self._batcher(pipe)
        drafted = f", greedy requests drafted by its {self.drafter.describe()}" if self.drafter else ""
        log.warning("model %s ready on %s in %.1f s, %s precision%s", self.name, self.device,
                    time.perf_counter() - started, self.precision.describe(), drafted)
        return {"chat_template": self.chat_template, "has_system_role": template_has_system_role(self.tokenizer),
                "context": self.context}

    def _pipeline(self, drafter):
        """The model's ContinuousBatchingPipeline (or, where it is not batchable, LLMPipeline on the stateful SDPA
        backend), drafting with `drafter` (or not: None); ModelError if it cannot load."""
        import openvino_genai

        properties = dict(self.precision.properties)
        if drafter:
            properties.update(drafter.pipeline_properties(self.device, self.precision.properties))
        try:
            if not self.batchable:
                return openvino_genai.LLMPipeline(self.model_dir, self.device, ATTENTION_BACKEND="SDPA", **properties)
            return openvino_genai.ContinuousBatchingPipeline(str(self.model_dir), self._scheduler(drafter), self.device,
                                                             properties=properties)
        except RuntimeError as e:
            with_drafter = f" with its drafter {drafter.model_dir.name}" if drafter else ""
            raise ModelError(f"cannot load {self.name}{with_drafter} on {self.device}: {error_line(e)}") from None

    def _scheduler(self, drafter=None):
        import openvino_genai

        scheduler = openvino_genai.SchedulerConfig()
        # A fixed KV pool, in whole GB (the binding takes an integer): memory stays bounded on a small device.
        scheduler.cache_size = self.kv_cache_gb
        scheduler.max_num_seqs = self.max_batch
        # A chat resends its history every turn; GenAI verifies drafts for a model with linear-attention state only
        # without prefix caching (engine.drafting_scheduler).
        scheduler.enable_prefix_caching = not (drafter and has_linear_state(self.model_dir))
        scheduler.dynamic_split_fuse = True
        return scheduler

    def _batcher(self, pipe):
        return Batcher(pipe) if self.batchable else OneAtATime(pipe)

    def _batcher_for(self, config):
        """The batcher that generates a request: a drafted model's sampled requests go without its drafter, which
        drafts greedy replies only (speculative.Drafter.samples), to a pipeline opened on the first of them."""
        if self.drafter is None or self.drafter.samples or not config.do_sample:
            return self.batcher
        if self.sampling is None:
            log.warning("%s: a sampled request; opening the model a second time, without its drafter, for those",
                        self.name)
            self.sampling = self._batcher(self._pipeline(None))
        return self.sampling

    @functools.cached_property
    def grammar(self) -> GrammarCheck:
        """Made on the first request for structured output: most models never need it, and it costs a pipeline."""
        import openvino as ov

        logits = ov.Core().read_model(language_model(self.model_dir)).output("logits")
        return GrammarCheck(self.model_dir, logits.get_partial_shape()[-1].get_length())

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).input_ids.data[0].tolist()

    def render(self, messages: list[dict], tools: list[dict] | None = None, template_context: dict | None = None) -> str:
        """The prompt: the messages through the chat template, their pictures (`images`) as GenAI's image tags."""
        try:
            return self.tokenizer.apply_chat_template(image_tags(messages)[0], add_generation_prompt=True, tools=tools,
                                                      extra_context=template_context or None)
        except Exception as e:  # the template may refuse an order of roles
            raise APIError(400, f"the chat template cannot render these messages: {error_line(e)}",
                           param="messages") from None

    def pictures(self, messages: list[dict]) -> list:
        """The messages' pictures, decoded (a whole conversation's: it goes as one prompt), or a 400."""
        urls = [(n, url) for n, message in enumerate(messages) for url in message.get("images", ())]
        if urls and not self.sees_images:
            raise APIError(400, f"{self.name} does not see images (it has no vision model); send text only, or "
                                f"name a model that sees images", param="messages")
        try:
            if self.sees_images:
                check_text(messages)
            return [from_data_url(url, f"the picture in messages[{n}]") for n, url in urls]
        except ImageError as e:
            raise APIError(400, str(e), param="messages") from None

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
        sampling = {name: getattr(body, name) for name in ("temperature", "top_p", "top_k", "min_p",
                                                           "repetition_penalty")}
        config = generation_config(self.defaults(), max_new_tokens=min(limits) if limits else 1024,
                                   seed=body.seed, stop=stop, **{k: v for k, v in sampling.items() if v is not None})
        if body.presence_penalty is not None:
            config.presence_penalty = body.presence_penalty
        if body.frequency_penalty is not None:
            config.frequency_penalty = body.frequency_penalty
        try:
            config.validate()
        except RuntimeError as e:
            raise APIError(400, f"invalid sampling settings: {error_line(e)}") from None
        if self.drafter and (self.drafter.samples or not config.do_sample):
            self.drafter.configure(config)
        return config

    # --- what the server calls ---------------------------------------------------------------------

    def prepare(self, job_id: int, body: ChatRequest | CompletionRequest, tools: list | None) -> int:
        """Render and check a request for `start`; its prompt's tokens."""
        pictures = []
        if isinstance(body, ChatRequest):
            messages = [m.for_template() for m in body.messages]
            pictures = self.pictures(messages)
            prompt = self.render(messages, [t.model_dump(exclude_none=True) for t in tools] if tools else None,
                                 body.chat_template_kwargs)
            ids = self.encode(prompt, add_special_tokens=False)  # the template already wrote the special tokens
            config = self.config(body, len(ids), body.max_completion_tokens or body.max_tokens)
            if structure := structured_output(body, tools, self.tool_calls):
                self.grammar.check(structure, "tool_choice" if body.tool_choice and tools
                                   and body.tool_choice != "auto" else "response_format")
                config.structured_output_config = structure
        else:
            prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
            ids = self.encode(prompt, add_special_tokens=True)
            if not ids:
                raise APIError(400, "prompt: the prompt is empty", param="prompt")
            config = self.config(body, len(ids), body.max_tokens)
        # A ContinuousBatchingPipeline on a model that sees images takes text, not token ids ("Port for tensor name
        # input_ids was not found"), its pictures in the order of their tags.
        self.prepared[job_id] = (ids, config, (prompt, pictures) if self.sees_images else None)
        return len(ids)

    def start(self, job_id: int, send) -> None:
        ids, config, with_pictures = self.prepared.pop(job_id)
        try:
            batcher = self._batcher_for(config)
        except ModelError as e:
            raise APIError(500, str(e), "server_error") from None
        job = Job(job_id, self.tokenizer, send, config.num_assistant_tokens or 0, config.max_new_tokens)
        batcher.submit(job, ids, config, with_pictures)

    def batchers(self) -> list:
        return [self.batcher, *filter(None, [self.sampling])]

    def cancel(self, job_id: int) -> None:
        if self.prepared.pop(job_id, None) is None:
            for batcher in self.batchers():
                batcher.cancel(job_id)

    def settings(self, options: dict) -> str:
        """describe_generation of the model's config with `options` (`ovchat run`'s names) over it, or a 400."""
        try:
            described = check_settings(self.defaults(), options)
        except ValueError as e:
            raise APIError(400, str(e), param="options") from None
        if self.drafter and (self.drafter.samples or not generation_config(self.defaults(), **options).do_sample):
            described += f", drafted by its own {self.drafter.describe()}"
        return described

    def tokens(self, messages: list[dict], template_context: dict | None) -> int:
        """The prompt's tokens, a picture counted as its tag's."""
        return len(self.encode(self.render(messages, None, template_context), add_special_tokens=False))

    def end_all_after(self, seconds: float) -> None:
        for batcher in self.batchers():
            batcher.end_all_after(seconds)


def serve_model(connection: Connection) -> None:
    """The runner's life: load the model the first message names, then answer calls until the connection ends."""
    lock = threading.Lock()

    def send(*message) -> None:
        with lock:
            try:
                connection.send(message)
            except OSError:  # the server has gone: the loop below sees it too
                pass

    model = Model(*connection.recv())
    try:
        send("ready", model.load())
    except Exception as e:
        send("failed", str(e) if isinstance(e, ModelError) else f"cannot load {model.name}: {error_line(e)}")
        return
    calls = {"prepare": model.prepare, "cancel": model.cancel, "settings": model.settings, "tokens": model.tokens,
             "end_all_after": model.end_all_after, "start": lambda job_id: model.start(job_id, send)}
    while True:
        try:
            kind, call_id, method, arguments = connection.recv()
        except (EOFError, OSError):
            break
        try:
            send("reply", call_id, calls[method](*arguments))
        except APIError as e:
            send("refused", call_id, (e.status, e.message, e.kind, e.code, e.param))
        except Exception as e:  # a bug here is this request's 500, not the model's end
            log.exception("%s failed", method)
            send("refused", call_id, (500, f"internal error: {error_line(e)}", "server_error", None, None))
    for batcher in model.batchers():
        batcher.close()


def main() -> None:
    # Ctrl-C in the server's terminal reaches its whole process group: the server ends its runners itself, after
    # the streams in flight have had their grace period.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    keep_telemetry_off()
    serve_model(Connection(int(sys.argv[1])))
    sys.stdout.flush()
    os._exit(0)  # without waiting on OpenVINO's threads and destructors: the memory goes back with the process


if __name__ == "__main__":
    main()
