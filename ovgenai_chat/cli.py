"""`ovchat`: a thin click layer over plain functions; errors are one line and a non-zero exit."""

from __future__ import annotations

import signal
import sys

import click


def _fail(message: str, code: int = 1):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.group()
@click.version_option(package_name="ovgenai-chat")
def main():
    """Chat with small LLMs through OpenVINO GenAI."""


@main.command()
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--weight-format", type=click.Choice(["int4", "int8", "fp16", "fp32"]), default="int4", show_default=True)
@click.option("--group-size", type=int, default=128, show_default=True, help="int4 group size (-1: per channel).")
@click.option("--ratio", type=click.FloatRange(0.0, 1.0), default=0.6, show_default=True,
              help="Share of layers in int4; the rest int8.")
@click.option("--sym/--asym", default=None, help="Symmetric or asymmetric quantization.  [default: sym for int4, asym for int8]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def convert(source, out, weight_format, group_size, ratio, sym, force):
    """Convert a Hugging Face checkpoint (directory or hub id) into an OpenVINO model directory."""
    try:
        from convert import ConversionError, convert as run_conversion
    except ImportError as e:
        _fail(f"conversion needs the 'convert' extra ({e.name} is missing): pip install 'ovgenai-chat[convert]'")
    # Ctrl-C and SIGTERM unwind the conversion, so its staging directory is removed. SIGINT is
    # set explicitly because a process started in the background inherits it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        path = run_conversion(source, out, weight_format, group_size, ratio, sym, force)
    except ConversionError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written", 130)
    click.echo(f"Wrote {path}")


if __name__ == "__main__":
    main()
