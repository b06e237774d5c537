"""Cell mode in the stepper: a cursor over the maps (keys and mouse), what one cell read (the
window outlined on its input), the receptive field on x, im2col, and the SGD update step, for
every architecture. The numbers are cnntui.explain's (tested against the lesson's loops and
PyTorch in test_explain.py); here: that the screen shows them at the right place."""

from __future__ import annotations

import numpy as np
import pytest
from pilot_helpers import pretrained_app as app_for

from cnntui import explain, model
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane

SIZE = (100, 32)
KEYS = sorted(model.ARCHITECTURES)


def side(app) -> str:
    return app.screen.query_one("#side", TextPane).plain


def footer_actions(app) -> set[str]:
    """The actions the footer offers now (shown and enabled)."""
    return {ab.binding.action.split("(")[0] for ab in app.screen.active_bindings.values()
            if ab.enabled and ab.binding.show}


def marked(tile) -> set[tuple[int, int]]:
    return {tuple(map(int, p)) for p in np.argwhere(tile.marks)}


@pytest.mark.parametrize("key", KEYS)
async def test_the_cursor_walks_a_conv_output_and_shows_its_window_and_receptive_field(key):
    app = app_for(key)
    async with app.run_test(size=SIZE) as pilot:
        conv = next(s for s in app.trace.steps if s.kind == "conv" and s.phase == "forward")
        app.go_to(conv.index)
        await pilot.press("c")
        assert app.screen.cell == (0, 0, 0)
        assert "move" in footer_actions(app) and "step" not in footer_actions(app)
        await pilot.press("down", "j", "right", "l", "l")  # arrows and hjkl
        assert app.screen.cell == (0, 2, 3)
        await pilot.press("1")  # a number key: that channel, same place
        cell = app.screen.cell
        assert cell == (1, 2, 3)
        want = explain.explain_cell(app.trace, conv.name, cell)
        view = app.screen.view
        own = view.tiles[0]
        assert marked(own) == {(2, 3)} and np.array_equal(own.data, conv.value[1])
        # the input window, outlined on each input channel the filter reads
        layer = conv.layer_object
        inp = next(iter(conv.inputs))
        windows = [t for t in view.tiles if t.label.startswith(f"{inp}[")]
        rows, cols = layer.window(conv.inputs[inp].shape, cell)[1:]
        expect = {(r, c) for r in range(max(0, rows.start), rows.stop)
                  for c in range(max(0, cols.start), cols.stop)}
        assert windows and all(marked(t) == expect for t in windows)
        assert len(windows) == conv.inputs[inp].shape[0] // layer.groups
        # the receptive field, on x, with the effective one as the picture
        rf = view.tiles[-1]
        r0, r1, c0, c1 = want.receptive_field
        assert marked(rf) == {(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
        assert np.array_equal(rf.data, want.effective_rf)
        assert f"RF {r1 - r0 + 1}x{c1 - c0 + 1}" in rf.label
        on_x = view.tiles[-2]  # and outlined on x itself (the first conv's window tile is x)
        assert on_x.label.startswith("x")
        assert np.array_equal(on_x.data, app.trace["x"].value[0])
        if not on_x.label.startswith("x["):
            assert marked(on_x) == marked(rf)
        text = side(app)
        assert f"{conv.name}[1,2,3] = {want.value:.6g}" in text
        assert all(line.split()[0] in text for line in want.lines if line.strip())
        assert f"{conv.name}[1,2,3]" in app.screen.query_one("#title", TextPane).plain
        await pilot.press("escape")
        assert app.screen.cell is None and "step" in footer_actions(app)


@pytest.mark.parametrize("key", KEYS)
async def test_cell_mode_on_every_step(key):
    """Every step's cursor: on the right value, moved within its shape, explained."""
    app = app_for(key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        for step in app.trace.steps:
            app.go_to(step.index)
            await pilot.press("down", "right", "right")
            cell = app.screen.cell
            assert len(cell) == step.value.ndim
            assert all(0 <= i < n for i, n in zip(cell, step.value.shape, strict=True))
            want = explain.explain_cell(app.trace, step.name, cell)
            assert f"= {want.value:.6g}" in side(app), step.name
            assert want.value == step.value[cell]
            if step.phase == "forward" and app.screen.view.kind == "tiles":
                tiles = app.screen.view.tiles
                assert tiles[-1].label.startswith("|d cell/dx|"), step.name
                on_x = tiles[-2]  # the receptive field is outlined on x itself too
                assert np.array_equal(on_x.data, app.trace["x"].value[0]), step.name
                if not on_x.label.startswith(("x[", "x cursor")):
                    assert on_x.label.startswith("x RF"), step.name
                    assert (on_x.marks == tiles[-1].marks).all(), step.name


async def test_pool_cell_outlines_its_window_and_names_the_argmax():
    app = app_for("simple")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("p1"))
        await pilot.press("c", "down", "down", "right", "right", "right", "right")
        cell = app.screen.cell
        assert cell == (0, 2, 4)
        tiles = app.screen.view.tiles
        a1 = next(t for t in tiles if t.label.startswith("a1[0]"))
        assert marked(a1) == {(r, c) for r in (4, 5) for c in (8, 9)}
        want = explain.explain_cell(app.trace, "p1", cell)
        r, c = want.data["argmax"]
        assert app.trace["a1"].value[0, r, c] == app.trace["p1"].value[cell]
        assert f"= {want.value:.6g}" in side(app)


async def test_a_weight_gradient_cursor_runs_across_kernels_and_shows_the_products():
    app = app_for("simple")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("dW2"))
        await pilot.press("c", "right", "right", "right")  # past the 3x3 kernel of channel 0
        assert app.screen.cell == (0, 1, 0, 0)
        want = explain.explain_cell(app.trace, "dW2", (0, 1, 0, 0))
        products = [t for t in app.screen.view.tiles if t.label == "products"]
        assert products and np.allclose(products[0].data.sum(), want.value, rtol=1e-12)
        assert f"= {want.value:.6g}" in side(app)


async def test_a_click_picks_a_cell():
    app = app_for("simple")
    async with app.run_test(size=(140, 50)) as pilot:
        app.go_to(app.trace.position("z2"))  # 8 maps 14x14 at full size
        await pilot.pause()
        tv = app.screen.query_one(TensorView)
        index, x0, y0, scale, k = tv.boxes[2]  # channel 2
        assert k == 1
        # (at scale 1 a text cell holds pixel rows 2k and 2k+1: a click picks 2k)
        await pilot.click(TensorView, offset=(x0 + 5 * scale, y0 + 4 * scale // 2))
        assert app.screen.cell == (2, 4, 5)
        # in cell mode a click on the cursor's map moves the cursor there
        index, x0, y0, scale, k = tv.boxes[0]
        await pilot.click(TensorView, offset=(x0 + 1 * scale, y0 + 6 * scale // 2))
        assert app.screen.cell == (2, 6, 1)


@pytest.mark.parametrize("key", KEYS)
async def test_im2col_shows_cols_weights_and_the_cursor_row(key):
    app = app_for(key)
    async with app.run_test(size=SIZE) as pilot:
        conv = [s for s in app.trace.steps if s.kind == "conv" and s.phase == "forward"][-1]
        app.go_to(conv.index)
        await pilot.press("c", "down", "right", "m")
        cell = app.screen.cell
        im = explain.im2col_view(app.trace, conv.name, cell)
        (tile,) = app.screen.view.tiles  # cols | W | out, side by side
        n, k = im.cols.shape
        f = im.weights.shape[1]
        cols = tile.data[:n, :k]
        weights = tile.data[:k, k + 1:k + 1 + f]
        out = tile.data[:n, k + 2 + f:k + 2 + 2 * f]
        scaled = lambda a: a / np.abs(a).max()  # noqa: E731  each block on its own scale
        assert np.allclose(cols, scaled(im.cols), rtol=1e-12)
        assert np.allclose(weights, scaled(im.weights), rtol=1e-12)
        # the picture's product is the traced output (cols @ W + b, by rows)
        assert np.allclose(out, scaled(im.cols @ im.weights + im.bias), rtol=1e-9, atol=1e-12)
        assert tile.gap[:, k].all() and tile.gap[k:, k + 1:k + 1 + f].all()
        assert im.row == cell[1] * conv.value.shape[2] + cell[2]
        lit = {(r, c) for r, c in marked(tile)}
        assert {(im.row, j) for j in range(k)} <= lit
        assert {(r, k + 1 + im.column) for r in range(k)} <= lit
        assert im.shape in app.screen.query_one("#title", TextPane).plain
        await pilot.press("escape")
        assert not app.screen.im2col and app.screen.cell == cell
        await pilot.press("escape")
        assert app.screen.cell is None


async def test_the_update_step_applies_and_undoes_one_sgd_step():
    app = app_for("simple", index=5)
    async with app.run_test(size=SIZE) as pilot:
        before = {k: v.copy() for k, v in app.params.items()}
        loss = app.trace.loss
        app.go_to(len(app.trace.steps) - 1)
        await pilot.press("right")
        screen = app.screen
        assert screen.at_update and "apply_update" in footer_actions(app)
        update = screen.update
        text = side(app)
        assert f"lr {update.lr:g}" in text and "gained" in text
        for name in update.ratios:
            assert name in text
        names = [t.label for t in screen.view.tiles]
        assert "W1 before" in names and "W1 after" in names and "-lr*dW1" in names
        await pilot.press("u")
        assert np.allclose(app.params["W2"], before["W2"] - update.lr * update.grads["W2"],
                           rtol=0, atol=0)
        assert np.isclose(app.trace.loss, update.loss_after, rtol=1e-12)
        assert (app.trace.loss < loss) == (update.loss_after < loss)
        assert "SGD" in app.weights_desc
        await pilot.press("z")
        assert all(np.array_equal(app.params[k], before[k]) for k in before)
        assert app.trace.loss == loss


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
async def test_cell_mode_keeps_the_cursor_on_screen(size):
    app = app_for("simple")
    async with app.run_test(size=size) as pilot:
        app.go_to(app.trace.position("z1"))
        await pilot.press("c", *["down"] * 25)
        tv = app.screen.query_one(TensorView)
        index, x0, y0, scale, k = tv.boxes[0]
        line = y0 + 25 * scale // 2
        assert tv.scroll_y <= line < tv.scroll_y + tv.size.height


async def test_the_pytorch_run_finishing_leaves_cell_mode_and_the_update_step_alone():
    app = app_for("simple")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z1"))
        await pilot.press("c")
        app._reference_done("ready")  # what the reference worker calls when it is done
        await pilot.pause()
        assert side(app).startswith("z1[0,0,0]")
        app.go_to(len(app.trace.steps) - 1)
        await pilot.press("escape", "right")
        app._reference_done("ready")
        await pilot.pause()
        assert side(app).startswith("SGD step")


async def test_im2col_of_a_weight_gradient_lights_its_column_and_filter():
    app = app_for("simple")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("dW2"))
        await pilot.press("3", "c", "right", "right", "right", "down", "m")  # past kernel 0
        cell = app.screen.cell
        assert cell == (3, 1, 1, 0)
        im = explain.im2col_view(app.trace, "dW2", cell)
        (tile,) = app.screen.view.tiles  # cols | dout
        L, K = im.cols.shape
        assert im.column == (1 * 3 + 1) * 3 + 0
        lit = marked(tile)
        assert {(r, im.column) for r in range(L)} <= lit
        assert {(r, K + 1 + 3) for r in range(L)} <= lit  # filter 3's column of dout
        # and that column of cols, times filter 3's dout, summed, is the cursor's dW2 value
        assert np.isclose(im.cols[:, im.column] @ im.dout[:, 3], app.trace["dW2"].value[cell],
                          rtol=1e-12)
        assert im.dw_shape in app.screen.query_one("#title", TextPane).plain


async def test_the_footer_says_what_the_arrows_do_over_the_values_table():
    app = app_for("simple")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z2"))
        assert "step" in footer_actions(app) and "move" not in footer_actions(app)
        await pilot.press("v")  # the table takes the arrows: the footer says "cell", not "step"
        assert "move" in footer_actions(app) and "step" not in footer_actions(app)
        await pilot.press("right", "n")  # the table's cursor moves; n still steps
        assert app.trace.steps[app.step_index].name == "a2"
        await pilot.press("escape")  # Esc leaves the table
        assert not app.screen.show_values and "step" in footer_actions(app)
