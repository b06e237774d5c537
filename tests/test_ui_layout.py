"""The stepper at the sizes students use (80x24, 100x30): every channel of the current tensor on
screen at once, the legend and the gradient norms reachable, the loss shown."""

import numpy as np
import pytest
from pilot_helpers import make_app

from cnntui import model
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane

SIZES = [(80, 24), (100, 30)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("key", sorted(model.ARCHITECTURES))
async def test_every_channel_of_every_step_is_on_screen_at_once(key, size):
    arch = model.ARCHITECTURES[key]
    params, desc = model.weights_from(model.PRETRAINED, arch)
    app = make_app(params, desc, arch=arch, index=5)
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
    params, desc = model.weights_from(model.PRETRAINED, model.SIMPLE_CNN)
    app = make_app(params, desc, index=5)
    async with app.run_test(size=(80, 24)) as pilot:
        app.go_to(app.trace.position("z1"))
        await pilot.pause()
        tv = app.screen.query_one(TensorView)
        assert tv.reduction == 2 and len(app.screen.view.tiles) == 4
        # each shown pixel is the mean of a 2x2 block of the map
        await pilot.press("2")
        assert tv.reduction == 1 and [t.channel for t in app.screen.view.tiles] == [2]
        assert "shown at" not in app.screen.query_one("#title", TextPane).plain
        await pilot.press("escape")
        assert tv.reduction == 2


async def test_pooling_legend_and_gradient_norms_are_reachable_at_80x24():
    params, desc = model.weights_from(model.PRETRAINED, model.SIMPLE_CNN)
    app = make_app(params, desc, index=5)
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
    params, desc = model.weights_from(model.PRETRAINED, model.SIMPLE_CNN)
    app = make_app(params, desc, index=5)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        header = app.screen.query_one("#header", TextPane).plain
        loss = app.trace.loss
        shown = header.split("loss ")[1].split(")")[0]
        assert np.isclose(float(shown), loss, rtol=1e-3)
        assert header.index("loss") < size[0]  # on screen, not cut off


async def test_tiny_gradients_are_explained_once():
    params, desc = model.weights_from(model.PRETRAINED, model.SIMPLE_CNN)
    app = make_app(params, desc, index=0)  # predicted at ~100%: loss ~1e-5
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
