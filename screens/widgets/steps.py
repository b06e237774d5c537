"""The list of steps (vertical, for wide terminals) and the step bar (one line, for narrow ones)."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

CURRENT = Style(reverse=True, bold=True)
HEADING = Style(dim=True, italic=True)
FORWARD = Style()
BACKWARD = Style(italic=True)
FLAG = Style(bold=True, color="bright_white", bgcolor="red")  # this step's tensor has NaN/Inf


class StepChosen(Message):
    """The user clicked a step."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index


class StepList(ScrollView, can_focus=False):
    """Every step, forward then backward, the current one highlighted. Click to jump."""

    DEFAULT_CSS = """
    StepList { width: 13; height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: list[tuple[int | None, str, str]] = []  # (step index, name, phase)
        self.flags: list[str] = []  # per step: "NaN", "Inf" or ""
        self.current = 0

    def set_steps(self, names: list[tuple[str, str]], flags: list[str] | None = None) -> None:
        """``flags``: per step, "NaN" or "Inf" if its tensor holds one, else ""."""
        self.flags = list(flags) if flags else [""] * len(names)
        entries: list[tuple[int | None, str, str]] = []
        phase = None
        for i, (name, ph) in enumerate(names):
            if ph != phase:
                entries.append((None, ph, ph))
                phase = ph
            entries.append((i, name, ph))
        self.entries = entries
        self.virtual_size = Size(12, len(entries))
        self.refresh()

    def set_current(self, index: int) -> None:
        old = self.row_of(self.current)
        self.current = index
        row = self.row_of(index)
        height = self.scrollable_content_region.height
        if height and not (self.scroll_y <= row < self.scroll_y + height):
            self.scroll_to(y=max(0, row - height // 2), animate=False)
            self.refresh()
        else:  # repaint the two lines that changed, not the whole list
            self.refresh_line(old)
            self.refresh_line(row)

    def row_of(self, index: int) -> int:
        return next((r for r, e in enumerate(self.entries) if e[0] == index), 0)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        r = y + int(self.scroll_y)
        if r >= len(self.entries):
            return Strip.blank(width, self.rich_style)
        index, name, phase = self.entries[r]
        if index is None:
            return Strip([Segment(name[:width].ljust(width), HEADING)])
        style = CURRENT if index == self.current else FORWARD if phase == "forward" else BACKWARD
        text = f"{'▶' if index == self.current else ' '}{name}"
        flag = self.flags[index] if index < len(self.flags) else ""
        if not flag:
            return Strip([Segment(text[:width].ljust(width), style)])
        # the flag right-aligned, one blank column before the maps
        name_w = max(1, width - len(flag) - 1)
        return Strip([Segment(text[:name_w].ljust(name_w), style),
                      Segment(flag[:max(0, width - name_w)], FLAG),
                      Segment(" " * max(0, width - name_w - len(flag)), style)])

    def on_click(self, event: events.Click) -> None:
        r = event.y + int(self.scroll_y)
        if 0 <= r < len(self.entries) and self.entries[r][0] is not None:
            self.post_message(StepChosen(self.entries[r][0]))


class StepBar(Widget, can_focus=False):
    """All step names on one line, scrolled so the current one is visible (narrow layouts)."""

    DEFAULT_CSS = """
    StepBar { height: 1; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names: list[tuple[str, str]] = []
        self.flags: list[str] = []
        self.current = 0

        self._strip: tuple[tuple, Strip] | None = None  # (what it shows, the line)

    def set_steps(self, names: list[tuple[str, str]], flags: list[str] | None = None) -> None:
        self.names = names
        self.flags = list(flags) if flags else [""] * len(names)
        self.refresh()

    def set_current(self, index: int) -> None:
        self.current = index
        self.refresh()

    def render_line(self, y: int) -> Strip:
        # the Line API, not render(): a Text through Textual's visual pipeline took a
        # millisecond a step, a tenth of a step's time at 80x24
        width = self.size.width
        if y:
            return Strip.blank(width, self.rich_style)
        key = (self.names, self.flags, self.current, width)  # (set_steps replaces the lists)
        if self._strip is None or self._strip[0] != key:
            base = self.rich_style
            line = self.line_text().render(self.app.console, end="")
            self._strip = key, Strip([Segment(seg.text, base + seg.style if seg.style else base)
                                      for seg in line]).crop_extend(0, width, base)
        return self._strip[1]

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strip = None  # built with the old style

    def line_text(self) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        start = 0
        phase = None
        for i, (name, ph) in enumerate(self.names):
            if ph != phase:
                text.append({"forward": "fwd ", "backward": "│ bwd "}.get(ph, f"│ {ph} "),
                            HEADING)
                phase = ph
            if i == self.current:
                start = len(text)
                text.append(name, CURRENT)
            else:
                text.append(name, FORWARD if ph == "forward" else BACKWARD)
            if i < len(self.flags) and self.flags[i]:
                text.append("!", FLAG)
            text.append(" ")
        width = self.size.width or 80
        offset = max(0, min(start - width // 3, len(text) - width))
        end = offset + width
        if end < len(text) and text.plain[end] != " ":  # no half names at the right edge
            end = text.plain.rfind(" ", offset, end) + 1 or end
        return text[offset:end]
