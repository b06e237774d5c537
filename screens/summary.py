"""The architecture summary (``cnntui summary`` in the debugger): every architecture's layers,
output shapes, parameters and multiply-adds, the open one first. Esc or i closes it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from cnntui import model, summary
from screens.widgets.too_small import TooSmall


class SummaryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,i", "close", "Close the summary", id="close_summary")]
    DEFAULT_CSS = """
    SummaryScreen { align: center middle; }
    SummaryScreen > VerticalScroll { width: 64; max-width: 100%; height: auto; max-height: 100%;
                                     border: round $accent; background: $surface; }
    """

    def __init__(self, current: model.Architecture) -> None:
        super().__init__()
        self.archs = [current, *(a for a in model.ARCHITECTURES.values() if a is not current)]

    def compose(self) -> ComposeResult:
        with VerticalScroll() as v:
            v.border_title = "architectures"
            v.border_subtitle = "Esc closes; ctrl+p switches"
            for arch in self.archs:
                yield Static(summary.table(summary.summarize(arch)), classes="summary-table")
        yield TooSmall()

    def action_close(self) -> None:
        self.dismiss(None)
