"""The help screen: every key of every screen, generated from the bindings themselves."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from screens.keys import key_text, keymap_path
from screens.widgets.too_small import TooSmall


def help_rows(bindings: list[Binding]) -> list[tuple[str, str, str]]:
    """(keys, description, binding id) for each binding; the channel keys are folded into one
    line. The id is what a keymap file (``screens/keys.py``) remaps."""
    rows: list[tuple[str, str, str]] = []
    channel_done = False
    for b in bindings:
        if b.id and b.id.startswith("channel_"):
            if not channel_done:
                rows.append(("0-9", "Enlarge channel #0-#9 (the same key again: all channels)",
                             "channel_0 .. channel_9"))
                channel_done = True
            continue
        rows.append((key_text(b.key), b.tooltip or b.description or b.action, b.id or ""))
    return rows


class HelpScreen(ModalScreen[None]):
    """Every key, by screen. Esc, ? or F1 closes it."""

    BINDINGS = [
        Binding("escape,question_mark,f1", "close", "Close help", id="close_help"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; height: auto; max-height: 100%;
                                  border: round $accent; background: $surface; padding: 0 1; }
    """

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        table.add_column(style="dim", no_wrap=True)
        for title, bindings in self.sections:
            table.add_row(Text(title, style="bold underline"), "", "")
            for keys, text, binding_id in help_rows(bindings):
                table.add_row(keys, text, binding_id)
        table.add_row("", "")
        table.add_row(Text("Your keys", style="bold underline"), "")
        table.add_row("", f"{keymap_path()} remaps a binding by the id in the last column, "
                          f"one per line: next_step = \"right,j\"")
        table.add_row("", "")
        table.add_row(Text("Mouse (optional)", style="bold underline"), "")
        table.add_row("click", "a step in the step list, a digit in the picker, a cell of a map")
        table.add_row("drag", "paint on the drawing canvas (the right button erases; in tmux: "
                              "set -g mouse on)")
        with VerticalScroll() as v:
            v.border_title = "cnntui help"
            v.border_subtitle = "Esc closes"
            yield Static(table, id="help-table")
        yield TooSmall()

    def action_close(self) -> None:
        self.dismiss(None)
