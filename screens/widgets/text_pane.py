"""Text panes drawn through the Line API: updating one only repaints it (no layout pass), which
keeps a step's redraw cheap. Long content scrolls."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class TextPane(ScrollView, can_focus=False):
    """Shows a Rich Text, wrapped (or cropped, ``wrap=False``) to the pane's width."""

    DEFAULT_CSS = """
    TextPane { scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, wrap: bool = True, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.wrap = wrap
        self.text = Text()
        self._lines: list[Strip] = []
        self._key: tuple | None = None
        self._base = Style()  # the pane's own style and inner width, set by _rebuild
        self._width = 0

    def set(self, text: Text) -> None:
        if text == self.text and self._key is not None:
            return  # same words: nothing to repaint (most panes, on most steps)
        self.text = text
        self._key = None
        self._rebuild()
        self.refresh()

    @property
    def plain(self) -> str:
        return self.text.plain

    def _rebuild(self) -> None:
        width, height = self.size
        key = (width, height)
        if key == self._key or width <= 0:
            return
        self._key = key
        console = self.app.console
        inner = width
        if self.wrap:
            lines = self.text.wrap(console, width)
            if len(lines) > height:  # it will scroll: leave room for the scrollbar
                inner = width - 1
                lines = self.text.wrap(console, inner)
        else:
            lines = self.text.split("\n")
        # the style walks every ancestor: once per rebuild, not once per line
        self._base = base = self.rich_style
        self._width = inner
        self._lines = [Strip([Segment(seg.text, base + seg.style if seg.style else base)
                              for seg in line.render(console, end="")]) for line in lines]
        # never smaller than the pane: a change of content alone needs no layout pass
        virtual = Size(inner, max(len(self._lines), height))
        if virtual != self.virtual_size:
            self.virtual_size = virtual

    def on_resize(self) -> None:
        self._key = None
        self._rebuild()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._key = None  # a new theme or class: the cached base style is stale

    def render_line(self, y: int) -> Strip:
        self._rebuild()
        if self._key is None:  # no width yet
            return Strip.blank(self.scrollable_content_region.width, self.rich_style)
        i = y + int(self.scroll_y)
        if i >= len(self._lines):
            return Strip.blank(self._width, self._base)
        return self._lines[i].crop_extend(0, self._width, self._base)
