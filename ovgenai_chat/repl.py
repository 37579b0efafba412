"""The interactive chat loop: streamed replies (a reasoning model's thinking dimmed), /commands, multi-line
input, Ctrl-C and Ctrl-D, readline editing and an input history kept across sessions."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from urllib.parse import unquote

from .chat import Chat, ContextError
from .engine import state_dir
from .images import ImageError

HELP = """\
/help                this list
/show                the model, device, precision, context used and settings
/set NAME VALUE      temperature, top_p, top_k, min_p, max_new_tokens, repetition_penalty or seed
                     (temperature 0: greedy); /set system TEXT; /set think on|off
/system TEXT         set the system prompt (empty TEXT removes it) and start over
/reset, /clear       forget the conversation (keeps the system prompt)
/save FILE           write the conversation to FILE (JSON)
/load FILE           continue the conversation saved in FILE
/stats               the last reply's timings and token counts (drafted and accepted ones too), and the
                     precision in use
/image FILE…         show the model these pictures with your next message (a model that sees images);
                     a picture's path dragged into the terminal does the same; /image alone lists them,
                     /image clear drops them
/exit                leave (or Ctrl-D); Ctrl-C stops a reply
\"\"\"                  starts a message of several lines, and a line ending in \"\"\" ends it"""

# /set NAME: how to read VALUE
SETTINGS = {"temperature": float, "top_p": float, "top_k": int, "min_p": float, "max_new_tokens": int,
            "repetition_penalty": float, "seed": int}
DIM, NORMAL = "\033[2m", "\033[0m"
THINK, END_THINK = "<think>", "</think>"


class ReplyPrinter:
    """Prints a streamed reply, with what a reasoning model writes between <think> and </think> dimmed on a
    terminal. A tag can arrive split over pieces, so a piece's end that could begin one waits for the next."""

    def __init__(self, out=sys.stdout):
        self.out, self.dim = out, out.isatty()
        self.thinking, self.pending = False, ""

    def __call__(self, piece: str) -> None:
        text, self.pending = self.pending + piece, ""
        while text:
            tag = END_THINK if self.thinking else THINK
            at = text.find(tag)
            if at < 0:
                keep = next((n for n in range(len(tag) - 1, 0, -1) if text.endswith(tag[:n])), 0)
                self._write(text[:len(text) - keep])
                self.pending = text[len(text) - keep:]
                break
            if self.thinking:  # the closing tag ends the dimmed part
                self._write(text[:at + len(tag)])
                self.thinking = False
            else:  # the opening tag begins it
                self._write(text[:at])
                self.thinking = True
                self._write(tag)
            text = text[at + len(tag):]
        self.out.flush()

    def finish(self) -> None:
        self._write(self.pending)
        self.pending = ""
        if self.thinking and self.dim:
            self.out.write(NORMAL)
        self.thinking = False
        self.out.write("\n")
        self.out.flush()

    def _write(self, text: str) -> None:
        if text:
            self.out.write(f"{DIM}{text}{NORMAL}" if self.thinking and self.dim else text)


def reply(chat: Chat, text: str, verbose: bool = False, images=()) -> None:
    """Stream the reply to `text` (with `images`, as Chat.send takes them); Ctrl-C ends it early and keeps what was
    said."""

    def on_interrupt(signum, frame):
        chat.stop()

    printer = ReplyPrinter()
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        chat.send(text, on_text=printer, images=images)
    finally:
        signal.signal(signal.SIGINT, previous)
        printer.finish()
    if verbose and chat.metrics:
        print(chat.metrics.summary(), file=sys.stderr)


def set_option(chat: Chat, argument: str) -> None:
    name, _, value = argument.partition(" ")
    value = value.strip()
    if name == "system":
        chat.system = value or None
        chat.reset()
        print("(system prompt set; conversation cleared)" if value else "(system prompt removed)")
    elif name == "think":
        if value not in ("on", "off"):
            print("/set think takes on or off")
        elif not chat.can_think:
            print("(this model's chat template has no thinking switch)")
        else:
            chat.thinking = value == "on"
            print(f"(thinking {value})")
    elif name in SETTINGS:
        try:
            number = SETTINGS[name](value)
        except ValueError:
            print(f"/set {name} needs {'a whole number' if SETTINGS[name] is int else 'a number'}")
            return
        try:
            chat.configure(**{name: number})
        except ValueError as e:
            print(f"/set {name}: {e}")
        else:
            print(f"({name} {value})")
    else:
        print(f"/set takes {', '.join(SETTINGS)}, system or think")


def show(chat: Chat) -> None:
    used = chat.tokens_in_use()
    rows = {"model": f"{chat.model_name} ({chat.model_dir})" if chat.model_dir else "?",
            "device": chat.device or "?",
            "precision": chat.precision.describe() if chat.precision else "?",
            "context": f"{used} of {chat.context} tokens in use" if chat.context else f"{used} tokens in use",
            "settings": chat.describe_settings(),
            "thinking": {None: "the template's default", True: "on", False: "off"}[chat.thinking]
            if chat.can_think else "no switch in this template",
            "system": chat.system or "none"}
    for name, value in rows.items():
        print(f"{name:10} {value}")


# A path as terminals paste a dropped file: quoted, or with its spaces and quotes backslash-escaped, or a file:// URL.
DROPPED_PATH = re.compile(r"""\s*('[^']+'|"[^"]+"|(?:[^\s\\'"]|\\.)+)""")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def dropped_pictures(line: str) -> tuple[list[str], str]:
    """(paths, the rest of the line): the existing picture files the line starts with, as a terminal pastes a file
    dragged onto it, and the text after them."""
    paths = []
    while found := DROPPED_PATH.match(line):
        token = found[1]
        if token[0] in "'\"":
            token = token[1:-1]
        else:
            token = re.sub(r"\\(.)", r"\1", token)
        if token.startswith("file://"):
            token = unquote(token[len("file://"):])
        if not (token.lower().endswith(PICTURE_SUFFIXES) and Path(token).expanduser().is_file()):
            break
        paths.append(token)
        line = line[found.end():]
    return paths, line.strip() if paths else line


class Attachments:
    """The pictures the next message shows the model."""

    def __init__(self):
        self.pictures = []

    def add(self, chat: Chat, paths: list[str]) -> None:
        try:
            pictures = chat.pictures(paths)
        except ImageError as e:
            print(f"Error: {e}")
            return
        self.pictures += pictures
        for picture in pictures:
            width, height = picture.rgb.size
            print(f"(attached {picture.name}, {width}×{height}; {len(self.pictures)} for the next message)")

    def take(self) -> list:
        pictures, self.pictures = self.pictures, []
        return pictures


def image_command(chat: Chat, argument: str, attachments: Attachments) -> None:
    if argument == "clear":
        attachments.pictures = []
        print("(no pictures attached)")
    elif argument:
        paths, rest = dropped_pictures(argument)
        attachments.add(chat, paths + ([rest] if rest else []))  # what is left names a file read as it is
    elif attachments.pictures:
        print("\n".join(picture.name for picture in attachments.pictures))
    else:
        print("(no pictures attached; /image FILE attaches one)")


def command(chat: Chat, line: str, attachments: Attachments | None = None) -> bool:
    """Run a /command; False when the user asked to leave."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/help":
        print(HELP)
    elif name in ("/reset", "/clear"):
        chat.reset()
        print("(conversation cleared)")
    elif name == "/system":
        set_option(chat, f"system {argument}")
    elif name == "/set":
        set_option(chat, argument)
    elif name == "/show":
        show(chat)
    elif name == "/image":
        image_command(chat, argument, attachments if attachments is not None else Attachments())
    elif name in ("/save", "/load"):
        if not argument:
            print(f"{name} needs a file name")
        else:
            try:
                if name == "/save":
                    chat.save(argument)
                    print(f"(saved to {argument}: {len(chat.messages)} messages)")
                else:
                    chat.load(argument)
                    print(f"(loaded {argument}: {len(chat.messages)} messages)")
            except (OSError, ValueError) as e:
                print(f"{name} failed: {e}")
    elif name == "/stats":
        print(chat.metrics.summary() if chat.metrics else "(no reply yet)")
        if chat.precision:
            print(f"precision: {chat.precision.describe()}")
    else:
        print(f"unknown command {name}; /help lists them")
    return True


def history_file() -> Path | None:
    """Where input lines are kept between sessions; None with OVCHAT_NOHISTORY set."""
    return None if os.environ.get("OVCHAT_NOHISTORY") else state_dir() / "history"


class History:
    """readline's history, read from and appended to history_file(); a file that cannot be read or
    written only means no history."""

    def __init__(self):
        try:
            import readline  # line editing, bracketed paste, and the history for input()
        except ImportError:
            readline = None
        self.readline, self.path = readline, history_file()
        if self.readline and self.path:
            readline.set_history_length(1000)
            try:
                readline.read_history_file(self.path)
            except OSError:
                pass

    def added(self) -> None:
        if not (self.readline and self.path):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch(mode=0o600)
            self.readline.append_history_file(1, self.path)
        except OSError:
            self.path = None  # say nothing and stop trying: the chat goes on


def run(chat: Chat, verbose: bool = False) -> None:
    history = History()
    warming_up = chat.warm_up()  # the model's first inference runs while the first message is typed
    try:
        _loop(chat, verbose, history)
    finally:
        # Python must not tear itself down under a generate() still running in C++: leaving at once
        # during the warm-up ended in SIGSEGV. A Ctrl-C meanwhile changes nothing.
        while warming_up.is_alive():
            try:
                warming_up.join()
            except KeyboardInterrupt:
                pass


def read_message(history: History) -> str:
    """One message: a line, or the lines between two \"\"\" (as ollama reads them). EOFError: Ctrl-D."""
    line = input(">>> ")
    history.added()
    if not line.lstrip().startswith('"""'):
        return line.strip()
    text = line.lstrip()[3:]
    if text.rstrip().endswith('"""'):
        return text.rstrip()[:-3].strip()
    lines = [text]
    while True:
        line = input("... ")
        history.added()
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip()
        lines.append(line)


def _loop(chat: Chat, verbose: bool, history: History) -> None:
    print('Type a message ("""…""" for several lines); /help for commands, Ctrl-D to leave.')
    attachments = Attachments()
    while True:
        try:
            line = read_message(history)
        except EOFError:  # Ctrl-D: leave
            print()
            return
        except KeyboardInterrupt:  # Ctrl-C at the prompt: leave (in the middle of a \"\"\" message as well)
            print()
            return
        try:
            paths, line = dropped_pictures(line)
            if paths:
                attachments.add(chat, paths)
            if line.startswith("/"):
                if not command(chat, line, attachments):
                    return
            elif line:
                reply(chat, line, verbose, attachments.take())
        except ContextError as e:
            print(f"Error: {e}")
        except KeyboardInterrupt:  # Ctrl-C before the reply started: back to the prompt
            print()
