"""The headless commands' output, on a terminal, a pipe or a file."""

from __future__ import annotations

import math
import os
import sys

import rich.console

PIPE_WIDTH = 10_000  # a pipe or a file has no width: rich's default of 80 cuts numbers short


class Console(rich.console.Console):
    """rich's Console, except that a pipe or a file gets whole lines, however long, and that a
    reader going away (``cnntui verify | head``) raises BrokenPipeError, which ``cli.main``
    turns into exit 0, instead of rich's SystemExit(1).
    With ``keep_going`` the console falls silent instead, so that a command can finish what it
    must not lose (``cnntui train --out w.npz | head`` still saves the weights)."""

    def __init__(self, *args: object, keep_going: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.keep_going = keep_going
        if not self.is_terminal and kwargs.get("width") is None:
            self.width = PIPE_WIDTH  # no ellipsis, no wrapping: the full table

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence(self.file)
        if not self.keep_going:
            raise BrokenPipeError


def silence(stream: object) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that writing to it (and the flush at
    exit) no longer fails once its reader has gone."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def encodable(text: str, stream: object = None) -> bool:
    """Whether ``stream`` (default stdout) can write ``text`` in its encoding: an ASCII locale
    (``LC_ALL=C``) cannot write box drawing, arrows, a middle dot or an ellipsis."""
    try:
        text.encode(getattr(stream or sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def glyph(fancy: str, plain: str, stream: object = None) -> str:
    """``fancy`` where ``stream`` can write it, else its ASCII stand-in ``plain``."""
    return fancy if encodable(fancy, stream) else plain


def replace_unencodable(*streams: object) -> None:
    """A last resort for text from libraries (rich's ellipsis): characters a stream's encoding
    lacks become ``?`` instead of a UnicodeEncodeError that loses the whole output."""
    for stream in streams:
        if not encodable("\u2026\u2500\u00b7", stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def finite_or_null(value: object) -> object:
    """``value`` with every NaN and Inf replaced by None, for strict JSON (which has neither):
    dump the result with ``allow_nan=False``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value
