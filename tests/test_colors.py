"""Each colour depth's palette against its scale: monotone, distinct, dimmed twins that keep the
hue, NaN/Inf colours off the scale, and colours that survive Textual's way to the terminal.

Colours are judged as a terminal shows them: truecolor and 256 by their RGB (Rich's triplet of
the xterm index), 16 by the standard xterm table of ANSI 0-15; brightness and hue in Oklab.
"""

from __future__ import annotations

import numpy as np
import pytest
from rich.color import Color, ColorSystem, ColorType
from rich.style import Style
from textual._ansi_theme import MONOKAI
from textual.filter import ANSIToTruecolor

from cnntui.model import weights_from
from cnntui.trace import trace_digit
from screens.colors import DIM_GLYPH_16, MODES, palette
from screens.views import build_view
from screens.widgets.tensor_view import tile_cells

XTERM_16 = [(0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205),
            (0, 205, 205), (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0),
            (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
SYSTEMS = {"truecolor": ColorSystem.TRUECOLOR, "256": ColorSystem.EIGHT_BIT,
           "16": ColorSystem.STANDARD}
COLOUR_MODES = [m for m in MODES if m != "none"]


def terminal_number(color: Color, mode: str) -> int | tuple[int, ...]:
    """What the terminal is sent for ``color``: an ANSI/xterm index, or RGB at truecolor."""
    if mode == "truecolor":
        return tuple(color.triplet)
    return color.downgrade(SYSTEMS[mode]).number


def rgb(color: Color, mode: str) -> tuple[int, int, int]:
    if mode == "16":
        return XTERM_16[terminal_number(color, mode)]
    return tuple(color.get_truecolor())


def oklab(c: tuple[int, int, int]) -> np.ndarray:
    v = np.asarray(c, dtype=float) / 255
    r, g, b = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    lms = np.cbrt([0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b,
                   0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b,
                   0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b])
    return np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                     [1.9779984951, -2.4285922050, 0.4505937099],
                     [0.0259040371, 0.7827717662, -0.8086757660]]) @ lms


def lightness(c) -> float:
    return float(oklab(c)[0])


def chroma(c) -> float:
    return float(np.hypot(*oklab(c)[1:]))


def hue_distance(c1, c2) -> float:
    h1, h2 = (np.degrees(np.arctan2(oklab(c)[2], oklab(c)[1])) for c in (c1, c2))
    return float(abs((h1 - h2 + 180) % 360 - 180))


GREY = 0.03  # Oklab chroma below which a colour has no hue to speak of


def scale_rgb(pal) -> tuple[list, list]:
    """(levels, dimmed levels) as RGB."""
    cols = [rgb(c, pal.mode) for c in pal.colors]
    return cols[:pal.n], cols[pal.n:]


def sides(pal, base: list) -> list[list]:
    """Runs of levels that must brighten: each side of zero outward, or low to high."""
    if not pal.diverging:
        return [base]
    z = pal.zero_level
    return [base[z::-1], base[z:]]


@pytest.mark.parametrize("diverging", [True, False], ids=["diverging", "sequential"])
@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_levels_brighten_with_magnitude_and_neighbours_differ(mode, diverging):
    pal = palette(mode, diverging)
    base, _ = scale_rgb(pal)
    for run in sides(pal, base):
        light = [lightness(c) for c in run]
        assert all(a <= b for a, b in zip(light, light[1:], strict=False)), (mode, light)
    sent = [terminal_number(c, mode) for c in pal.colors[:pal.n]]
    assert all(a != b for a, b in zip(sent, sent[1:], strict=False)), sent
    if mode != "truecolor":  # few colours: every level its own
        assert len(set(sent)) == pal.n, sent


@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_the_sign_shows_in_the_hue(mode):
    """Every nonzero diverging level is nearer in hue to its own side than to the other."""
    pal = palette(mode, True)
    base, _ = scale_rgb(pal)
    z = pal.zero_level
    neg, pos = base[:z], base[z + 1:]
    assert lightness(base[z]) < min(lightness(c) for c in neg + pos)  # zero is the darkest
    for own, other in ((neg, pos), (pos, neg)):
        for c in own:
            assert chroma(c) > 0.02  # tinted, even next to zero
            assert min(hue_distance(c, o) for o in own) < min(hue_distance(c, o) for o in other)


@pytest.mark.parametrize("diverging", [True, False], ids=["diverging", "sequential"])
@pytest.mark.parametrize("mode", ["truecolor", "256"])
def test_a_dimmed_level_is_a_darker_colour_of_the_same_hue(mode, diverging):
    pal = palette(mode, diverging)
    base, dim = scale_rgb(pal)
    sent = [terminal_number(c, mode) for c in pal.colors]
    for i, (b, d) in enumerate(zip(base, dim, strict=True)):
        assert lightness(d) < lightness(b), (i, b, d)
        if chroma(b) > GREY and lightness(d) > 0.2:  # (a hue near black is not seen)
            # the same hue (the 6x6x6 cube allows a little drift), and not some other
            # scale colour's: a dimmed value never reads as a different one
            assert chroma(d) > GREY / 2, (i, b, d)
            assert hue_distance(d, b) < 35, (i, b, d)
            others = [c for j, c in enumerate(base) if hue_distance(c, b) > 45]
            assert all(hue_distance(d, b) < hue_distance(d, o) for o in others), (i, b, d)
        if mode == "256":
            assert sent[pal.n + i] not in sent[:pal.n], (i, sent[pal.n + i])


@pytest.mark.parametrize("diverging", [True, False], ids=["diverging", "sequential"])
@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_nonfinite_colours_are_not_on_the_scale(mode, diverging):
    pal = palette(mode, diverging)
    scale = {terminal_number(c, mode) for c in pal.colors}
    special = [terminal_number(pal.special_style(pal.special_base + k).bgcolor, mode)
               for k in range(3)]
    assert len(set(special)) == 3
    assert not scale & set(special), (scale, special)


@pytest.mark.parametrize("diverging", [True, False], ids=["diverging", "sequential"])
@pytest.mark.parametrize("mode", ["256", "16"])
def test_textuals_filter_and_downgrade_keep_every_colour(mode, diverging):
    """Textual turns ANSI colours into its theme's RGB before the console downgrades them to
    the terminal's depth: each palette colour must come out as the index it was picked as
    (named ANSI colours did not: Monokai's red and magenta are one colour)."""
    pal = palette(mode, diverging)
    filt = ANSIToTruecolor(MONOKAI)
    for c in list(pal.colors) + [pal.special_style(pal.special_base + k).bgcolor
                                 for k in range(3)]:
        shown = filt.truecolor_style(Style(bgcolor=c), Color.from_rgb(0, 0, 0)).bgcolor
        want = c.number if c.type != ColorType.TRUECOLOR else terminal_number(c, mode)
        assert shown.downgrade(SYSTEMS[mode]).number == want, c


@pytest.fixture(scope="module")
def p1_view():
    trace = trace_digit(weights_from("seed")[0], 0, weights="seed")
    return trace["p1"], trace


def cells_of(view, mode: str, scale: int) -> list[tuple[str, Style]]:
    pal = palette(mode, view.diverging)
    return [(ch, seg.style) for t in view.tiles for row in tile_cells(t, view, pal, scale)
            for seg in row for ch in seg.text]


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_a_pooling_heatmap_uses_only_its_palette(p1_view, mode, scale):
    step, trace = p1_view
    view = build_view(step, trace, mode=mode)
    pal = palette(mode, view.diverging)
    cells = cells_of(view, mode, scale)
    if mode == "none":
        glyphs = {pal.glyph(i) for i in range(pal.n)}
        assert {ch for ch, _ in cells} <= glyphs
        underlined = sum(1 for _, st in cells if st.underline)
        # one underlined cell per untied window at scale 1, a pixel's s x s/2 cells above
        wins = sum(int(t.marks.sum()) for t in view.tiles)
        assert underlined == (wins if scale == 1 else wins * scale * scale // 2)
        assert all(ch != " " for ch, st in cells if st.underline)  # a maximum keeps its glyph
        return
    allowed = {terminal_number(c, mode) for c in pal.colors}
    used = {terminal_number(c, mode) for _, st in cells for c in (st.color, st.bgcolor) if c}
    assert used <= allowed, used - allowed
    dim = {terminal_number(c, mode) for c in pal.colors[pal.n:]}
    if mode == "16":  # dimming is the shade glyph over the zero colour
        shaded = [st for ch, st in cells if ch == DIM_GLYPH_16]
        assert shaded and all(st.bgcolor == pal.colors[pal.zero_level] for st in shaded)
        assert {ch for ch, _ in cells} <= {"▀", DIM_GLYPH_16}
    else:
        assert used & dim and used - dim  # both the maxima and the dimmed rest are drawn


def test_windows_of_equal_values_are_not_marked(p1_view):
    step, trace = p1_view
    view = build_view(step, trace)
    a1 = next(iter(step.inputs.values()))
    for c, tile in enumerate(view.tiles):
        for i in range(0, a1.shape[1], 2):
            for j in range(0, a1.shape[2], 2):
                window = a1[c, i:i + 2, j:j + 2]
                marked = tile.marks[i:i + 2, j:j + 2]
                if window.min() == window.max():
                    assert not marked.any()
                else:  # the first maximum, as max-pool's argmax
                    assert marked.sum() == 1 and window[marked][0] == window.max()


@pytest.mark.parametrize("mode", MODES)
def test_the_pooling_legend_says_how_this_depth_marks(p1_view, mode):
    step, trace = p1_view
    legend = build_view(step, trace, mode=mode).legend
    words = {"truecolor": "bright", "256": "bright", "16": "shaded", "none": "underlined"}
    assert words[mode] in legend and "ties unmarked" in legend
    assert ("dimmed" in legend) == (mode in ("truecolor", "256"))
