"""The API's shapes: OpenAI's chat and completions requests (with the sampling extensions vLLM and llama.cpp's
server accept), ovchat's own /api requests, and the errors sent in OpenAI's shape. Pydantic only: the runners
unpickle requests without the web framework."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TOKENS_BOUND = 1 << 20  # above any context window; keeps fuzzers from asking for 2**63 tokens
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
FOR_EVER = 1e9  # seconds (31 years): a keep-alive this long or longer never ends


def parse_duration(value: int | float | str) -> float | None:
    """Seconds from a keep-alive as ollama takes it: a number of seconds or a duration ("90s", "5m", "1h30m",
    "500ms"); 0 unloads at once, a negative one (or FOR_EVER and more) never: None."""
    text = value.strip() if isinstance(value, str) else ""
    if DURATION.match(text.lstrip("-")) and not DURATION.sub("", text.lstrip("-")):
        seconds = sum(float(number) * UNITS[unit] for number, unit in DURATION.findall(text))
        return None if text.startswith("-") or seconds >= FOR_EVER else seconds
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a duration: give seconds or one like 90s, 5m, 1h30m; -1 for ever") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a duration")
    return None if seconds < 0 or seconds >= FOR_EVER else seconds


class APIError(Exception):
    """An error for the client, in the OpenAI shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param



class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str = Field(description="A data: URL of a PNG, JPEG or WebP picture (base64); the server fetches nothing.")
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]] | None = None
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
        return self.content if isinstance(self.content, str) else "".join(
            part.text for part in self.content if part.type == "text")

    def image_urls(self) -> list[str]:
        return [] if isinstance(self.content, (str, type(None))) else [
            part.image_url.url for part in self.content if part.type == "image_url"]

    def for_template(self) -> dict:
        """The message as chat templates read it: a tool call's arguments as an object, not a JSON text; its
        pictures' URLs, if any, in `images` (images.image_tags puts them in the text)."""
        message = {"role": self.role, "content": self.text()}
        if urls := self.image_urls():
            message["images"] = urls
        if self.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function", "function": {
                "name": call.function.name, "arguments": json_or_text(call.function.arguments)}}
                for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def json_or_text(text: str):
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

    model: str | None = Field(None, description="A model of GET /v1/models, loaded on demand; absent: the one "
                                                "`ovchat serve MODEL` names, else the default model.")
    keep_alive: float | str | None = Field(
        None, description="How long the model stays loaded after this request: seconds or a duration like 5m; "
                          "0 unloads it at once, -1 never; absent: the server's --keep-alive.")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="0: greedy; absent: the model's recommendation, else greedy.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=2**31 - 1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = Field(
        None, description="Up to 4 texts that end the reply; not included in it.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("keep_alive")
    @classmethod
    def _is_duration(cls, value):
        if value is not None:
            parse_duration(value)
        return value


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    chat_template_kwargs: dict | None = Field(
        None, description="Variables for the chat template, as vLLM takes them: {\"enable_thinking\": false}.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    response_format: ResponseFormat | None = Field(
        None, description="json_object: the reply is a JSON object; json_schema: it validates against the schema.")
    tools: list[Tool] | None = Field(None, description="Functions the model may call, for a template that takes tools.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="required, or a named function: the reply is a call (generation constrained to one).")


class CompletionRequest(Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list must hold exactly one).")



class ModelRequest(BaseModel):
    model: str | None = Field(None, description="A model's name; absent: the server's default.")


class ShowRequest(ModelRequest):
    options: dict[str, float | int | list[str]] = Field(
        default_factory=dict, description="Generation settings to check and describe, as `ovchat run` names them: "
                                          "max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, "
                                          "seed, stop.")


class TokenizeRequest(ModelRequest):
    messages: list[Message] = Field(min_length=1)
    chat_template_kwargs: dict | None = None
