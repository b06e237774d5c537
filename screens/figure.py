"""A step's picture as a figure for slides: every tile of a ``View`` at full resolution, one
square per number, in the screen's colour map (continuous, not quantised to the terminal's
levels), with the title, the tile labels and the colour scale. SVG (squares, so it stays sharp
at any size) and PNG (Pillow). Drawing only: the values and their scale come from the View.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from dataclasses import dataclass
from html import escape

import numpy as np

from screens.colors import DIM, DIVERGING_ANCHORS, SEQUENTIAL_ANCHORS, SPECIAL_RGB, _ramp
from screens.views import Tile, View
from screens.widgets.tensor_view import scaled

TILE_PX = 168  # the longer side of the largest tile
GAP = 14
LABEL = 18  # a tile label's line
TITLE = 30
SCALE_BAR = (240, 12)
MARGIN = 16
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"


def tile_rgb(tile: Tile, view: View) -> np.ndarray:
    """(h, w, 3) uint8: each number's colour, NaN/+Inf/-Inf in their own, a gap in the page's,
    the numbers that are not a pooling window's maximum faded towards the page."""
    t = scaled(tile, view)
    anchors = DIVERGING_ANCHORS if view.diverging and not view.magnitude else SEQUENTIAL_ANCHORS
    rgb = _ramp(anchors, np.nan_to_num(t).ravel()).reshape(*t.shape, 3)
    if tile.marks is not None:
        faded = ~tile.marks[..., None]
        rgb = np.where(faded, rgb * DIM + np.array(BACKGROUND) * (1 - DIM), rgb)
    d = np.asarray(tile.data, dtype=float)
    for special, color in zip((np.isnan(d), np.isposinf(d), np.isneginf(d)), SPECIAL_RGB,
                              strict=True):
        rgb[special] = color
    if tile.gap is not None:
        rgb[tile.gap] = BACKGROUND
    return np.rint(rgb).astype(np.uint8)


@dataclass
class _Layout:
    px: int  # pixels per number
    cols: int
    cell_w: int  # one tile's box, label included
    cell_h: int
    width: int
    height: int
    tiles_top: int
    scale_top: int


def _layout(view: View) -> _Layout:
    tiles = view.tiles
    side = max(max(t.data.shape) for t in tiles)
    px = max(1, TILE_PX // side)
    w = max(t.data.shape[1] for t in tiles) * px
    h = max(t.data.shape[0] for t in tiles) * px
    cols = min(len(tiles), max(1, math.ceil(math.sqrt(len(tiles) * 4 / 3))))
    rows = -(-len(tiles) // cols)
    cell_w, cell_h = max(w, 9 * len(max((t.label for t in tiles), key=len))) + GAP, h + LABEL + GAP
    width = max(2 * MARGIN + cols * cell_w - GAP, 2 * MARGIN + SCALE_BAR[0] + 220)
    tiles_top = MARGIN + TITLE
    scale_top = tiles_top + rows * cell_h
    return _Layout(px, cols, cell_w, cell_h, width, scale_top + SCALE_BAR[1] + LABEL + MARGIN,
                   tiles_top, scale_top)


def _scale_rgb(view: View, n: int) -> np.ndarray:
    ts = np.linspace(-1, 1, n) if view.diverging and not view.magnitude else np.linspace(0, 1, n)
    anchors = DIVERGING_ANCHORS if view.diverging and not view.magnitude else SEQUENTIAL_ANCHORS
    return np.rint(_ramp(anchors, ts)).astype(np.uint8)


def _scale_words(view: View) -> tuple[str, str, str]:
    if view.magnitude:
        return "|x| <= 1e-4 of the top", "top", "log scale, 4 decades"
    lo, hi = (-max(abs(view.lo), abs(view.hi)), max(abs(view.lo), abs(view.hi))) \
        if view.diverging else (view.lo, view.hi)
    note = "shared scale" if view.shared else "each tile its own scale (the shared one shown)"
    return f"{lo:.4g}", f"{hi:.4g}", note


def _bars_rgb(view: View) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels, bar lengths in [0, 1] (signed for a diverging view) and colours of a bar view."""
    values = np.array([b.value for b in view.bars], dtype=float)
    m = max(abs(view.lo), abs(view.hi)) or 1.0
    t = values / m if view.diverging else (values - view.lo) / ((view.hi - view.lo) or 1.0)
    t = np.nan_to_num(np.clip(t, -1, 1))
    anchors = DIVERGING_ANCHORS if view.diverging else SEQUENTIAL_ANCHORS
    return ([f"{b.label} {b.value:.4g} {b.note}".rstrip() for b in view.bars], t,
            np.rint(_ramp(anchors, t)).astype(np.uint8))


def _hex(rgb) -> str:  # noqa: ANN001
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


# what a figure is made of, drawn by both formats: ("text", x, y, words, rgb, bold),
# ("rect", x, y, w, h, rgb), ("pixels", x, y, (h, w, 3) uint8, px, gap mask or None)
Shape = tuple


def _shapes(view: View) -> tuple[int, int, list[Shape]]:
    shapes: list[Shape] = [("text", MARGIN, MARGIN, view.title, INK, True)]
    if view.kind == "bars":
        labels, t, colors = _bars_rgb(view)
        row, reach = 22, 300  # a bar's line; the longest bar, each way from zero
        zero = MARGIN + 8 * max(map(len, labels)) + 16 + (reach if view.diverging else 0)
        for i, (label, ti, c) in enumerate(zip(labels, t, colors, strict=True)):
            y = MARGIN + TITLE + i * row
            length = abs(float(ti)) * reach
            shapes.append(("text", MARGIN, y + 3, label, INK, False))
            shapes.append(("rect", zero - length if ti < 0 else zero, y + 3, length, row - 6, c))
        shapes.append(("rect", zero, MARGIN + TITLE, 1, row * len(labels), (150, 150, 150)))
        return zero + reach + MARGIN, MARGIN * 2 + TITLE + row * len(labels), shapes
    lay = _layout(view)
    for k, tile in enumerate(view.tiles):
        x0 = MARGIN + (k % lay.cols) * lay.cell_w
        y0 = lay.tiles_top + (k // lay.cols) * lay.cell_h
        shapes.append(("text", x0, y0 + 1, tile.label, INK, False))
        shapes.append(("pixels", x0, y0 + LABEL, tile_rgb(tile, view), lay.px, tile.gap))
    lo, hi, note = _scale_words(view)
    bar_w, bar_h = SCALE_BAR
    x = MARGIN + 8 * len(lo) + 8
    scale = np.repeat(_scale_rgb(view, bar_w)[None], bar_h, axis=0)
    shapes.append(("pixels", x, lay.scale_top, scale, 1, None))
    shapes.append(("text", MARGIN, lay.scale_top - 2, lo, INK, False))
    shapes.append(("text", x + bar_w + 8, lay.scale_top - 2, hi, INK, False))
    shapes.append(("text", MARGIN, lay.scale_top + bar_h + 4,
                   " ".join(filter(None, (note, view.legend))), (102, 102, 102), False))
    return lay.width, lay.height, shapes


def figure_svg(view: View) -> str:
    """The picture as an SVG document: a square per run of one colour, so it stays sharp."""
    width, height, shapes = _shapes(view)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="13" '
           f'shape-rendering="crispEdges">',
           f'<rect width="100%" height="100%" fill="{_hex(BACKGROUND)}"/>']
    for shape in shapes:
        kind, x, y = shape[:3]
        if kind == "text":
            words, rgb, bold = shape[3:]
            weight = ' font-weight="bold"' if bold else ""
            out.append(f'<text x="{x}" y="{y + 12}" fill="{_hex(rgb)}"{weight}>'
                       f'{escape(words)}</text>')
        elif kind == "rect":
            w, h, rgb = shape[3:]
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{h}" '
                       f'fill="{_hex(rgb)}"/>')
        else:
            rgb, px, gap = shape[3:]
            for r in range(rgb.shape[0]):
                c = 0
                while c < rgb.shape[1]:
                    e = c + 1
                    while e < rgb.shape[1] and (rgb[r, e] == rgb[r, c]).all() and \
                            (gap is None or gap[r, e] == gap[r, c]):
                        e += 1
                    if gap is None or not gap[r, c]:
                        out.append(f'<rect x="{x + c * px}" y="{y + r * px}" '
                                   f'width="{(e - c) * px}" height="{px}" '
                                   f'fill="{_hex(rgb[r, c])}"/>')
                    c = e
    return "\n".join(out) + "\n</svg>\n"


def figure_png(view: View) -> bytes:
    """The picture as a PNG, the same figure as the SVG."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, shapes = _shapes(view)
    try:  # the SVG's font where the system has it (it draws ◀ and ★); else Pillow's own
        font = ImageFont.truetype("DejaVuSansMono.ttf", 13)
    except OSError:
        font = ImageFont.load_default(size=13)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape in shapes:
        kind, x, y = shape[:3]
        if kind == "text":
            draw.text((x, y), shape[3], fill=tuple(shape[4]), font=font)
        elif kind == "rect":
            w, h, rgb = shape[3:]
            if w >= 1:
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(int(v) for v in rgb))
        else:
            rgb, px, _ = shape[3:]  # a gap is already the page's colour
            img.paste(Image.fromarray(rgb.repeat(px, axis=0).repeat(px, axis=1), "RGB"), (x, y))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def png_converter() -> str | None:
    """What turns an SVG into a PNG here: ``rsvg-convert`` (Debian's librsvg2-bin), else the
    cairosvg package; None if neither is installed."""
    if shutil.which("rsvg-convert"):
        return "rsvg-convert"
    try:
        import cairosvg  # noqa: F401
    except ImportError:
        return None
    return "cairosvg"


def svg_to_png(svg: str) -> bytes | None:
    """``svg`` as a PNG by ``png_converter()``; None without one, or if it fails."""
    converter = png_converter()
    if converter == "rsvg-convert":
        try:
            done = subprocess.run(["rsvg-convert", "--format", "png"], input=svg.encode(),
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 and done.stdout else None
    if converter == "cairosvg":
        import cairosvg

        try:
            return cairosvg.svg2png(bytestring=svg.encode())
        except Exception:  # noqa: BLE001 - any failure: no PNG, the SVG is saved anyway
            return None
    return None


def text_svg(text, width: int, title: str) -> str:  # noqa: ANN001 - a rich Text
    """Styled terminal text as an SVG (Rich's export, in the colours it was drawn in)."""
    from rich.console import Console

    console = Console(record=True, width=width, file=io.StringIO(), color_system="truecolor",
                      force_terminal=True)
    console.print(text)
    return console.export_svg(title=f"cnntui: {title}")
