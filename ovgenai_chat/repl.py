"""The interactive chat loop: streamed replies, /commands, Ctrl-C and Ctrl-D, readline editing."""

from __future__ import annotations

import signal
import sys

from .chat import Chat, ContextError

HELP = """\
/help          this list
/reset         forget the conversation (keeps the system prompt)
/system TEXT   set the system prompt (empty TEXT removes it) and start over
/save FILE     write the conversation to FILE (JSON)
/load FILE     continue the conversation saved in FILE
/stats         the last reply's timings and token counts, and the precision in use
/exit          leave (or Ctrl-D); Ctrl-C stops a reply"""


def reply(chat: Chat, text: str, verbose: bool = False) -> None:
    """Stream the reply to `text`; Ctrl-C ends it early and keeps what was said."""

    def on_interrupt(signum, frame):
        chat.stop()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        chat.send(text, on_text=lambda piece: print(piece, end="", flush=True))
    finally:
        signal.signal(signal.SIGINT, previous)
    print()
    if verbose and chat.metrics:
        print(chat.metrics.summary(), file=sys.stderr)


def command(chat: Chat, line: str) -> bool:
    """Run a /command; False when the user asked to leave."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/help":
        print(HELP)
    elif name == "/reset":
        chat.reset()
        print("(conversation cleared)")
    elif name == "/system":
        chat.system = argument or None
        chat.reset()
        print("(system prompt set; conversation cleared)" if argument else "(system prompt removed)")
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


def run(chat: Chat, verbose: bool = False) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    warming_up = chat.warm_up()  # the model's first inference runs while the first message is typed
    try:
        _loop(chat, verbose)
    finally:
        # Python must not tear itself down under a generate() still running in C++: leaving at once
        # during the warm-up ended in SIGSEGV. A Ctrl-C meanwhile changes nothing.
        while warming_up.is_alive():
            try:
                warming_up.join()
            except KeyboardInterrupt:
                pass


def _loop(chat: Chat, verbose: bool) -> None:
    print("Type a message; /help for commands, Ctrl-D to leave.")
    while True:
        try:
            line = input(">>> ").strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: leave
            print()
            return
        try:
            if line.startswith("/"):
                if not command(chat, line):
                    return
            elif line:
                reply(chat, line, verbose)
        except ContextError as e:
            print(f"Error: {e}")
        except KeyboardInterrupt:  # Ctrl-C before the reply started: back to the prompt
            print()
