"""The headless commands' output, on a terminal, a pipe or a file."""

from __future__ import annotations

import os

import rich.console


class Console(rich.console.Console):
    """rich's Console, except that a reader going away (``cnntui verify | head``) raises
    BrokenPipeError, which ``cli.main`` turns into exit 0, instead of rich's SystemExit(1).
    With ``keep_going`` the console falls silent instead, so that a command can finish what it
    must not lose (``cnntui train --out w.npz | head`` still saves the weights)."""

    def __init__(self, *args: object, keep_going: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.keep_going = keep_going

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

