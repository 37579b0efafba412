"""`ovchat run` and the Python API, on models the converter makes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import openvino_genai
import pexpect
import pexpect.fdpexpect
import pytest

import ovgenai_chat
from ovgenai_chat.chat import Chat, LocalModel, template_has_system_role
from templates import NO_SYSTEM_ROLE

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "ATTENTION_BACKEND": "SDPA"}


@pytest.fixture(scope="session")
def smollm2(converted) -> Path:
    return converted("smollm2", "int4")


def ovchat_run(model_dir, *args, env, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "run", str(model_dir), *args],
                          input=input, capture_output=True, env=env, timeout=600)


def test_one_shot_prompt(smollm2, env):
    result = ovchat_run(smollm2, "-p", "What is the capital of France?", env=env)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout.decode()
    assert "No GPU found; running on the CPU." in result.stderr.decode()


def test_json_replies_from_stdin_continue_one_conversation(smollm2, env):
    # Without the first turn SmolLM2 answers the second with "Turkish and English".
    questions = "What is the capital of Germany?\nWhat language do people speak in that city?\n"
    result = ovchat_run(smollm2, "--json", "--max-new-tokens", "40", env=env, input=questions.encode())
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["prompt"] for line in lines] == questions.splitlines()
    assert "Berlin" in lines[0]["reply"] and "German" in lines[1]["reply"]
    metrics = lines[1]["metrics"]
    assert metrics["ttft_ms"] > 0 and metrics["tpot_ms"] > 0 and metrics["output_tokens"] > 0


def test_runtime_imports_nothing_heavy(smollm2, env):
    """The device side never loads torch, transformers, optimum, nncf or the converter."""
    probe = (
        "import sys, json, runpy\n"
        f"sys.argv = ['ovchat', 'run', {str(smollm2)!r}, '-p', 'Hi', '--max-new-tokens', '4']\n"
        "try:\n    runpy.run_module('ovgenai_chat.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}
    assert "openvino_genai" in loaded
    assert not loaded & {"torch", "transformers", "optimum", "nncf", "convert"}


def test_compiled_model_cache_and_telemetry_refusal(smollm2, env, tmp_path):
    assert ovchat_run(smollm2, "-p", "Hi", "--max-new-tokens", "4", env=env).returncode == 0
    assert any((tmp_path / "cache" / "compiled").iterdir())
    assert (tmp_path / "home" / "intel" / "openvino_telemetry").read_text() == "0"

    shutil.rmtree(tmp_path / "cache")
    consent = tmp_path / "home" / "intel" / "openvino_telemetry"
    consent.write_text("1")  # the user's own choice stays
    assert ovchat_run(smollm2, "-p", "Hi", "--max-new-tokens", "4", "--no-cache", env=env).returncode == 0
    assert not (tmp_path / "cache" / "compiled").exists() or not any((tmp_path / "cache" / "compiled").iterdir())
    assert consent.read_text() == "1"


def test_old_turns_are_dropped_to_fit_the_context(smollm2, env):
    messages = "".join(f"Tell me one fact about the number {n}.\n" for n in range(4))
    result = ovchat_run(smollm2, "--context", "160", "--max-new-tokens", "30", env=env, input=messages.encode())
    assert result.returncode == 0, result.stderr
    assert "oldest turn" in result.stderr.decode() and "to fit the 160-token context" in result.stderr.decode()


def test_python_api(converted):
    chat = ovgenai_chat.load(converted("smollm2", "int4"), max_new_tokens=24)
    assert "Paris" in chat.send("What is the capital of France?")
    pieces = list(chat.stream("And of Italy?"))
    assert len(pieces) > 1 and "Rome" in "".join(pieces)
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]
    assert chat.history[-1]["content"] == "".join(pieces)
    assert chat.metrics.output_tokens > 0
    chat.reset()
    assert chat.history == []


def test_multi_turn_equals_one_generate_on_the_whole_history(converted):
    """The second turn, through the reused KV cache, gives the same greedy reply as a fresh
    pipeline given the whole templated history at once."""
    path = converted("smollm2", "fp32")
    chat = Chat(LocalModel(openvino_genai.LLMPipeline(path, "CPU", **EXACT)), max_new_tokens=40)
    chat.send("Name three colours of the rainbow.")
    second = chat.send("Which of them is the warmest?")

    fresh = Chat(LocalModel(openvino_genai.LLMPipeline(path, "CPU", **EXACT)), max_new_tokens=40)
    history = openvino_genai.ChatHistory()
    for message in chat.history[:-1]:
        history.append(message)
    config = fresh.model.pipe.get_generation_config()
    config.max_new_tokens = 40
    assert fresh.model.pipe.generate(history, config).texts[0] == second


def test_warm_up_leaves_the_conversation_as_it_was(converted):
    """The REPL's warm-up (the model's first inference, on a thread while the first message is typed)
    changes no reply: the same two turns, greedy, with and without it."""
    path = converted("smollm2", "fp32")
    replies = []
    for warm in (True, False):
        chat = Chat(LocalModel(openvino_genai.LLMPipeline(path, "CPU", **EXACT)), max_new_tokens=24)
        if warm:
            chat.warm_up()  # not joined: send() waits for it
        replies.append([chat.send("Name three colours of the rainbow."), chat.send("Which of them is the warmest?")])
    assert replies[0] == replies[1]


def resident_bytes(path: Path) -> int:
    """Resident bytes of this process's mappings of `path`, from /proc/self/smaps."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:  # a mapping's header line
                inside = line.rstrip("\n").endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def test_a_model_answers_the_same_after_its_weight_pages_are_unmapped(converted):
    """What ovchat does at the first token (engine.first_inference): the pipeline's mapping of
    openvino_model.bin leaves the process, decoding maps back what it still reads, and the replies
    do not change."""
    from ovgenai_chat.engine import page_out_weight_files

    path = converted("smollm2", "int4")
    pipe = openvino_genai.LLMPipeline(path, "CPU", **EXACT)  # no cache directory: the weights come from the .bin
    config = openvino_genai.GenerationConfig(max_new_tokens=16, do_sample=False)
    before = pipe.generate(["Name three colours of the rainbow."], config).texts
    weights = Path(path) / "openvino_model.bin"
    assert resident_bytes(weights) > 0
    assert page_out_weight_files() >= weights.stat().st_size // 2
    assert resident_bytes(weights) < weights.stat().st_size // 10
    assert pipe.generate(["Name three colours of the rainbow."], config).texts == before


def test_weight_file_pages_are_handed_back(tmp_path):
    """What keeps the weights from being resident twice after the first inference: the pages of a
    read-only mapping of a weight file leave the process's memory, and read back unchanged."""
    import mmap

    from ovgenai_chat.engine import page_out_weight_files

    path = tmp_path / "openvino_model.bin"
    path.write_bytes(os.urandom(16 << 20))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        pages = bytes(mapped[i] for i in range(0, len(mapped), 4096))  # touches every page
        assert resident_bytes(path) == 16 << 20
        assert page_out_weight_files() >= 16 << 20
        assert resident_bytes(path) < 1 << 20
        assert bytes(mapped[i] for i in range(0, len(mapped), 4096)) == pages


# --- bad input -----------------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess, expect: str):
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert result.returncode != 0
    assert "Traceback" not in stderr
    assert len(errors) == 1 and expect in errors[0], stderr


def test_missing_model_dir(tmp_path, env):
    assert_one_line_error(ovchat_run(tmp_path / "nothing", "-p", "Hi", env=env), "no such model directory")


def test_directory_without_tokenizer_ir(smollm2, tmp_path, env):
    broken = shutil.copytree(smollm2, tmp_path / "no-tokenizer")
    (broken / "openvino_tokenizer.xml").unlink()
    assert_one_line_error(ovchat_run(broken, "-p", "Hi", env=env), "missing openvino_tokenizer.xml")


def test_truncated_weights(smollm2, tmp_path, env):
    broken = shutil.copytree(smollm2, tmp_path / "truncated")
    weights = broken / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(ovchat_run(broken, "-p", "Hi", env=env), "cannot load")


def test_non_utf8_stdin(smollm2, env):
    result = ovchat_run(smollm2, "--max-new-tokens", "4", env=env, input=b"hello\n\xff\xfe broken\n")
    assert_one_line_error(result, "line 2 of the input is not UTF-8 text")


def test_message_longer_than_the_context(smollm2, env):
    result = ovchat_run(smollm2, "--context", "64", "-p", "word " * 200, env=env)
    assert_one_line_error(result, "the message is too long")


def test_gpu_requested_without_one(smollm2, env):
    assert_one_line_error(ovchat_run(smollm2, "--device", "GPU", "-p", "Hi", env=env), "device GPU is not available")


# --- the interactive chat, driven through a pseudo-terminal -------------------------------------


def spawn_in_terminal(args, env) -> tuple[subprocess.Popen, pexpect.fdpexpect.fdspawn]:
    """Start ovchat on a pseudo-terminal. subprocess, not pexpect.spawn: pexpect forks in Python,
    which can hang in this multi-threaded test process (OpenVINO's thread pools)."""
    controller, terminal = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.cli", *map(str, args)], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    return process, pexpect.fdpexpect.fdspawn(controller, encoding="utf-8", timeout=120)


def test_interactive_session(smollm2, env, tmp_path):
    saved = tmp_path / "chat.json"
    process, child = spawn_in_terminal(["run", smollm2, "--max-new-tokens", "300"], env)
    try:
        child.expect_exact(">>> ")
        child.sendline("What is the capital of France?")
        child.expect("Paris")
        child.expect_exact(">>> ")
        child.sendline("What language do people speak in that city?")  # needs the first turn
        child.expect("French")
        child.expect_exact(">>> ")

        child.sendline("/stats")
        child.expect(r"tokens in, \d+ out .* accurate precision")
        child.expect_exact("precision: accurate (f32 activations, f32 KV cache, no int8 activations")
        child.sendline(f"/save {saved}")
        child.expect_exact("saved to")
        child.sendline("/reset")
        child.expect_exact("(conversation cleared)")
        child.sendline(f"/load {saved}")
        child.expect_exact("loaded")
        child.sendline("/frobnicate")
        child.expect_exact("unknown command /frobnicate")
        child.expect_exact(">>> ")

        # Ctrl-C (the terminal sends SIGINT) in the middle of a long reply ends that reply only.
        child.sendline("Write a very long story about a ship, at least a thousand words.")
        child.expect_exact("thousand words.")  # the terminal's echo of the line; then the reply
        child.expect(r"\w+ \w+ \w+ \w+")
        process.send_signal(signal.SIGINT)
        child.expect_exact(">>> ")
        child.sendline("/stats")
        child.expect(r"tokens in, (\d+) out")
        assert int(child.match.group(1)) < 300
        child.sendline("What is the capital of Germany?")
        child.expect("Berlin")
        child.expect_exact(">>> ")

        child.sendline("/system You are a pirate. Always say Arr.")
        child.expect_exact("(system prompt set")
        child.sendline("Who are you?")
        child.expect("(?i)pirate")
        child.expect_exact(">>> ")
        child.sendline("/exit")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        child.close()
    history = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert "Paris" in history[1]["content"]


@contextlib.contextmanager
def chat_in_terminal(args, env):
    """An interactive `ovchat run` on a pseudo-terminal, at its first prompt; left with /exit, which must end it
    with status 0."""
    process, child = spawn_in_terminal(["run", *args], env)
    try:
        child.expect_exact(">>> ")
        yield child
        child.sendline("/exit")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        child.close()


def test_multiline_input_settings_show_and_history(smollm2, env, tmp_path):
    """\"\"\" multi-line input and a bracketed paste each arrive as one message; /set and /show; the input
    history comes back in the next session, and OVCHAT_NOHISTORY=1 keeps a session out of it."""
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "xterm"}
    history = tmp_path / "state" / "ovgenai-chat" / "history"
    saved = tmp_path / "chat.json"
    with chat_in_terminal([smollm2, "--max-new-tokens", "40"], env) as child:
        child.sendline('"""What is the capital')
        child.expect_exact("... ")
        child.sendline('of France?"""')
        child.expect("Paris")
        child.expect_exact(">>> ")
        child.send("\x1b[200~And of\nGermany?\x1b[201~\r")  # a terminal's bracketed paste of two lines
        child.expect("Berlin")
        child.expect_exact(">>> ")
        child.sendline(f"/save {saved}")
        child.expect_exact("saved to")
        child.sendline("/set temperature 0")
        child.expect_exact("(temperature 0)")
        child.sendline("/set top_k many")
        child.expect_exact("/set top_k needs a whole number")
        child.sendline("/set repetition_penalty 0")
        child.expect_exact("/set repetition_penalty: 'repetition_penalty' must be a strictly positive")  # GenAI's reason
        child.sendline("/show")
        child.expect(r"context\s+(\d+) of 8192 tokens in use")
        assert int(child.match.group(1)) > 20
        child.expect(r"settings\s+max_new_tokens 40, greedy")
        child.sendline("/clear")
        child.expect_exact("(conversation cleared)")
    users = [m["content"] for m in json.loads(saved.read_text())["messages"] if m["role"] == "user"]
    assert users == ["What is the capital\nof France?", "And of\nGermany?"]
    assert "/set temperature 0" in history.read_text()

    with chat_in_terminal([smollm2], env) as child:
        child.send("\x1b[A\x1b[A\r")  # Up twice: the last session's /clear, before its /exit
        child.expect_exact("(conversation cleared)")

    before = history.read_text()
    with chat_in_terminal([smollm2], {**env, "OVCHAT_NOHISTORY": "1"}) as child:
        child.sendline("/help")
        child.expect_exact("/set NAME VALUE")
    assert history.read_text() == before


def test_an_unwritable_history_never_stops_the_chat(smollm2, env, tmp_path):
    (tmp_path / "state").write_text("a file where the state directory should be")
    with chat_in_terminal([smollm2, "--max-new-tokens", "8"], {**env, "XDG_STATE_HOME": str(tmp_path / "state")}) as child:
        child.sendline("Hi")
        child.expect_exact(">>> ")


def process_state(pid: int) -> str:
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    waits = sorted({Path(f"/proc/{pid}/task/{task}/wchan").read_text() for task in os.listdir(f"/proc/{pid}/task")})
    return f"state {status['State'].strip()}, {status['Threads'].strip()} threads waiting in {waits}"


def test_ctrl_d_and_ctrl_c_at_the_prompt_leave_cleanly(smollm2, env):
    for leave in ("ctrl-d", "ctrl-c"):
        process, child = spawn_in_terminal(["run", smollm2], env)
        try:
            child.expect_exact(">>> ")
            if leave == "ctrl-d":
                child.send("\x04")  # what the terminal sends for Ctrl-D
            else:
                process.send_signal(signal.SIGINT)
            # Read what it prints on its way out (a full terminal buffer would block its exit) until it closes the terminal.
            try:
                child.expect(pexpect.EOF, timeout=60)
            except pexpect.TIMEOUT:  # say what it was doing instead of leaving
                raise AssertionError(f"after {leave}: {process_state(process.pid)}; printed {child.before!r}") from None
            assert process.wait(timeout=30) == 0, child.before
        finally:
            process.kill()
            child.close()


def prompt_tokens(model, *args, env) -> int:
    """The prompt's token count for a one-shot "Hi" with `args`."""
    result = ovchat_run(model, "-p", "Hi", "--max-new-tokens", "2", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.decode().splitlines()[-1])["metrics"]["input_tokens"]


def test_think_and_no_think_reach_the_chat_template(converted, env):
    """Qwen3's template closes an empty think block in the prompt only when thinking is off; its
    default is on."""
    model = converted("qwen3-fp32", "int4")
    tokens = {flag: prompt_tokens(model, *([flag] if flag else []), env=env) for flag in ("--think", "--no-think", None)}
    assert tokens["--no-think"] > tokens["--think"] == tokens[None]


@pytest.mark.parametrize("name", ["qwen3-fp32", "gemma3-text-fp32", "smollm3-nope", "mistral-head-dim-sliding-window"])
def test_system_prompt_with_each_family_template(name, converted, env):
    """`--system` reaches the prompt with every family's template; a template without a system role
    gets one line saying where the system prompt went."""
    model = converted(name, "int4")
    system = "Answer every question in exactly one word, in French, and never use punctuation marks."
    result = ovchat_run(model, "--system", system, "-p", "Hi", "--max-new-tokens", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    with_system = json.loads(result.stdout.decode().splitlines()[-1])["metrics"]["input_tokens"]
    assert with_system > prompt_tokens(model, env=env)
    notices = [line for line in result.stderr.decode().splitlines() if "chat template" in line]
    if name.startswith("mistral"):
        assert notices == ["(this model's chat template has no system role; the system prompt opens the first user message)"]
    else:
        assert notices == []


def test_template_has_system_role(converted):
    tokenizer = openvino_genai.Tokenizer(converted("llama", "fp32"))
    assert template_has_system_role(tokenizer)  # ChatML
    tokenizer.set_chat_template(NO_SYSTEM_ROLE)  # raises on a system message
    assert not template_has_system_role(tokenizer)
    # Renders no system message: GenAI folds it into the user message all the same.
    tokenizer.set_chat_template("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}\n{% endif %}{% endfor %}")
    assert not template_has_system_role(tokenizer)


# --- a reasoning model's thinking -------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_thinking_is_dimmed_even_when_its_tags_arrive_in_pieces():
    from ovgenai_chat.repl import DIM, NORMAL, ReplyPrinter

    out = Terminal()
    printer = ReplyPrinter(out)
    for piece in ["<th", "ink>Two plus", " two.</thi", "nk>\n\nIt is 4 <", "b>", "<"]:
        printer(piece)
    printer.finish()
    shown = out.getvalue()
    assert shown.replace(DIM, "").replace(NORMAL, "") == "<think>Two plus two.</think>\n\nIt is 4 <b><\n"
    dimmed = "".join(part.split(NORMAL)[0] for part in shown.split(DIM)[1:])
    assert dimmed == "<think>Two plus two.</think>"  # all of the thinking, and nothing of the answer

    plain = io.StringIO()  # not a terminal: no escape codes
    ReplyPrinter(plain)("<think>x</think>y")
    assert plain.getvalue() == "<think>x</think>y"


def test_thinking_is_not_sent_back_with_the_history():
    from ovgenai_chat.chat import without_thinking

    assert without_thinking("<think>\nLet me see.\n</think>\n\nParis.") == "Paris."
    assert without_thinking("Paris, with no thinking.") == "Paris, with no thinking."


def test_think_switch_only_where_the_template_has_one(smollm2, converted, capsys):
    import ovgenai_chat
    from ovgenai_chat.repl import set_option

    chat = ovgenai_chat.load(smollm2, "CPU", use_cache=False)
    set_option(chat, "think on")
    assert "no thinking switch" in capsys.readouterr().out and chat.thinking is None

    reasoning = ovgenai_chat.load(converted("qwen3-fp32", "int4"), "CPU", use_cache=False)  # Qwen3's template
    set_option(reasoning, "think off")
    assert "(thinking off)" in capsys.readouterr().out
    assert reasoning.thinking is False and reasoning.template_context == {"enable_thinking": False}
