"""Text panes drawn through the Line API: updating one only repaints it (no layout pass), which
keeps a step's redraw cheap. Long content scrolls."""

from __future__ import annotations

from collections import OrderedDict

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


def refresh_changed(view: ScrollView, old: list[Strip], new: list[Strip]) -> None:
    """Repaint only the visible lines of ``view`` that differ between its ``old`` and ``new``
    lines (a line past the end is blank): most of a pane is the same from one step to the next,
    and the compositor's cost is per repainted line."""
    top = int(view.scroll_y)
    end = min(max(len(old), len(new)), top + view.size.height)
    start = None
    for y in range(top, end + 1):
        same = y == end or (y < len(old) and y < len(new) and old[y] == new[y])
        if not same and start is None:
            start = y
        elif same and start is not None:
            view.refresh_lines(start, y - start)
            start = None


class TextPane(ScrollView, can_focus=False):
    """Shows a Rich Text, wrapped (or cropped, ``wrap=False``) to the pane's width.

    With ``keep`` > 0 the lines of the last ``keep`` texts shown (or ``prepare``d) are kept,
    keyed by the Text object itself: showing one of them again at the same size builds
    nothing.

    ``steady``: once a text has scrolled, the pane keeps its scrollbar and scrolls as far as
    the longest text it has shown at this size (a shorter one ends in blank lines). A new
    scroll length is a layout pass of the whole screen, which at 80x24 doubled a step's
    time."""

    DEFAULT_CSS = """
    TextPane { scrollbar-size-vertical: 1; }
    """
    def __init__(self, *, wrap: bool = True, keep: int = 0, steady: bool = False,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.wrap = wrap
        self.keep = keep
        self.steady = steady
        self._tallest = 0  # (steady) the most lines shown at this size, once it scrolled
        self.text = Text()
        self.natural_height = 0  # lines the text needs at the pane's full width
        self._lines: list[Strip] = []
        self._key: tuple | None = None
        self._base: Style | None = None  # the pane's own style: walks every ancestor, so cached
        self._width = 0  # the lines' width (one less than the pane's when it scrolls)
        # (id(text), width, height, scrolls anyway) -> (text, lines, width, natural height)
        self._built: OrderedDict[tuple, tuple[Text, list[Strip], int, int]] = OrderedDict()

    def set(self, text: Text, *, resizing: bool = False) -> None:
        """Show ``text``. ``resizing``: the pane's height is about to change, so its lines are
        built at the new size after the layout pass (built now, at the old size, they could
        start scrolling, and a new virtual size asks for a second layout pass)."""
        if text is self.text or (self._key is not None and text == self.text):
            return  # same words: nothing to repaint (most panes, on most steps)
        self.text = text
        if resizing:
            self._key = None
            self.refresh()
            return
        old, virtual = self._lines, self.virtual_size
        self._key = None
        self._rebuild()
        if self._key is None or self.virtual_size != virtual:
            self.refresh()
        else:
            refresh_changed(self, old, self._lines)

    def prepare(self, text: Text) -> None:
        """Build ``text``'s lines now (while idle) for a later ``set(text)``."""
        width, height = self.size
        if self.keep and width > 0 and self._built_key(text, width, height) not in self._built:
            self._build(text, width, height)

    def lines_needed(self, text: Text, width: int) -> int:
        """How many lines ``text`` wraps to at ``width`` (the pane's own width: from what
        ``prepare`` or ``set`` built)."""
        built = self._built.get(self._built_key(text, *self.size))
        if built is not None and built[0] is text and self.size.width == width:
            return built[3]
        return len(text.wrap(self.app.console, width)) if self.wrap else len(text.split("\n"))

    @property
    def plain(self) -> str:
        return self.text.plain

    def _scrolls_anyway(self, height: int) -> bool:
        return self.steady and self._tallest > height

    def _built_key(self, text: Text, width: int, height: int) -> tuple:
        return (id(text), width, height, self._scrolls_anyway(height))

    def _build(self, text: Text, width: int, height: int) -> tuple[Text, list[Strip], int, int]:
        console = self.app.console
        inner = width
        if self.wrap:
            lines = text.wrap(console, width)
            natural = len(lines)
            if natural > height or self._scrolls_anyway(height):
                # it will scroll: leave room for the scrollbar
                inner = width - 1
                lines = text.wrap(console, inner)
        else:
            lines = text.split("\n")
            natural = len(lines)
        if self._base is None:
            self._base = self.rich_style
        base = self._base
        strips = [Strip([Segment(seg.text, base + seg.style if seg.style else base)
                         for seg in line.render(console, end="")]) for line in lines]
        built = self._built[self._built_key(text, width, height)] = (text, strips, inner,
                                                                      natural)
        while len(self._built) > self.keep:
            self._built.popitem(last=False)
        return built

    def _rebuild(self) -> None:
        width, height = self.size
        key = (width, height)
        if key == self._key or width <= 0:
            return
        self._key = key
        built = self._built.get(self._built_key(self.text, width, height))
        if built is None or built[0] is not self.text:
            built = self._build(self.text, width, height)
        _, self._lines, self._width, self.natural_height = built
        rows = len(self._lines)
        if self.steady and rows > height:
            self._tallest = rows = max(self._tallest, rows)
        elif self._scrolls_anyway(height):
            rows = self._tallest
        # a virtual size is a layout pass: it changes only when the text starts or stops
        # scrolling or scrolls by another amount, not with the text or the pane's height (the
        # pane needs a fixed or fractional height: its content does not size it)
        virtual = Size(self._width, rows) if rows > height else Size()
        if virtual != self.virtual_size:
            self.virtual_size = virtual
            # show or hide the scrollbar now, in the same layout pass (Textual would only
            # after that pass, in a second one)
            self._refresh_scrollbars()

    def on_resize(self) -> None:
        self._key = None
        self._tallest = 0
        self._rebuild()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        # a new theme or class: the cached base style and every line built with it are stale
        self._key = self._base = None
        self._built.clear()

    def render_line(self, y: int) -> Strip:
        self._rebuild()
        if self._key is None:  # no width yet
            return Strip.blank(self.scrollable_content_region.width, self.rich_style)
        i = y + int(self.scroll_y)
        if i >= len(self._lines):
            return Strip.blank(self._width, self._base)
        return self._lines[i].crop_extend(0, self._width, self._base)
