"""Structured output and tool calls: a request's JSON schema or forced tool call as GenAI's structured output
(XGrammar), and the tool calls read back out of a reply."""

from __future__ import annotations

import json
import re
import secrets
import threading
from pathlib import Path

from .schemas import APIError, ChatRequest, NamedToolChoice, Tool, json_or_text

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
            call = json_or_text(block)
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

