"""Chat templates in the style each model family ships, for the tiny checkpoints of that family.

They are written for these tests, not copied from the models, but use the same Jinja constructs
the real ones do — the parts a template engine other than jinja2 (GenAI's) could get wrong:
namespaces and reversed slices, string methods with arguments, `is defined` / `is false` /
`is string` tests, raise_exception, strftime_now, whitespace control, and the template variables
enable_thinking and bos_token. The shipped templates were checked the same way by hand (see the
issue 12 closing note)."""

# Qwen3: ChatML; the reasoning of an assistant turn is kept only after the last user query;
# enable_thinking=false closes an empty <think> block in the generation prompt.
QWEN3 = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set state = namespace(last_query=messages|length - 1, searching=true) %}
{%- for message in messages[::-1] %}
    {%- if state.searching and message.role == 'user' %}
        {%- set state.searching = false %}
        {%- set state.last_query = (messages|length - 1) - loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set text = message.content if message.content is string else '' %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + text + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set thought = '' %}
        {%- if '</think>' in text %}
            {%- set thought = text.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set text = text.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > state.last_query and (loop.last or thought) %}
            {{- '<|im_start|>assistant\\n<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + text }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + text }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# Qwen3.5: Qwen3's, except that thinking is on unless switched off: the generation prompt opens a
# <think> block, or closes an empty one with enable_thinking=false.
QWEN3_5 = QWEN3.replace("""    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}""", """    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- else %}
        {{- '<think>\\n' }}
    {%- endif %}""")
assert QWEN3_5 != QWEN3

# LFM2: ChatML after the bos token.
LFM2 = """\
{{- bos_token -}}
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Gemma 3: no system turn, the system text opens the first user turn; "model" for the assistant;
# roles must alternate.
GEMMA3 = """\
{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set opening = messages[0]['content'] + '\\n\\n' -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set opening = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}
    {{- (opening if loop.first else '') + message['content'] | trim }}
    {{- '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

# SmolLM3: a system block with metadata (today's date from strftime_now) and a reasoning mode that
# enable_thinking sets and /think or /no_think in the system prompt override.
SMOLLM3 = """\
{%- set thinking = enable_thinking if enable_thinking is defined else true -%}
{%- set mode = '/think' if thinking else '/no_think' -%}
{%- set instructions = '' -%}
{%- if messages[0].role == 'system' -%}
    {%- set system = messages[0].content -%}
    {%- if '/no_think' in system -%}{%- set mode = '/no_think' -%}
    {%- elif '/think' in system -%}{%- set mode = '/think' -%}{%- endif -%}
    {%- set instructions = system.replace('/no_think', '').replace('/think', '').rstrip() -%}
{%- endif -%}
{{- '<|im_start|>system\\n## Metadata\\n\\nToday Date: ' + strftime_now('%d %B %Y') + '\\nReasoning Mode: ' + mode + '\\n\\n' -}}
{{- '## Custom Instructions\\n\\n' + (instructions or 'You are a helpful AI assistant named SmolLM.') + '\\n\\n<|im_end|>\\n' -}}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {{ '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' -%}
        {{ '<|im_start|>assistant\\n' + ('' if mode == '/think' else '<think>\\n\\n</think>\\n') + message.content.lstrip('\\n') + '<|im_end|>\\n' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|im_start|>assistant\\n' + ('' if mode == '/think' else '<think>\\n\\n</think>\\n') }}
{%- endif -%}
"""

# Mistral-7B-Instruct v0.1/v0.2 (and Gemma 1/2): no system role at all; the template refuses one.
NO_SYSTEM_ROLE = """\
{{ bos_token }}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {{ raise_exception('System role not supported') }}
    {%- elif (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- elif message['role'] == 'user' -%}
        {{ '[INST] ' + message['content'] + ' [/INST]' }}
    {%- else -%}
        {{ message['content'] + eos_token }}
    {%- endif -%}
{%- endfor -%}
"""

# gpt-oss: OpenAI's harmony format. A system message (identity, knowledge cutoff, today's date, the reasoning
# level from `reasoning_effort`, the valid channels), the system or developer prompt as a developer message, each
# turn <|start|>{role}<|channel|>{channel}<|message|>{text}<|end|>; the model writes its reasoning in the analysis
# channel and its answer in the final one, which it ends with <|return|>. Earlier turns keep only their final
# answer. Written here (the shipped template is not copied) with the constructs it uses: `is defined` defaults,
# strftime_now, a leading system/developer message sliced off, substring tests and raise_exception, loop.last
# against add_generation_prompt; its tool and builtin-tool rendering is left out.
HARMONY = """\
{%- set effort = reasoning_effort if reasoning_effort is defined else 'medium' -%}
{{- '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\\n' -}}
{{- 'Knowledge cutoff: 2024-06\\nCurrent date: ' + strftime_now('%Y-%m-%d') + '\\n\\n' -}}
{{- 'Reasoning: ' + effort + '\\n\\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>' -}}
{%- if messages[0].role == 'system' or messages[0].role == 'developer' -%}
    {{- '<|start|>developer<|message|># Instructions\\n\\n' + messages[0].content + '\\n\\n<|end|>' -}}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- if message.role == 'user' -%}
        {{- '<|start|>user<|message|>' + message.content + '<|end|>' -}}
    {%- elif message.role == 'assistant' -%}
        {%- if '<|channel|>' in message.content -%}
            {{- raise_exception('Pass the reasoning in the thinking field, not as <|channel|> tags in the content') -}}
        {%- endif -%}
        {%- if loop.last and not add_generation_prompt -%}
            {%- if message.thinking is defined -%}
                {{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' -}}
            {%- endif -%}
            {{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|return|>' -}}
        {%- else -%}
            {{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' -}}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start|>assistant' -}}
{%- endif -%}
"""

# The family of a tiny checkpoint is the first word of its variant name.
def tools_template(how_to_call: str, call: str, tool_result: str) -> str:
    """A ChatML template that takes tools: the system turn says `how_to_call` and lists them, an assistant turn
    writes each of its calls as `call`, a tool message is `tool_result`."""
    return """\
{%- if tools %}<|im_start|>system
HOW_TO_CALL
The functions:
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
CALL
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}TOOL_RESULT<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}""".replace("HOW_TO_CALL", how_to_call).replace("CALL", call).replace("TOOL_RESULT", tool_result)


# Calls the Hermes / Qwen 2.5 way, in <tool_call> blocks (for the server's tool tests).
TOOLS = tools_template(
    'You may call functions. For each call, write <tool_call>\n{"name": <function name>, "arguments": <arguments as a '
    "JSON object>}\n</tool_call>",
    '<tool_call>\n{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n</tool_call>',
    "<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response>")
# Calls in Llama 3.x's manner: the whole reply is a bare JSON object with "parameters".
LLAMA3_TOOLS = tools_template(
    'You may call functions. To call one, reply with only a JSON object {"name": function name, "parameters": its '
    "arguments}.",
    '{"name": "{{ call.function.name }}", "parameters": {{ call.function.arguments | tojson }}}',
    "<|im_start|>ipython\n{{ message.content }}")

BY_FAMILY = {"qwen3": QWEN3, "qwen3_moe": QWEN3, "qwen3_5": QWEN3_5, "qwen3_5_moe": QWEN3_5, "lfm2": LFM2, "lfm2_moe": LFM2, "gemma2": GEMMA3, "gemma3": GEMMA3, "gemma4": GEMMA3, "smollm3": SMOLLM3, "mistral": NO_SYSTEM_ROLE,
             "gpt_oss": HARMONY}
THINKING = ("qwen3", "qwen3_moe", "qwen3_5", "qwen3_5_moe", "smollm3")  # families whose template reads enable_thinking


def family_template(variant: str) -> str | None:
    return BY_FAMILY.get(variant.split("-")[0])
