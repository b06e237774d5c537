"""The stepper at the sizes students use (80x24, 100x30): every channel of the current tensor on
screen at once, the legend and the gradient norms reachable, the loss shown."""

import numpy as np
import pytest
from pilot_helpers import pretrained_app

from cnntui import model
from screens.widgets.tensor_view import TensorView, shrink
from screens.widgets.text_pane import TextPane

SIZES = [(80, 24), (100, 30)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("key", sorted(model.ARCHITECTURES))
async def test_every_channel_of_every_step_is_on_screen_at_once(key, size):
    app = pretrained_app(key)
    async with app.run_test(size=size) as pilot:
        for step in app.trace.steps:
            app.go_to(step.index)
            await pilot.pause()
            tv = app.screen.query_one(TensorView)
            view = app.screen.view
            assert len(tv.text_lines) <= tv.size.height, (step.name, tv.reduction)
            if view.kind == "tiles":
                labels = tv.text_lines[0] + "".join(tv.text_lines)
                assert all(t.label[:2] in labels for t in view.tiles), step.name
                title = app.screen.query_one("#title", TextPane).plain
                assert (tv.reduction > 1) == (f"shown at 1/{tv.reduction}" in title), step.name


async def test_a_number_key_shows_one_channel_at_full_size():
    app = pretrained_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.go_to(app.trace.position("z1"))
        await pilot.pause()
        tv = app.screen.query_one(TensorView)
        assert tv.reduction == 2 and len(app.screen.view.tiles) == 4
        # each shown pixel is the mean of a 2x2 block of the map
        z1 = app.trace["z1"].value
        small = shrink(app.screen.view.tiles[1], 2).data
        assert small.shape == (14, 14)
        assert np.allclose(small, z1[1].reshape(14, 2, 14, 2).mean(axis=(1, 3)), rtol=1e-12)
        await pilot.press("2")
        assert tv.reduction == 1 and [t.channel for t in app.screen.view.tiles] == [2]
        assert "shown at" not in app.screen.query_one("#title", TextPane).plain
        await pilot.press("escape")
        assert tv.reduction == 2


async def test_pooling_legend_and_gradient_norms_are_reachable_at_80x24():
    app = pretrained_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.go_to(app.trace.position("p1"))
        await pilot.pause()
        explain = app.screen.query_one("#explain", TextPane)
        assert len(explain.text.wrap(app.console, explain.size.width)) <= explain.size.height
        assert "full size" in explain.plain  # at 1/2 size: how to see the maxima
        await pilot.press("1")
        assert "each 2x2 window's max" in explain.plain
        assert len(explain.text.wrap(app.console, explain.size.width)) <= explain.size.height
        # dz2's 8 channel norms: in the side pane, the last one within J's reach
        app.go_to(app.trace.position("dz2"))
        await pilot.pause()
        side = app.screen.query_one("#side", TextPane)
        lines = [s.text for s in side._lines]
        last_bar = max(i for i, line in enumerate(lines) if line.startswith(" 7 "))
        assert last_bar < side.size.height + side.max_scroll_y


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_header_shows_the_loss(size):
    app = pretrained_app()
    async with app.run_test(size=size) as pilot:
        for step in app.trace.steps:  # the backward steps' names are the longest
            app.go_to(step.index)
            await pilot.pause()
            header = app.screen.query_one("#header", TextPane).plain
            shown = header.split("loss ")[1].split(")")[0]
            assert np.isclose(float(shown), app.trace.loss, rtol=1e-3)
            assert header.index(")", header.index("loss ")) < size[0], step.name  # not cut


async def test_tiny_gradients_are_explained_once():
    app = pretrained_app(index=0)  # predicted at ~100%: loss ~1e-5
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.trace.loss < 1e-3
        notes = lambda: [n for n in app._notifications if n.title == "Tiny gradients"]  # noqa: E731
        for step in app.trace.steps:
            app.go_to(step.index)
            await pilot.pause()
        assert len(notes()) == 1
        await pilot.press("right_square_bracket")
        app.go_to(app.trace.first_backward)
        await pilot.pause()
        assert len(notes()) == 1


def test_shrinking_keeps_nan_and_inf_visible_and_pads_odd_sizes():
    from screens.views import Tile

    data = np.arange(25, dtype=float).reshape(5, 5)
    data[0, 0], data[0, 1] = np.nan, np.inf  # one block: +Inf shows (NaNs come from Infs)
    data[2, 2] = np.nan  # another: NaN shows
    small = shrink(Tile("t", data, 0, 24), 2).data
    assert small.shape == (3, 3)
    assert small[0, 0] == np.inf and np.isnan(small[1, 1])
    assert small[0, 1] == np.mean([2, 3, 7, 8])
    assert small[2, 2] == 24  # the edge block, padded by repeating its last row and column


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_stepping_never_shrinks_the_explanation_or_the_side_panes_scroll(size):
    """A pane that changes height or scroll length costs a layout pass and a repaint of every
    pane. The explanation pane only grows (to a legend's lines) and the side pane scrolls as
    far as its longest text so far, and both keep that on the way back."""
    app = pretrained_app()
    async with app.run_test(size=size) as pilot:
        explain = app.screen.query_one("#explain", TextPane)
        side = app.screen.query_one("#side", TextPane)
        heights, scrolls, natural = [], [], []
        for step in [*app.trace.steps, *reversed(app.trace.steps)]:
            app.go_to(step.index)
            await pilot.pause()
            heights.append(explain.size.height)
            scrolls.append(side.virtual_size.height)
            natural.append(side.natural_height)
        assert heights == sorted(heights) and scrolls == sorted(scrolls), (heights, scrolls)
        n = len(app.trace.steps)
        assert len(set(heights[n:])) == 1 and len(set(scrolls[n:])) == 1
        if size == (80, 24):  # the side pane scrolls, by as much as its longest text
            assert scrolls[-1] == max(natural) > side.size.height > min(natural)
        else:
            assert set(scrolls) == {0}


@pytest.mark.parametrize("width", [20, 26, 40])
def test_cell_mode_grids_keep_every_sign_and_magnitude(width):
    """Cell mode's number grids at the side pane's widths: a number loses digits to fit, never
    its sign or exponent, so the products shown still add up to the value."""
    from cnntui.explain import Grid
    from screens.panes import grid_text

    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 3)) * 10.0 ** rng.integers(-12, 5, (3, 3))
    lines = grid_text(Grid("products", data), width).plain.splitlines()[1:]
    shown = np.array([[float(v) for v in line.split()] for line in lines])
    assert shown.shape == data.shape
    assert (np.sign(shown) == np.sign(data)).all()
    assert np.allclose(shown, data, rtol=0.5, atol=0)
