"""A conversation with an LLMPipeline or a VLMPipeline: history (pictures too), context trimming, streaming,
per-reply metrics."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from .engine import ModelError, context_window, error_line, first_inference, model_type, sees_images, warm_up
from .images import ImageError, Picture, check_text, from_data_url, image_tags, multipart, read_image


class ContextError(ValueError):
    """A message that cannot fit the model's context window."""


@dataclass
class Metrics:
    """The last reply: time to first token, time per output token, tokens in and out, the precision policy it was
    computed in (accurate or fast; None when not known), and what speculative decoding did: the candidate tokens a
    drafter proposed and the model verified, how many of them it accepted (0 and 0 without a drafter), and the
    reply's tokens per pass of the model (1 without a drafter)."""

    ttft_ms: float
    tpot_ms: float
    throughput_tps: float
    input_tokens: int
    output_tokens: int
    precision: str | None = None
    draft_tokens: int = 0
    accepted_tokens: int = 0
    tokens_per_pass: float = 1.0

    def summary(self) -> str:
        precision = f" · {self.precision} precision" if self.precision else ""
        drafted = (f" · {self.accepted_tokens} of {self.draft_tokens} drafted tokens accepted, "
                   f"{self.tokens_per_pass:.2f} tokens per pass" if self.draft_tokens else "")
        return (f"{self.input_tokens} tokens in, {self.output_tokens} out · first token {self.ttft_ms:.0f} ms · "
                f"{self.throughput_tps:.1f} tokens/s ({self.tpot_ms:.1f} ms/token){drafted}{precision}")

    def as_dict(self) -> dict:
        return asdict(self)


def main_metrics(result):
    """The PerfMetrics of a GenAI result's model: its perf_metrics, except where GenAI 2026.4.1 leaves them empty (no
    tokens, TTFT -1: the Gemma 4 assistant's stateful pipeline) and fills its main model's SD metrics instead."""
    extended = result.extended_perf_metrics
    if result.perf_metrics.get_num_generated_tokens() == 0 and hasattr(extended, "main_model_metrics"):
        return extended.main_model_metrics
    return result.perf_metrics


def speculation(result, drafter) -> tuple[int, int, float]:
    """(draft_tokens, accepted_tokens, tokens_per_pass) of a reply (a GenAI result) drafted by `drafter` (a
    speculative.Drafter, or None). A pass gives one token of the model's own and the candidates it accepted. The
    counts of a draft model, an MTP head or an assistant are GenAI's (extended_perf_metrics); paged attention's raw
    metrics have one entry per pass (m_batch_sizes: the tokens it gave), the stateful pipeline's one per token, so
    the passes are the fewer of those entries and the tokens less the accepted ones (GenAI leaves the last pass's
    out of its count). GenAI does not hand out prompt lookup's counts: the accepted ones are the tokens less the
    passes, and each pass after the first verifies `tokens` candidates (GenAI pads a short match to that many)."""
    perf = main_metrics(result)
    generated = perf.get_num_generated_tokens()
    passes = len(perf.raw_metrics.m_batch_sizes) or generated
    extended = result.extended_perf_metrics
    if hasattr(extended, "get_num_draft_tokens"):
        drafted, accepted = extended.get_num_draft_tokens(), extended.get_num_accepted_tokens()
        passes = min(passes, generated - accepted)
    elif drafter is not None and drafter.method == "prompt-lookup":
        drafted, accepted = drafter.tokens * max(0, passes - 1), generated - passes
    else:
        drafted = accepted = 0
    return drafted, accepted, generated / passes if passes > 0 else 1.0


def generation_config(config, max_new_tokens=1024, temperature=None, top_p=None, top_k=None, min_p=None,
                      repetition_penalty=None, seed=None, stop=()):
    """`config` is the model's own, read by GenAI from its generation_config.json: the eos ids that stop a
    reply, and the sampling it recommends (do_sample, temperature, top_p, top_k, min_p, repetition_penalty),
    which transformers and OVMS follow too; greedy where it recommends none. The user's settings go over it:
    temperature 0 is greedy, any other sampling setting samples."""
    config.max_new_tokens = max_new_tokens
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p}
    if temperature == 0:
        config.do_sample = False
    elif any(value is not None for value in sampling.values()):
        config.do_sample = True
        for name, value in sampling.items():
            if value is not None:
                setattr(config, name, value)
    if repetition_penalty is not None:
        config.repetition_penalty = repetition_penalty
    if seed is not None:
        config.rng_seed = seed
    if stop:
        config.stop_strings = set(stop)
    return config


def template_has_system_role(tokenizer) -> bool:
    """False for templates without a system role (Mistral v0.1/v0.2, Gemma 1/2 raise on one; a few
    drop it). GenAI's template engine then puts the system text at the start of the first user
    message, as llama.cpp does; this tells the two apart by rendering both."""
    def render(messages):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    system, user = "\u2063system\u2063", "\u2063user\u2063"  # text no template writes itself
    return (render([{"role": "system", "content": system}, {"role": "user", "content": user}])
            != render([{"role": "user", "content": f"{system}\n{user}"}]))


def without_thinking(reply: str) -> str:
    """The reply without what a reasoning model wrote between <think> and </think>."""
    if "</think>" not in reply:
        return reply
    return re.sub(r"^.*?</think>\s*", "", reply, count=1, flags=re.DOTALL)


def describe_generation(config, seeded: bool = False) -> str:
    """A generation config's settings in a line, as /show prints them (`seeded`: the user gave a seed)."""
    parts = [f"max_new_tokens {config.max_new_tokens}"]
    if config.do_sample:
        parts += [f"temperature {config.temperature:g}", f"top_p {config.top_p:g}", f"top_k {config.top_k}"]
        parts += [f"min_p {config.min_p:g}"] if config.min_p else []
        parts += [f"seed {config.rng_seed}"] if seeded else []
    else:
        parts.append("greedy")
    if config.repetition_penalty != 1.0:
        parts.append(f"repetition_penalty {config.repetition_penalty:g}")
    return ", ".join(parts)


def check_settings(defaults, settings: dict) -> str:
    """describe_generation of a model's generation config (`defaults`) with `settings` over it; ValueError, in a
    line, for settings GenAI refuses."""
    try:
        config = generation_config(defaults, **settings)
        config.validate()
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(error_line(e)) from None
    return describe_generation(config, "seed" in settings)


class LocalModel:
    """A model in this process: an LLMPipeline or a VLMPipeline (or, drafting with the model's MTP head, a
    ContinuousBatchingPipeline), with what Chat asks of a model (client.RemoteModel is the same over a server)."""

    def __init__(self, pipe, precision=None, model_dir: Path | None = None, device: str | None = None, drafter=None):
        """`drafter`: the speculative.Drafter the pipeline was opened with, if any."""
        import openvino_genai

        self.pipe, self.precision, self.model_dir, self.device = pipe, precision, model_dir, device
        self.drafter = drafter
        # A ContinuousBatchingPipeline takes no ChatHistory with a model that sees images ("VisionRegistry is not
        # available"): each turn goes as one prompt templated here, with the conversation's pictures.
        self.batching = isinstance(pipe, openvino_genai.ContinuousBatchingPipeline)
        self.defaults = pipe.get_config if self.batching else pipe.get_generation_config  # a fresh copy per call
        self.sees_images = isinstance(pipe, openvino_genai.VLMPipeline) or self.batching and sees_images(model_dir)
        # GenAI takes only the last message's pictures with each call and remembers the earlier ones in the
        # ChatHistory object it was given them in: a conversation with pictures goes on in the same object.
        self._history, self._in_history = None, []
        # GenAI 2026.4.1 positions a Qwen3-VL turn that follows a picture without that picture's M-RoPE offset,
        # in a ChatHistory and after one (the first turn about a picture is right): such a conversation goes as
        # one prompt from its first picture on, every turn.
        self._prompt_per_turn = self.sees_images and model_type(model_dir) == "qwen3_vl"
        self.tokenizer = pipe.get_tokenizer()
        self.chat_template = self.tokenizer.chat_template or ""
        self.context = context_window(model_dir) if model_dir else None
        self._lock = threading.Lock()  # one generation at a time, the warm-up's included
        self._warmed_up = False

    def has_system_role(self) -> bool:
        return template_has_system_role(self.tokenizer)

    def check(self, settings: dict) -> str:
        described = check_settings(self.defaults(), settings)
        if self.drafter and not self.drafter.samples and generation_config(self.defaults(), **settings).do_sample:
            raise ValueError(f"this chat drafts with a {self.drafter.describe()}, which drafts greedy replies only: "
                             f"keep temperature 0, or start the chat with --no-draft to sample")
        if self.drafter:
            described += f", drafted by {'its own ' if self.drafter.own else ''}{self.drafter.describe()}"
        return described

    def count_tokens(self, messages: list[dict], template_context: dict) -> int:
        """The prompt's tokens, a picture counted as its tag's (the tokens it expands into are the model's own)."""
        prompt = self.tokenizer.apply_chat_template(image_tags(messages)[0], add_generation_prompt=True,
                                                    extra_context=template_context or None)
        return self.tokenizer.encode(prompt, add_special_tokens=False).input_ids.get_shape()[1]

    def warm_up(self) -> threading.Thread:
        """Start the pipeline's first inference on a thread (engine.warm_up) so that the first reply
        does not wait for it; generate() waits for it to end."""
        def run():
            with self._lock:
                if not self._warmed_up:
                    try:
                        warm_up(self.pipe, self.drafter)
                    except Exception:  # the first message will meet the same failure and report it
                        return
                    self._warmed_up = True

        thread = threading.Thread(target=run, name="ovchat-warm-up", daemon=True)
        thread.start()
        return thread

    def generate(self, messages: list[dict], template_context: dict, settings: dict,
                 on_text: Callable[[str], None] | None, stopped: threading.Event) -> tuple[str, Metrics]:
        import openvino_genai

        config = generation_config(self.defaults(), **settings)
        if self.drafter:
            self.drafter.configure(config)
        if self.batching:
            prompt, images = self._one_prompt(messages, template_context, config)
        else:
            prompt, images = (self._vision_inputs(messages, template_context, config) if self.sees_images
                              else (self._history_of(messages, template_context), {}))
        first = first_inference() if not self._warmed_up else contextlib.nullcontext(lambda: None)
        with self._lock, first as first_token:
            def streamer(piece: str):
                first_token()
                if on_text:
                    on_text(piece)
                return openvino_genai.StreamingStatus.STOP if stopped.is_set() else openvino_genai.StreamingStatus.RUNNING

            try:
                if self.batching:
                    result = self.pipe.generate([prompt], **images, generation_config=[config], streamer=streamer)[0]
                else:
                    result = self.pipe.generate(prompt, **images, generation_config=config, streamer=streamer)
            except RuntimeError as e:
                raise ModelError(f"cannot generate a reply: {error_line(e)}") from None
            self._warmed_up = True
        perf = main_metrics(result)
        reply = result.texts[0] if hasattr(result, "texts") else result.m_generation_ids[0]
        return reply, Metrics(perf.get_ttft().mean, perf.get_tpot().mean, perf.get_throughput().mean,
                              result.perf_metrics.get_num_input_tokens(), perf.get_num_generated_tokens(),
                              self.precision.name if self.precision else None, *speculation(result, self.drafter))


    @staticmethod
    def _history_of(messages: list[dict], template_context: dict):
        import openvino_genai

        history = openvino_genai.ChatHistory()
        for message in messages:
            history.append(message)
        if template_context:
            history.set_extra_context(template_context)
        return history

    def _one_prompt(self, messages: list[dict], template_context: dict, config) -> tuple[str, dict]:
        """The conversation as one prompt templated here, a picture as GenAI's image tag (a ContinuousBatchingPipeline's
        generate()), and its pictures (`images=`, one list per prompt) if it has any."""
        tagged, pictures = image_tags(messages)
        config.apply_chat_template = False
        prompt = self.tokenizer.apply_chat_template(tagged, add_generation_prompt=True,
                                                    extra_context=template_context or None)
        return prompt, {"images": [[p.tensor() for p in pictures]]} if pictures else {}

    def _vision_inputs(self, messages: list[dict], template_context: dict, config) -> tuple[object, dict]:
        """VLMPipeline.generate's prompt and pictures (`images=`). A conversation that extends the ChatHistory of the last call goes on in
        it, with the new message's pictures. One that does not (older turns dropped to fit the context, a chat
        loaded or reset) starts a new ChatHistory, unless a message before the last has pictures: GenAI cannot be
        given those again in a ChatHistory ("Missing image/video with index 0"), so the whole conversation goes as
        one prompt with GenAI's image tags and every picture, which gave the same replies; a Qwen3-VL conversation
        goes so every turn from its first picture on (_prompt_per_turn)."""
        check_text(messages)
        held = len(self._in_history)
        continues = (self._history is not None and messages[:held] == self._in_history
                     and not any(m.get("images") for m in messages[held:-1])
                     and self._history.get_extra_context() == template_context)
        if (any(m.get("images") for m in messages) if self._prompt_per_turn
                else any(m.get("images") for m in messages[:-1]) and not continues):
            self._history, self._in_history = None, []
            tagged, pictures = image_tags(messages)
            config.apply_chat_template = False
            prompt = self.tokenizer.apply_chat_template(tagged, add_generation_prompt=True,
                                                        extra_context=template_context or None)
            return prompt, {"images": [p.tensor() for p in pictures]}
        history, new = ((self._history, messages[held:]) if continues
                        else (self._history_of([], template_context), messages))
        for message in new:
            history.append(multipart(message))
        self._history, self._in_history = history, list(messages)
        return history, {"images": [p.tensor() for p in messages[-1].get("images") or ()]}


class Chat:
    """Multi-turn chat with a model: LocalModel (an LLMPipeline in this process) or client.RemoteModel (a model
    an `ovchat serve` holds). Each turn sends the whole history; the pipeline reuses the KV cache of the part it
    has already seen."""

    def __init__(self, model, *, system: str | None = None, context: int | None = None,
                 thinking: bool | None = None, notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
                 **generation):
        self.model = model
        self.thinking = thinking
        self.generation = {"max_new_tokens": 1024}
        self.configure(**generation)  # bad settings fail here, not at the first message
        self.context = context or model.context
        self.notify = notify
        self.system = system
        self.messages: list[dict] = []
        self.metrics: Metrics | None = None
        self._stop = threading.Event()

    @property
    def precision(self):
        """The engine's Precision the model runs in, if known."""
        return self.model.precision

    @property
    def model_dir(self) -> Path | None:
        return self.model.model_dir

    @property
    def device(self) -> str | None:
        return self.model.device

    @property
    def model_name(self) -> str | None:
        return self.model_dir.name if self.model_dir else None

    @property
    def thinking(self) -> bool | None:
        """A reasoning model's thinking on or off (its template's enable_thinking); None: the template's default."""
        return self.template_context.get("enable_thinking")

    @thinking.setter
    def thinking(self, on: bool | None) -> None:
        self.template_context = {} if on is None else {"enable_thinking": on}

    @property
    def can_think(self) -> bool:
        return "enable_thinking" in self.model.chat_template

    def configure(self, **settings) -> None:
        """Change generation settings (generation_config's names); ValueError for ones the model refuses."""
        updated = {**self.generation, **settings}
        self.model.check(updated)
        self.generation = updated

    def describe_settings(self) -> str:
        """The settings a reply is generated with: the model's recommendations with the user's over them."""
        return self.model.check(self.generation)

    def tokens_in_use(self) -> int:
        """Tokens the conversation so far takes of the context."""
        return self._count_tokens(self.messages) if self.messages or self.system else 0

    @property
    def system(self) -> str | None:
        return self._system_prompt

    @system.setter
    def system(self, text: str | None) -> None:
        self._system_prompt = text or None
        if self._system_prompt and not self.model.has_system_role():
            self.notify("(this model's chat template has no system role; the system prompt opens the first user message)")

    @property
    def history(self) -> list[dict]:
        return self._system() + self.messages

    def _system(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def reset(self) -> None:
        self.messages = []

    def stop(self) -> None:
        """End the reply being generated; what it said so far stays in the history."""
        self._stop.set()

    def warm_up(self) -> threading.Thread:
        """The model's first inference, on a thread, so that the first reply does not wait for it."""
        return self.model.warm_up()

    @property
    def sees_images(self) -> bool:
        return self.model.sees_images

    def pictures(self, images) -> list[Picture]:
        """`images` (paths, or Pictures from images.read_image) as Pictures for a message; ImageError for a file
        that is no picture, or for a model that does not see images."""
        if images and not self.sees_images:
            raise ImageError(f"{self.model_name or 'this model'} does not see images (it has no vision model); "
                             f"give a picture to a model `ovchat show` says sees images")
        return [image if isinstance(image, Picture) else read_image(image) for image in images]

    def send(self, text: str, on_text: Callable[[str], None] | None = None, images=()) -> str:
        """The reply to `text`, with `images` (paths or Pictures) shown to the model; `on_text` receives it piece by
        piece as it is generated. The pictures stay in the history: later turns may ask about them."""
        pictures = self.pictures(images)
        message = {"role": "user", "content": text, **({"images": pictures} if pictures else {})}
        messages, prompt_tokens = self._fit([*self.messages, message])
        # The reply may use what the prompt leaves of the context, up to max_new_tokens.
        room = self.context - prompt_tokens if self.context else self.generation["max_new_tokens"]
        settings = {**self.generation, "max_new_tokens": max(1, min(self.generation["max_new_tokens"], room))}
        self._stop.clear()
        reply, self.metrics = self.model.generate(self._system() + messages, self.template_context, settings,
                                                  on_text, self._stop)
        # A reasoning model's thinking is not sent back: its family's templates drop it from earlier turns.
        self.messages = [*messages, {"role": "assistant", "content": without_thinking(reply)}]
        return reply

    def stream(self, text: str, images=()) -> Iterator[str]:
        """The reply to `text` (with `images`, as send takes them), piece by piece."""
        pictures = self.pictures(images)  # a bad picture fails here, not in the worker
        pieces: queue.Queue = queue.Queue()
        done = object()
        failure: list[BaseException] = []

        def run():
            try:
                self.send(text, on_text=pieces.put, images=pictures)
            except BaseException as e:  # handed to the consuming thread
                failure.append(e)
            finally:
                pieces.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:  # the consumer stopped early: end the reply too
            if worker.is_alive():
                self.stop()
            worker.join()
        if failure:
            raise failure[0]

    def save(self, path) -> None:
        """The conversation as JSON, its pictures as data: URLs."""
        messages = [{**m, "images": [p.data_url() for p in m["images"]]} if "images" in m else m for m in self.messages]
        Path(path).write_text(json.dumps({"system": self.system, "messages": messages}, indent=2, ensure_ascii=False))

    def load(self, path) -> None:
        try:
            data = json.loads(Path(path).read_text())
            messages = data["messages"]
            if not all(m["role"] in ("user", "assistant") and isinstance(m["content"], str) for m in messages):
                raise ValueError("messages need a user or assistant role and text content")
            messages = [{**m, "images": self.pictures([from_data_url(url, f"picture {i + 1} of message {n + 1}")
                                                        for i, url in enumerate(m["images"])])}
                        if m.get("images") else m for n, m in enumerate(messages)]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot load a chat from {path}: {e}") from None
        self.system, self.messages = data.get("system"), messages

    def _count_tokens(self, messages: list[dict]) -> int:
        return self.model.count_tokens(self._system() + messages, self.template_context)

    def _fit(self, messages: list[dict]) -> tuple[list[dict], int | None]:
        """(messages, prompt tokens): the oldest turns dropped (never the system prompt) until the
        prompt leaves room for a reply. Without a context window nothing is counted."""
        if not self.context:
            return messages, None
        tokens = self._count_tokens(messages)
        reserve = min(self.generation["max_new_tokens"], self.context // 4)
        dropped = 0
        while tokens > self.context - reserve:
            if len(messages) == 1:
                raise ContextError(
                    f"the message is too long: the prompt would be {tokens} tokens and the context holds "
                    f"{self.context}, {reserve} of them kept for the reply"
                )
            # A turn is a user message and the reply to it.
            messages = messages[2:] if messages[1]["role"] == "assistant" else messages[1:]
            dropped += 1
            tokens = self._count_tokens(messages)
        if dropped:
            self.notify(f"(dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} to fit the {self.context}-token context)")
        return messages, tokens
