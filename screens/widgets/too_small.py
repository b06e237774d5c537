"""The message every screen shows instead of its content when the terminal is below 60x20."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

MIN_WIDTH, MIN_HEIGHT = 60, 20


class TooSmall(Widget, can_focus=False):
    """Hidden by CSS unless the screen carries a ``-tiny-w`` / ``-tiny-h`` breakpoint class."""

    DEFAULT_CSS = """
    TooSmall { display: none; width: 1fr; height: 1fr; content-align: center middle;
               text-align: center; }
    """

    def render(self) -> Text:
        w, h = self.app.size
        return Text(f"terminal too small ({w}x{h}), need {MIN_WIDTH}x{MIN_HEIGHT}\n"
                    "enlarge the window, or press q to quit", style="bold")

    def on_resize(self) -> None:
        self.refresh()
