"""Colour maps for heatmaps, in four colour depths: truecolor, 256, 16 and none.

Pure presentation: a value already scaled to ``t`` in [-1, 1] (diverging) or [0, 1] (sequential)
becomes a *level*, and a level becomes a Rich style (a colour) or, without colour, a glyph.
Signed tensors stay readable without colour because negative and positive levels use different
glyph families (``· - = ≡`` below zero, ``░ ▒ ▓ █`` above).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np
from rich._palettes import STANDARD_PALETTE
from rich.color import Color, ColorSystem
from rich.style import Style

MODES = ("truecolor", "256", "16", "none")

# Anchor colours. Both maps are dark at their low end / at zero, so dead ReLUs and gradients
# that did not reach a cell read as "nothing", and brightness grows with magnitude.
DIVERGING_ANCHORS = [  # t = -1 .. 1
    (-1.0, (140, 200, 255)), (-0.5, (40, 110, 220)), (0.0, (22, 22, 28)),
    (0.5, (215, 70, 45)), (1.0, (255, 210, 120)),
]
SEQUENTIAL_ANCHORS = [  # t = 0 .. 1 (inferno-like)
    (0.0, (16, 14, 24)), (0.25, (75, 20, 120)), (0.5, (185, 55, 90)),
    (0.75, (245, 135, 40)), (1.0, (250, 245, 160)),
]

# 256 colours: xterm indices picked by hand from the 6x6x6 cube and the grey ramp (Rich's
# nearest-colour downgrade of the ramp gave grey near zero, so the sign was lost, and olive
# dims). Each level is paired with its dimmed colour: darker, of the same hue, and not itself a
# level, so a dimmed pooling non-maximum never passes for a smaller value.
DIVERGING_256 = [  # (level, dimmed); -1 .. 0 .. 1: sky blue, blue, navy, black, red, orange, amber
    (117, 67), (39, 24), (32, 24), (25, 17), (18, 17), (233, 232),
    (88, 52), (160, 52), (208, 130), (215, 137), (222, 136),
]
SEQUENTIAL_256 = [  # 0 .. 1 (inferno-like): black, purple, plum, crimson, salmon, orange, amber
    (233, 232), (54, 53), (89, 53), (161, 88), (167, 52), (208, 130), (215, 137), (221, 136),
    (229, 143),
]

# 16 colours: ANSI indices, dark to bright; negatives on the blue side, positives red to yellow.
# Non-maxima of a pooling window are shaded (░ on black), not recoloured: 16 colours have no
# darker twin of each level.
DIVERGING_16 = [14, 12, 4, 0, 1, 9, 11]  # bright cyan, bright blue, blue, black, red, bright red,
#                                          bright yellow
SEQUENTIAL_16 = [0, 4, 5, 9, 11]  # black, blue, magenta, bright red, bright yellow
DIM_GLYPH_16 = "░"

# No colour: glyphs carry magnitude; negative and positive glyphs differ so the sign survives.
NEGATIVE_GLYPHS = "·-=≡"  # small -> large magnitude
POSITIVE_GLYPHS = "░▒▓█"
EMPTY_GLYPH = " "
# Non-finite values: a glyph of their own (with or without colour) on a colour that neither map
# uses, so they never pass for a large or a small number. The colour scale ignores them.
NAN_GLYPH, POSINF_GLYPH, NEGINF_GLYPH = "?", "▲", "▼"
SPECIAL_NAMES = ("NaN", "+Inf", "-Inf")
SPECIAL_GLYPHS = (NAN_GLYPH, POSINF_GLYPH, NEGINF_GLYPH)
SPECIAL_RGB = ((40, 220, 70), (255, 70, 255), (0, 235, 235))  # green, magenta, cyan
SPECIAL_16 = (10, 13, 6)  # bright green, bright magenta, cyan
# How each depth shows a pooling window's maximum and the other cells (the legends' words).
POOL_MARKS = {"truecolor": ("bright", "rest dimmed"), "256": ("bright", "rest dimmed"),
              "16": ("solid", "rest shaded ░"), "none": ("underlined", "rest plain")}

DIM = 0.3  # brightness kept by pixels that are not a pooling window's maximum


def detect_mode(env: dict[str, str] | None = None) -> str:
    """The colour depth the terminal most likely supports (used for ``--color auto``)."""
    env = dict(os.environ) if env is None else env
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return "none"
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    if "256" in env.get("TERM", ""):
        return "256"
    return "16"


def ansi16(index: int) -> Color:
    """ANSI colour ``index`` (0-15) as the RGB that Rich downgrades to exactly that index.

    Not a named colour: Textual turns named ANSI colours into its theme's RGB (Monokai) before
    the console downgrades them, and there red and magenta, blue and bright blue coincide."""
    return Color.from_triplet(STANDARD_PALETTE[index])


def _ramp(anchors: list[tuple[float, tuple[int, int, int]]], ts: np.ndarray) -> np.ndarray:
    xs = [a[0] for a in anchors]
    rgb = np.array([a[1] for a in anchors], dtype=float)
    return np.stack([np.interp(ts, xs, rgb[:, k]) for k in range(3)], axis=1)


@dataclass
class Palette:
    """A colour map quantised to levels for one colour depth.

    Level ``-1`` is "no pixel" (a gap). Levels ``0..n-1`` run from the low end (most negative for a
    diverging map) to the high end; levels ``n..2n-1`` are the same colours dimmed, used for pixels
    that are not a pooling window's maximum; levels ``2n``, ``2n+1``, ``2n+2`` are NaN, +Inf and
    -Inf (``special_base`` and up), drawn as a glyph of their own.
    """

    mode: str
    diverging: bool
    _styles: dict[tuple[int, int], Style] = field(default_factory=dict, repr=False)

    @cached_property
    def n(self) -> int:
        if self.mode == "16":
            return len(DIVERGING_16 if self.diverging else SEQUENTIAL_16)
        if self.mode == "256":
            return len(DIVERGING_256 if self.diverging else SEQUENTIAL_256)
        if self.mode == "none":
            g = len(POSITIVE_GLYPHS)
            return 2 * g + 1 if self.diverging else g + 1
        return 33 if self.diverging else 17

    @property
    def zero_level(self) -> int:
        return self.n // 2 if self.diverging else 0

    @property
    def special_base(self) -> int:
        """The NaN level; +Inf and -Inf follow it."""
        return 2 * self.n

    def with_nonfinite(self, levels: np.ndarray, data: np.ndarray,
                       gap: np.ndarray | None = None) -> np.ndarray:
        """``levels`` with the NaN, +Inf and -Inf cells of ``data`` (not gaps) set to their
        special levels."""
        d = np.asarray(data, dtype=float)
        real = np.ones(d.shape, dtype=bool) if gap is None else ~gap
        base = self.special_base
        out = np.where(np.isnan(d) & real, base, levels)
        out = np.where(np.isposinf(d), base + 1, out)
        return np.where(np.isneginf(d), base + 2, out)

    def is_special(self, level: int) -> bool:
        return level >= self.special_base

    def special_style(self, level: int) -> Style:
        """A NaN/Inf cell: its glyph in black on its own colour (reversed without colour)."""
        k = level - self.special_base
        if self.mode == "none":
            return Style(bold=True, reverse=True)
        if self.mode == "16":
            return Style(bold=True, color=ansi16(0), bgcolor=ansi16(SPECIAL_16[k]))
        color = Color.from_rgb(*SPECIAL_RGB[k])
        if self.mode == "256":
            color = color.downgrade(ColorSystem.EIGHT_BIT)
        return Style(bold=True, color=Color.from_rgb(0, 0, 0), bgcolor=color)

    def levels(self, t: np.ndarray) -> np.ndarray:
        """Scaled values (NaN = gap) -> integer levels (-1 = gap)."""
        t = np.asarray(t, dtype=float)
        gap = np.isnan(t)
        t = np.clip(np.nan_to_num(t), -1.0 if self.diverging else 0.0, 1.0)
        if self.diverging:
            lv = np.rint((t + 1.0) / 2.0 * (self.n - 1))
        else:
            lv = np.rint(t * (self.n - 1))
        lv = lv.astype(np.int64)
        if self.diverging:  # a nonzero value never rounds to the zero colour's glyph or colour
            half = self.n // 2
            lv = np.where((t > 0) & (lv == half), half + 1, lv)
            lv = np.where((t < 0) & (lv == half), half - 1, lv)
        elif self.mode == "none":
            lv = np.where((t > 0) & (lv == 0), 1, lv)
        lv[gap] = -1
        return lv

    @cached_property
    def colors(self) -> list[Color | None]:
        """Rich colours for levels 0..2n-1 (dimmed second half); empty without colour."""
        n = self.n
        if self.mode == "none":
            return []
        if self.mode == "16":  # dimmed levels keep their colour; tile_cells shades them
            base = [ansi16(i) for i in (DIVERGING_16 if self.diverging else SEQUENTIAL_16)]
            return base + base
        if self.mode == "256":
            pairs = DIVERGING_256 if self.diverging else SEQUENTIAL_256
            return [Color.from_ansi(p[k]) for k in (0, 1) for p in pairs]
        ts = np.linspace(-1, 1, n) if self.diverging else np.linspace(0, 1, n)
        rgb = _ramp(DIVERGING_ANCHORS if self.diverging else SEQUENTIAL_ANCHORS, ts)
        rgb = np.concatenate([rgb, rgb * DIM + 10 * (1 - DIM)])
        return [Color.from_rgb(*(int(round(c)) for c in row)) for row in rgb]

    def glyph(self, level: int) -> str:
        """The no-colour glyph for a level."""
        if level < 0:
            return EMPTY_GLYPH
        if level >= self.special_base:
            return SPECIAL_GLYPHS[level - self.special_base]
        level %= self.n
        if self.diverging:
            d = level - self.zero_level
            if d == 0:
                return EMPTY_GLYPH
            return (POSITIVE_GLYPHS if d > 0 else NEGATIVE_GLYPHS)[abs(d) - 1]
        return EMPTY_GLYPH if level == 0 else POSITIVE_GLYPHS[level - 1]

    def cell_style(self, top: int, bottom: int) -> Style:
        """Style for an upper-half-block cell: top pixel as foreground, bottom as background."""
        key = (top, bottom)
        style = self._styles.get(key)
        if style is None:
            cols = self.colors
            style = Style(color=cols[top] if top >= 0 else None,
                          bgcolor=cols[bottom] if bottom >= 0 else None)
            self._styles[key] = style
        return style

    def swatch(self, level: int) -> tuple[str, Style]:
        """(text, style) of one cell of the colour scale for ``level``."""
        if self.is_special(level):
            return self.glyph(level), self.special_style(level)
        if self.mode == "none":
            return self.glyph(level), Style()
        return " ", Style(bgcolor=self.colors[level])


@cache
def palette(mode: str, diverging: bool) -> Palette:
    """Shared, cached palettes (their style caches make redraws cheap)."""
    if mode not in MODES:
        raise ValueError(f"unknown colour mode {mode!r}; choose one of {', '.join(MODES)}")
    return Palette(mode, diverging)


GREY_GLYPHS = " ░▒▓█"  # ink without colour: none, faint .. full


@cache
def grey_ramp(mode: str) -> tuple[Color, ...]:
    """Black to white in the steps a colour depth has (empty without colour): a drawing's ink."""
    if mode == "none":
        return ()
    if mode == "16":
        return tuple(ansi16(i) for i in (0, 8, 7, 15))
    if mode == "256":  # black, the 24-step grey ramp, white
        return tuple(Color.from_ansi(i) for i in (16, *range(232, 256), 231))
    return tuple(Color.from_rgb(g, g, g) for g in np.linspace(0, 255, 32).round().astype(int))


def grey_level(value: float, n: int) -> int:
    """Ink 0..1 -> a step of an n-step ramp; any ink at all is at least the first step up."""
    level = int(round(min(max(value, 0.0), 1.0) * (n - 1)))
    return 1 if level == 0 and value > 0.02 else level


def cursor_color(mode: str, pen_down: bool) -> Color | None:
    """The drawing cursor: amber, red while the pen is down (None: drawn reversed instead)."""
    if mode == "none":
        return None
    if mode == "16":
        return ansi16(9 if pen_down else 11)
    color = Color.from_rgb(*((235, 60, 50) if pen_down else (255, 190, 0)))
    return color.downgrade(ColorSystem.EIGHT_BIT) if mode == "256" else color
