"""Figures for slides: one step's picture (``e``) as SVG and PNG, the explanation (``E``) as SVG
(and PNG where a converter exists); the figure's squares are the View's numbers in the screen's
colour map, at the place the layout gives them."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from html import escape

import numpy as np
import pytest
from PIL import Image
from pilot_helpers import pretrained_app, wait_for_exports

from cnntui.data import load_digits
from cnntui.model import weights_from
from cnntui.trace import trace_sample
from screens import figure
from screens.colors import DIM, DIVERGING_ANCHORS, SPECIAL_RGB, _ramp
from screens.views import Tile, View, build_view

SIZE = (120, 40)


@pytest.fixture(scope="module")
def trace():
    params, desc = weights_from("pretrained")
    return trace_sample(params, load_digits().sample(5), weights=desc)


def step(trace, name):  # noqa: ANN001, ANN201
    return next(s for s in trace.steps if s.name == name)


@pytest.mark.parametrize("name", ["x", "z1", "p1", "dW1", "dz2", "logits", "probs"])
def test_a_figure_is_an_svg_and_a_png_of_the_same_size(trace, name):
    view = build_view(step(trace, name), trace)
    svg = figure.figure_svg(view)
    root = ET.fromstring(svg)  # well-formed
    png = Image.open(io.BytesIO(figure.figure_png(view)))
    assert (int(root.get("width")), int(root.get("height"))) == png.size
    assert escape(view.title) in svg


def test_each_square_is_its_number_in_the_colour_map_where_the_layout_puts_it(trace):
    view = build_view(step(trace, "z1"), trace)
    lay = figure._layout(view)
    png = np.asarray(Image.open(io.BytesIO(figure.figure_png(view))).convert("RGB"))
    for k, tile in enumerate(view.tiles):
        rgb = figure.tile_rgb(tile, view)
        x0 = figure.MARGIN + (k % lay.cols) * lay.cell_w
        y0 = lay.tiles_top + (k // lay.cols) * lay.cell_h + figure.LABEL
        h, w = tile.data.shape
        block = png[y0:y0 + h * lay.px, x0:x0 + w * lay.px]
        np.testing.assert_array_equal(block[::lay.px, ::lay.px], rgb, err_msg=tile.label)
    # the SVG has one rect per run of one colour: its colours are the same numbers'
    svg = figure.figure_svg(view)
    first = figure.tile_rgb(view.tiles[0], view)[0, 0]
    x0, y0 = figure.MARGIN, lay.tiles_top + figure.LABEL
    assert re.search(rf'<rect x="{x0}" y="{y0}" width="\d+" height="{lay.px}" '
                     rf'fill="{figure._hex(first)}"/>', svg)


def test_colours_zero_the_extremes_nonfinite_gaps_and_faded_losers():
    data = np.array([[0.0, 1.0, -1.0], [np.nan, np.inf, -np.inf], [0.5, 2.0, 2.0]])
    gap = np.zeros_like(data, dtype=bool)
    gap[2, 2] = True
    marks = np.ones_like(gap)
    marks[2, 0] = False
    tile = Tile("t", np.where(gap, np.nan, data), -1.0, 1.0, marks=marks, gap=gap)
    view = View("tiles", "t", diverging=True, lo=-1.0, hi=1.0, shared=True, tiles=[tile])
    rgb = figure.tile_rgb(tile, view).astype(int)

    def colour(t: float) -> list[int]:
        return list(np.rint(_ramp(DIVERGING_ANCHORS, np.array([t]))[0]).astype(int))

    assert list(rgb[0, 0]) == colour(0.0)
    assert list(rgb[0, 1]) == list(DIVERGING_ANCHORS[-1][1])  # +1: the top colour
    assert list(rgb[0, 2]) == list(DIVERGING_ANCHORS[0][1])  # -1: the bottom colour
    assert [list(c) for c in rgb[1]] == [list(c) for c in SPECIAL_RGB]
    assert list(rgb[2, 2]) == list(figure.BACKGROUND)  # a gap is the page
    assert list(rgb[2, 1]) == list(DIVERGING_ANCHORS[-1][1])  # 2 is past the top: clipped
    faded = np.rint(np.array(colour(0.5)) * DIM + np.array(figure.BACKGROUND) * (1 - DIM))
    assert list(rgb[2, 0]) == list(faded.astype(int))  # not a maximum: towards the page


def test_text_svg_keeps_the_words():
    from rich.text import Text

    svg = figure.text_svg(Text("z1[0,0,1] = -2.86435"), 40, "digit #5").replace("&#160;", " ")
    assert "z1[0,0,1] = -2.86435" in svg and "cnntui: digit #5" in svg


async def test_e_saves_the_picture_and_E_the_explanation_in_cell_mode(tmp_path):
    app = pretrained_app(screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("right", "e")  # z1
        await wait_for_exports(pilot)
        [svg] = tmp_path.glob("*-z1-figure-*.svg")
        [png] = tmp_path.glob("*-z1-figure-*.png")
        assert svg.stem == png.stem and "z1" in svg.read_text()
        assert any(n.message == f"figure saved to {svg} and PNG" for n in app._notifications)
        await pilot.press("c", "E")  # cell mode on z1[0,0,0]
        await wait_for_exports(pilot)
        [explained] = tmp_path.glob("*-z1-0-0-0-explanation-*.svg")
        words = explained.read_text().replace("&#160;", " ")
        assert "recomputed from these parts" in words and "z1[0,0,0]" in words
        assert (figure.png_converter() is None) == \
            (not list(tmp_path.glob("*-explanation-*.png")))


async def test_without_a_converter_a_screenshot_is_an_svg_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(figure, "png_converter", lambda: None)
    app = pretrained_app(screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await wait_for_exports(pilot)
        [svg] = tmp_path.iterdir()
        assert svg.suffix == ".svg"
        assert any(n.message == f"screenshot saved to {svg}" for n in app._notifications)
        await pilot.press("e")  # a figure's PNG needs no converter (Pillow draws it)
        await wait_for_exports(pilot)
        assert len(list(tmp_path.glob("*-figure-*.png"))) == 1
