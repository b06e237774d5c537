"""The heatmap pane: tiles of 2-D maps (or labelled bars) drawn through Textual's Line API.

Every pixel pair becomes one cell: the upper half block with the top pixel as foreground and the
bottom pixel as background. All lines of the current picture are built once per (view, size,
colour mode) and cached as Strips; scrolling and repaints only crop them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from screens.colors import DIM_GLYPH_16, SPECIAL_NAMES, Palette, palette
from screens.views import Tile, View
from screens.widgets.text_pane import refresh_changed

HALF = "▀"
GAP = 1  # columns between tiles
SCALES = (1, 2, 4, 6, 8)  # 1 or even: a text cell never mixes two different pixels
LABEL_STYLE = Style(bold=True)
DIM_STYLE = Style(dim=True)
PLAIN = Style()
MARKED = Style(underline=True)  # a pooling window's maximum, without colour


def scaled(tile: Tile, view: View) -> np.ndarray:
    """A tile's values mapped to t in [-1, 1] (diverging) or [0, 1] (sequential); NaN = not on
    the scale (a gap, or a NaN/Inf value: ``tile_cells`` tells them apart)."""
    d = np.asarray(tile.data, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if view.magnitude:  # |grad| on a log scale: 4 decades below the top
            top = tile.hi if tile.hi > 0 else 1.0
            t = (np.log10(np.abs(d) / top) + 4.0) / 4.0
            t = np.where(d == 0, 0.0, np.clip(t, 0.0, 1.0))
        elif view.diverging:
            m = max(abs(tile.lo), abs(tile.hi))
            t = d / m if m > 0 else np.zeros_like(d)
        else:  # halves: hi - lo may overflow near the float limits
            span = tile.hi / 2 - tile.lo / 2
            t = (d / 2 - tile.lo / 2) / span if span > 0 else np.zeros_like(d)
    return np.where(np.isfinite(d), t, np.nan)


def tile_cells(tile: Tile, view: View, pal: Palette, scale: int) -> list[list[Segment]]:
    """The rows of text cells of one tile at ``scale`` columns per pixel."""
    levels = pal.with_nonfinite(pal.levels(scaled(tile, view)), tile.data, tile.gap)
    marks = tile.marks
    if marks is not None and pal.mode != "none":  # dim the losers (never a NaN/Inf)
        levels = np.where(~marks & (levels >= 0) & (levels < pal.n), levels + pal.n, levels)
    if scale > 1:
        levels = np.repeat(np.repeat(levels, scale, axis=0), scale, axis=1)
        if marks is not None:
            marks = np.repeat(np.repeat(marks, scale, axis=0), scale, axis=1)
    if levels.shape[0] % 2:
        levels = np.vstack([levels, np.full((1, levels.shape[1]), -1)])
        if marks is not None:
            marks = np.vstack([marks, np.zeros((1, marks.shape[1]), dtype=bool)])
    top, bottom = levels[0::2], levels[1::2]
    rows: list[list[Segment]] = []
    if pal.mode == "none":
        # one glyph per cell: the pixel of the pair with the larger magnitude wins (NaN/Inf
        # always win)
        z, base = pal.zero_level, pal.special_base

        def magnitude(lv: np.ndarray) -> np.ndarray:
            return np.where(lv >= base, pal.n + 1, np.abs(np.where(lv < 0, z, lv) - z))

        chosen = np.where(magnitude(top) >= magnitude(bottom), top, bottom)
        glyphs = np.array([pal.glyph(i) for i in range(base + 3)] + [" "])
        text = glyphs[np.where(chosen < 0, base + 3, chosen)]
        # 0 plain, 1 NaN/Inf, 2 holds a window's maximum: underlined, its glyph kept
        kind = np.where(chosen >= base, 1, 0)
        if marks is not None:
            kind = np.where((marks[0::2] | marks[1::2]) & (kind == 0), 2, kind)
        for r in range(text.shape[0]):
            rows.append(_glyph_runs(text[r], kind[r], pal))
        return rows
    if pal.mode == "16":  # a cell keeps its colours if it holds a maximum, else is shaded
        n = pal.n
        dim_t, dim_b = (top >= n) & (top < 2 * n), (bottom >= n) & (bottom < 2 * n)
        keep = ~((dim_t | (top < 0)) & (dim_b | (bottom < 0)))
        top = np.where(dim_t & keep, top - n, top)
        bottom = np.where(dim_b & keep, bottom - n, bottom)
    for r in range(top.shape[0]):
        segs: list[Segment] = []
        t_row, b_row = top[r].tolist(), bottom[r].tolist()
        run_key = (t_row[0], b_row[0])
        run = 0
        for key in zip(t_row, b_row, strict=True):
            if key == run_key:
                run += 1
                continue
            segs.append(_cell_run(pal, run_key, run))
            run_key, run = key, 1
        segs.append(_cell_run(pal, run_key, run))
        rows.append(segs)
    return rows


def _glyph_runs(text: np.ndarray, kind: np.ndarray, pal: Palette) -> list[Segment]:
    """One row of no-colour glyphs; ``kind`` 1 (NaN/Inf) in reverse video, 2 (a window's
    maximum) underlined."""
    styles = (PLAIN, pal.special_style(pal.special_base), MARKED)
    segs: list[Segment] = []
    start = 0
    flags = kind.tolist()
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            segs.append(Segment("".join(text[start:i]), styles[flags[start]]))
            start = i
    return segs


def _cell_run(pal: Palette, key: tuple[int, int], n: int) -> Segment:
    top, bottom = key
    base = pal.special_base
    if top >= base or bottom >= base:  # NaN/Inf: its glyph (the top pixel's if both are)
        level = top if top >= base else bottom
        return Segment(pal.glyph(level) * n, pal.special_style(level))
    if top < 0 and bottom < 0:
        return Segment(" " * n, PLAIN)
    if pal.mode == "16" and max(top, bottom) >= pal.n:  # dimmed: the brighter pixel's colour
        # shaded over black
        level = max((lv for lv in key if lv >= 0), key=lambda lv: abs(lv - pal.n - pal.zero_level))
        return Segment(DIM_GLYPH_16 * n, Style(color=pal.colors[level],
                                                bgcolor=pal.colors[pal.zero_level]))
    if top < 0:
        return Segment("▄" * n, Style(color=pal.colors[bottom]))
    return Segment(HALF * n, pal.cell_style(top, bottom))


def shrink(tile: Tile, k: int) -> Tile:
    """``tile`` at 1/k resolution, so that every channel fits on screen at once: each pixel is
    the mean of a k x k block (a NaN or an Inf in a block shows). Marks (a pooling window's
    argmax) can't be shown per pixel any more and are dropped. A picture, not maths: the numbers
    themselves are in the values table."""
    if k == 1:
        return tile
    h, w = tile.data.shape
    H, W = -(-h // k) * k, -(-w // k) * k
    data = np.pad(np.asarray(tile.data, dtype=float), ((0, H - h), (0, W - w)), mode="edge")
    blocks = data.reshape(H // k, k, W // k, k).transpose(0, 2, 1, 3).reshape(H // k, W // k, -1)
    finite = np.isfinite(blocks)
    with np.errstate(over="ignore", invalid="ignore"):
        small = np.where(finite, blocks, 0).sum(axis=2) / np.maximum(finite.sum(axis=2), 1)
    # a NaN or an Inf in a block stays visible; an Inf first, since NaNs usually come from Infs
    small = np.where(np.isnan(blocks).any(axis=2), np.nan, small)
    small = np.where((blocks == -np.inf).any(axis=2), -np.inf, small)
    small = np.where((blocks == np.inf).any(axis=2), np.inf, small)
    return Tile(tile.label, small, tile.lo, tile.hi, None, tile.channel, None)


def _fits(tiles: list[Tile], width: int, height: int, k: int) -> tuple[int, int] | None:
    """The largest scale (columns per pixel) at which all tiles, at 1/k resolution, fit in
    ``width`` x ``height``; and their tiles per row. None if they don't fit even at scale 1."""
    best = None
    for s in SCALES:
        tw = max(-(-t.data.shape[1] // k) for t in tiles) * s
        th = max(math.ceil(-(-t.data.shape[0] // k) * s / 2) for t in tiles) + 1  # + label
        if tw > width:
            break
        per_row = max(1, (width + GAP) // (tw + GAP))
        if math.ceil(len(tiles) / per_row) * th > height:
            break
        best = (s, per_row)
    return best


def fit_scale(tiles: list[Tile], width: int, height: int, may_shrink: bool = True
              ) -> tuple[int, int, int]:
    """How to draw ``tiles`` so that all of them are on screen at once: (scale in columns per
    pixel, tiles per row, resolution divisor k). Full resolution when it fits; kernels (tiles
    with gaps) are never shrunk. If nothing fits, full resolution at scale 1, scrolling."""
    can_shrink = may_shrink and all(t.gap is None for t in tiles)
    top = max(max(t.data.shape) for t in tiles)
    for k in range(1, top + 1 if can_shrink else 2):
        fit = _fits(tiles, width, height, k)
        if fit is not None:
            return (*fit, k)
    return 1, max(1, (width + GAP) // (tiles[0].data.shape[1] + GAP)), 1


def bar_lines(view: View, pal: Palette, width: int) -> list[Strip]:
    """Labelled horizontal bars for a short 1-D tensor; signed bars grow left/right of an axis."""
    label_w = max(len(b.label) for b in view.bars) + 1
    note_w = max((len(b.note) for b in view.bars), default=0)
    value_w = 11
    bar_w = max(4, width - label_w - value_w - note_w - 2)
    m = max(abs(view.lo), abs(view.hi)) or 1.0
    lines = []
    for b in view.bars:
        segs = [Segment(f"{b.label:>{label_w - 1}} ", LABEL_STYLE)]
        if not math.isfinite(b.value):  # NaN/Inf: a loud label across the bar, off the scale
            level = pal.with_nonfinite(np.array([0]), np.array([b.value]))[0]
            name = SPECIAL_NAMES[level - pal.special_base]
            glyph = pal.glyph(level)
            segs.append(Segment(f" {name}! ".center(bar_w, glyph), pal.special_style(level)))
            segs.append(Segment(f" {_bar_value(b.value)}", Style(bold=True)))
            if b.note:
                segs.append(Segment(" " + b.note, Style(bold=True)))
            lines.append(Strip(segs))
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            t = b.value / m if view.diverging else \
                (b.value / 2 - view.lo / 2) / ((view.hi / 2 - view.lo / 2) or 1.0)
        level = int(pal.levels(np.array([t]))[0])
        if pal.mode == "none":
            glyph, style = ("█" if b.value >= 0 else "≡"), Style()
        else:
            glyph, style = "█", Style(color=pal.colors[level])
        if view.diverging:
            half = (bar_w - 1) // 2
            n = round(min(1.0, abs(t)) * half)
            left = " " * (half - n) + (glyph * n if b.value < 0 else " " * n)
            right = (glyph * n if b.value > 0 else " " * n) + " " * (half - n)
            segs += [Segment(left[: half - n], PLAIN), Segment(left[half - n:], style),
                     Segment("│", DIM_STYLE), Segment(right[:n], style),
                     Segment(right[n:], PLAIN)]
            used = 2 * half + 1
        else:
            n = round(min(1.0, max(0.0, t)) * bar_w)
            segs += [Segment(glyph * n, style), Segment("·" * (bar_w - n), DIM_STYLE)]
            used = bar_w
        segs.append(Segment(" " * (bar_w - used), PLAIN))
        segs.append(Segment(f" {_bar_value(b.value)}", PLAIN))
        if b.note:
            segs.append(Segment(" " + b.note, Style(bold=True, color="yellow")
                                if pal.mode != "none" else Style(bold=True)))
        lines.append(Strip(segs))
    return lines


def _bar_value(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return f"{v:+.4f}" if 1e-3 <= abs(v) < 1e6 or v == 0 else f"{v:+.2e}"


def tile_lines(view: View, pal: Palette, width: int, height: int
               ) -> tuple[list[Strip], int, list[tuple[int, int, int, int, int]]]:
    """The picture's lines, the resolution divisor it needed to fit (1: full), and where each
    tile's pixels start: (tile index, x, line, columns per pixel, resolution divisor)."""
    # one channel chosen with a number key: full size, scrolling if it must
    scale, per_row, k = fit_scale(view.tiles, width, height, view.selected is None)
    tiles = [shrink(t, k) for t in view.tiles]
    lines: list[Strip] = []
    boxes = []
    for start in range(0, len(tiles), per_row):
        row_tiles = tiles[start: start + per_row]
        x = 0
        for i, t in enumerate(row_tiles):
            boxes.append((start + i, x, len(lines) + 1, scale, k))
            x += t.data.shape[1] * scale + GAP
        cells = [tile_cells(t, view, pal, scale) for t in row_tiles]
        widths = [t.data.shape[1] * scale for t in row_tiles]
        label = []
        for i, (t, w) in enumerate(zip(row_tiles, widths, strict=True)):
            if i:
                label.append(Segment(" " * GAP, PLAIN))
            label.append(Segment(t.label[:max(w, 2)].ljust(w), LABEL_STYLE))
        lines.append(Strip(label))
        for r in range(max(len(c) for c in cells)):
            segs: list[Segment] = []
            for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
                if i:
                    segs.append(Segment(" " * GAP, PLAIN))
                segs.extend(c[r] if r < len(c) else [Segment(" " * w, PLAIN)])
            lines.append(Strip(segs))
    return lines, k, boxes


class TensorView(ScrollView, can_focus=False):
    """Heatmaps or bars of the current step, with cached strips."""

    class Clicked(Message):
        """A click on pixel (row, col) of tile ``tile`` of the view, in the tile's data."""

        def __init__(self, tile: int, row: int, col: int) -> None:
            super().__init__()
            self.tile, self.row, self.col = tile, row, col

    class Resolution(Message):
        """The picture's resolution divisor changed (its pane was resized)."""

        def __init__(self, reduction: int) -> None:
            super().__init__()
            self.reduction = reduction

    DEFAULT_CSS = """
    TensorView { height: 1fr; scrollbar-size: 1 1; }
    """
    KEEP = 8  # pictures kept

    def __init__(self, *, mode: str = "truecolor", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.mode = mode
        self.view: View | None = None
        self._lines: list[Strip] = []
        self._key: tuple | None = None
        self._base: Style | None = None  # the widget's own style, cached for render_line
        self.reduction = 1  # the picture is at 1/reduction resolution (to fit every channel)
        self.boxes: list[tuple[int, int, int, int, int]] = []  # where tiles are (tile_lines)
        # (id(view), width, height, mode) -> (view, lines, reduction, boxes): the last few
        self._built: OrderedDict[tuple, tuple] = OrderedDict()

    def show(self, view: View, mode: str | None = None) -> None:
        self.view = view
        if mode is not None:
            self.mode = mode
        old, size, virtual = self._lines, self.size, self.virtual_size
        self._key = None
        self._rebuild()
        if self._key is None or self.size != size or self.virtual_size != virtual:
            self.refresh()
        else:
            refresh_changed(self, old, self._lines)

    def prepare(self, view: View) -> int:
        """Build ``view``'s picture now (while idle) for a later ``show(view)``; returns the
        resolution divisor it will be drawn at."""
        width, height = self.size
        return self._picture(view, width, height)[1] if width > 0 else 1

    def _picture(self, view: View, width: int, height: int
                 ) -> tuple[list[Strip], int, list[tuple[int, int, int, int, int]]]:
        """The lines, resolution divisor and tile boxes of ``view`` in a width x height pane,
        built once and kept for the last few views."""
        key = (id(view), width, height, self.mode)
        got = self._built.get(key)
        if got is not None and got[0] is view:
            return got[1:]
        pal = palette(self.mode, view.diverging)
        if view.kind == "bars":
            lines, reduction, boxes = bar_lines(view, pal, width), 1, []
        else:
            lines, reduction, boxes = tile_lines(view, pal, width, height)
            if len(lines) > height:  # it will scroll: leave room for the scrollbar
                lines, reduction, boxes = tile_lines(view, pal, width - 1, height)
        self._built[key] = (view, lines, reduction, boxes)
        while len(self._built) > self.KEEP:
            self._built.popitem(last=False)
        return lines, reduction, boxes

    def _rebuild(self) -> None:
        width, height = self.size
        if self.view is None or width <= 0:
            self._lines = []
            return
        key = (id(self.view), width, height, self.mode)
        if key == self._key:
            return
        self._key = key
        reduction_before = self.reduction
        lines, self.reduction, self.boxes = self._picture(self.view, width, height)
        self._lines = lines
        if self.reduction != reduction_before:
            self.post_message(self.Resolution(self.reduction))
        w = max((s.cell_length for s in lines), default=0)
        # a virtual size is a layout pass: it changes only when the picture starts or stops
        # scrolling or scrolls by another amount, not with a picture that fits, nor when the
        # pane is resized (the explanation under it grew)
        virtual = Size(w, len(lines)) if len(lines) > height or w > width else Size()
        if virtual != self.virtual_size:
            self.virtual_size = virtual
            # show or hide the scrollbar now, in the same layout pass (Textual would only
            # after that pass, in a second one)
            self._refresh_scrollbars()

    def on_resize(self) -> None:
        self._rebuild()
        self.refresh()

    def pixel_at(self, x: int, y: int) -> tuple[int, int, int] | None:
        """(tile, row, col) of the pixel at (x, y) of the pane's content, scrolling included.
        A text cell holds two pixel rows at scale 1: a click picks the upper one."""
        if self.view is None or self.view.kind != "tiles":
            return None
        x, y = x + int(self.scroll_x), y + int(self.scroll_y)
        for index, x0, y0, scale, k in self.boxes:
            h, w = self.view.tiles[index].data.shape
            col = (x - x0) // scale
            row = (y - y0) * 2 // scale
            if x >= x0 and y >= y0 and col * k < w and row * k < h:
                return index, row * k, col * k
        return None

    def scroll_to_pixel(self, tile: int, row: int) -> None:
        """Scroll (if need be) so that pixel row ``row`` of tile ``tile`` is on screen."""
        self._rebuild()
        for index, _x0, y0, scale, k in self.boxes:
            if index == tile:
                line = y0 + (row // k) * scale // 2
                height = self.size.height
                if height and not (self.scroll_y <= line < self.scroll_y + height):
                    self.scroll_to(y=max(0, line - height // 2), animate=False)
                return

    def on_click(self, event: events.Click) -> None:
        hit = self.pixel_at(event.x, event.y)
        if hit is not None:
            self.post_message(self.Clicked(*hit))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None

    def render_line(self, y: int) -> Strip:
        self._rebuild()
        scroll_x, scroll_y = self.scroll_offset
        i = y + scroll_y
        width = self.scrollable_content_region.width
        if self._base is None:  # the style walks every ancestor: once, not once per line
            self._base = self.rich_style
        if i >= len(self._lines):
            return Strip.blank(width, self._base)
        return self._lines[i].crop_extend(scroll_x, scroll_x + width, self._base)

    @property
    def cells(self) -> list[list[tuple[str, Style | None]]]:
        """The picture as (text, style) runs per line: what the terminal will show."""
        self._rebuild()
        return [[(seg.text, seg.style) for seg in strip] for strip in self._lines]

    @property
    def text_lines(self) -> list[str]:
        """The picture as plain text (for tests and screen readers)."""
        self._rebuild()
        return [s.text for s in self._lines]
