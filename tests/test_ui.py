"""Pilot tests of the stepper app: every behaviour issue 3 lists, driven by key presses."""

from __future__ import annotations

import numpy as np
import pytest
from pilot_helpers import make_app, wait_for, wait_for_exports
from textual.widgets import DataTable, Static

from cnntui import cli
from cnntui.model import predict, weights_from
from screens.app import CnnApp
from screens.colors import MODES, NEGATIVE_GLYPHS, POSITIVE_GLYPHS, palette
from screens.help import HelpScreen
from screens.panes import PHASE_SHORT
from screens.picker import DigitGrid, PickerScreen
from screens.stepper import StepperScreen
from screens.views import argmax_mask
from screens.widgets.steps import StepList
from screens.widgets.tensor_view import TensorView, fit_scale
from screens.widgets.text_pane import TextPane
from screens.widgets.too_small import TooSmall

SIZE = (100, 32)


@pytest.fixture(scope="module")
def seed_params():
    return weights_from("seed")[0]




def text_of(app: CnnApp, selector: str) -> str:
    """The text a pane shows; the side pane's sections by their own names."""
    screen = app.screen
    if selector in ("#stats", "#torch", "#grad"):
        text = getattr(screen, selector[1:] + "_text")
        side = screen.query_one("#side", TextPane).plain
        assert text is None or text.plain in side  # what the section holds is on screen
        return "" if text is None else text.plain
    widget = screen.query_one(selector)
    if isinstance(widget, TextPane):
        return widget.plain
    return str(widget.render())


def header(app: CnnApp) -> str:
    return text_of(app, "#header")


async def test_step_through_all_25_steps_forward_and_back(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        steps = app.trace.steps
        assert len(steps) == 25
        for i, step in enumerate(steps):
            assert f"step {i + 1}/25 {PHASE_SHORT[step.phase]}" in header(app)
            title = text_of(app, "#title")
            assert f"{step.name} {tuple(step.value.shape)}" in title
            assert app.screen.query_one(StepList).current == i
            assert step.name in text_of(app, "#stats")
            await pilot.press("right")
        assert app.step_index == 24 and app.screen.at_update  # after dx: the SGD step
        assert "W <- W - 0.01·dW" in text_of(app, "#title")
        assert app.screen.query_one(StepList).current == 25
        await pilot.press("right")
        assert app.screen.at_update  # the last one
        await pilot.press("left")
        for i in range(24, -1, -1):
            step = steps[i]
            assert f"step {i + 1}/25" in header(app)
            assert f"{step.name} {tuple(step.value.shape)}" in text_of(app, "#title")
            await pilot.press("left")
        assert app.step_index == 0


async def test_other_step_keys(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l", "n")
        assert app.step_index == 2
        await pilot.press("h")
        assert app.step_index == 1
        await pilot.press("p")
        assert app.step_index == 0
        await pilot.press("end")
        assert app.step_index == 24
        await pilot.press("home")
        assert app.step_index == 0
        await pilot.press("G")
        assert app.step_index == 24
        await pilot.press("g")
        assert app.step_index == 0
        # Tab jumps between a tensor and its gradient
        app.go_to(app.trace.position("z2"))
        await pilot.press("tab")
        assert app.trace.steps[app.step_index].name == "dz2"
        await pilot.press("tab")
        assert app.trace.steps[app.step_index].name == "z2"
        app.go_to(app.trace.position("dW2"))
        await pilot.press("tab")
        assert app.trace.steps[app.step_index].name == "z2"
        app.go_to(app.trace.position("probs"))
        await pilot.press("tab")
        assert app.trace.steps[app.step_index].name == "dlogits"


async def test_clicking_the_step_list_goes_to_that_step(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        steps = app.screen.query_one(StepList)
        row = next(r for r, e in enumerate(steps.entries) if e[1] == "a2")
        await pilot.click(StepList, offset=(2, row))
        assert app.trace.steps[app.step_index].name == "a2"


async def test_play_steps_by_itself_and_pauses(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space")
        assert "playing" in header(app)
        await pilot.pause(1.4)
        assert app.step_index >= 2
        await pilot.press("space")
        stopped = app.step_index
        await pilot.pause(0.8)
        assert app.step_index == stopped
        assert "playing" not in header(app)


def underlined(tv: TensorView) -> list[list[bool]]:
    """Per text cell of the picture: whether it is underlined (a window's maximum, no colour)."""
    return [[bool(st and st.underline) for text, st in line for _ in text] for line in tv.cells]


def untied(mask: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``mask`` without the 2x2 windows whose values are all equal (no real maximum)."""
    out = mask.copy()
    for c in range(src.shape[0]):
        for i in range(0, src.shape[1], 2):
            for j in range(0, src.shape[2], 2):
                w = src[c, i:i + 2, j:j + 2]
                if w.min() == w.max():
                    out[c, i:i + 2, j:j + 2] = False
    return out


@pytest.mark.parametrize("name", ["p1", "p2"])
async def test_forward_pool_marks_each_windows_argmax_on_the_input_map(seed_params, name):
    app = make_app(seed_params, color="none")
    async with app.run_test(size=(140, 50)) as pilot:
        app.go_to(app.trace.position(name))
        await pilot.pause()
        step = app.trace[name]
        view = app.screen.view
        src = next(iter(step.inputs.values()))
        assert len(view.tiles) == src.shape[0]
        assert view.tiles[0].data.shape == src.shape[1:]  # the input map, not the output
        expected = untied(argmax_mask(step.cache["argmax"], src.shape), src)
        assert expected.sum() < step.value.size  # the digit's background: all-zero windows
        for c, tile in enumerate(view.tiles):
            assert tile.marks is not None and (tile.marks == expected[c]).all()
            # the marked values are exactly the pooled output of the windows with a maximum
            pooled = step.value[c][expected[c].reshape(step.value.shape[1], 2, -1, 2).any((1, 3))]
            assert np.allclose(np.sort(tile.data[tile.marks]), np.sort(pooled))
        # no colour: the cell holding each maximum is underlined and keeps its value's glyph
        tv = app.screen.query_one(TensorView)
        assert not any(g in line for line in tv.text_lines for g in "▀▄")
        assert "each 2x2 window's max" in text_of(app, "#explain")
        assert "underlined" in text_of(app, "#explain")


async def test_marks_sit_on_the_argmax_pixel(seed_params):
    app = make_app(seed_params, color="none")
    async with app.run_test(size=(140, 50)) as pilot:
        app.go_to(app.trace.position("p2"))
        app.screen.action_channel(0)  # one channel: its input with marks, and its output
        await pilot.pause()
        tv = app.screen.query_one(TensorView)
        view = app.screen.view
        assert [t.data.shape for t in view.tiles] == [(14, 14), (7, 7)]
        step = app.trace["p2"]
        src = next(iter(step.inputs.values()))
        mask = untied(argmax_mask(step.cache["argmax"], src.shape), src)[0]
        s, _, k = fit_scale(view.tiles, tv.size.width, tv.size.height)
        assert k == 1  # full resolution: one glyph per pixel pair
        under = underlined(tv)[1:]  # below the label row
        assert s in (1, 2, 4, 6, 8)
        for r in range(14):
            for c in range(14):
                cell = under[(r * s) // 2][c * s]
                if s == 1:  # a cell holds rows 2k (top) and 2k+1 (bottom) of one window
                    assert cell == bool(mask[r - r % 2, c] or mask[r - r % 2 + 1, c]), (r, c)
                else:
                    assert cell == bool(mask[r, c]), (r, c)


async def test_backward_pool_gradient_flows_only_to_the_marks(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        for name in ("da1", "da2"):
            app.go_to(app.trace.position(name))
            await pilot.pause()
            step = app.trace[name]
            view = app.screen.view
            marks = np.stack([t.marks for t in view.tiles])
            assert (marks == untied(argmax_mask(step.cache["argmax"], step.value.shape),
                                    step.value)).all()
            assert not np.any(step.value[~marks])  # zero wherever there is no mark
            if app.screen.query_one(TensorView).reduction > 1:  # every channel, at 1/2 size
                assert "can't be marked" in text_of(app, "#explain")
                app.screen.action_channel(0)  # one channel at full size: marks and legend
                await pilot.pause()
                assert app.screen.query_one(TensorView).reduction == 1
            assert "gradient flows only there" in text_of(app, "#explain")
            app.screen.action_channel(-1)


async def test_pytorch_pane_loads_in_the_background_and_reaches_a_verdict(seed_params):
    app = make_app(seed_params, reference="thread")
    async with app.run_test(size=SIZE) as pilot:
        assert "loading PyTorch..." in text_of(app, "#torch")  # the first paint does not wait
        await wait_for(pilot, lambda: app.reference_state != "loading")
        assert app.reference_state == "ready"
        # filled in by itself
        assert "agrees with PyTorch's float64 to 1e-09" in text_of(app, "#torch")
        for name in ("x", "z2", "p1", "dW2", "dx"):
            app.go_to(app.trace.position(name))
            await pilot.pause()
            torch = text_of(app, "#torch")
            assert "agrees with PyTorch's float64 to 1e-09" in torch, torch
            assert "max|d|" in torch
        # a new digit is checked again
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.trace.steps[app.step_index].torch_value is not None)
        await pilot.pause()
        assert "agrees with PyTorch's float64 to 1e-09" in text_of(app, "#torch")


async def test_pytorch_pane_shows_disagreement(seed_params):
    app = make_app(seed_params, reference="sync")
    async with app.run_test(size=SIZE) as pilot:
        step = app.trace["z1"]
        step.torch_value = step.torch_value + 1.0
        step.torch_max_abs_diff, step.torch_max_rel_err, step.torch_ok = 1.0, 0.5, False
        app.go_to(step.index)
        await pilot.pause()
        assert "DISAGREES" in text_of(app, "#torch")


async def test_changing_digit_changes_header_and_tensor_and_keeps_the_step(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z2"))
        await pilot.pause()
        before = app.screen.query_one(TensorView).cells
        value_before = app.trace["z2"].value.copy()
        assert "digit #0 " in header(app)
        await pilot.press("right_square_bracket")
        assert app.index == 1
        assert "digit #1 " in header(app)
        assert f"label {app.digits.labels[1]}" in header(app)
        assert app.trace.steps[app.step_index].name == "z2"
        assert not np.allclose(app.trace["z2"].value, value_before)
        assert app.screen.query_one(TensorView).cells != before
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.index == len(app.digits.labels) - 1  # wraps around
        assert f"digit #{app.index} " in header(app)


async def test_predictions_wait_for_the_picker(seed_params):
    """The picker's predictions are computed when it opens, not while the user steps (in a
    thread, they held the GIL the steps needed), and they are the network's own."""
    app = make_app(seed_params, predictions="thread")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(3):
            await pilot.press("right")
        app.reference_state = "loading"
        app._reference_done("off: standing in for PyTorch's first run ending")
        await pilot.press("right")
        await pilot.pause(0.3)
        assert app.predictions is None
        await pilot.press("d")
        await wait_for(pilot, lambda: app.predictions is not None)
        probs = predict(app.arch, app.params, app.digits.prepared(np.arange(5)))
        assert (app.predictions[:5] == probs.argmax(axis=1)).all()
        await pilot.pause()
        assert "computing" not in str(app.screen.query_one("#picker-filter", Static).render())


async def test_picker_filters_and_chooses(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("a1"))
        await pilot.press("d")
        assert isinstance(app.screen, PickerScreen)
        grid = app.screen.query_one(DigitGrid)
        assert len(grid.indices) == len(app.digits.labels)
        await pilot.press("3")
        assert len(grid.indices) and (app.digits.labels[grid.indices] == 3).all()
        await pilot.press("w")
        wrong = grid.indices
        assert (app.predictions[wrong] != 3).all() and (app.digits.labels[wrong] == 3).all()
        await pilot.press("a")
        assert len(grid.indices) == len(app.digits.labels)
        assert grid.selected == int(wrong[0])  # the filter keeps the cursor's digit
        start = grid.cursor
        await pilot.press("right", "right", "down")
        expected = int(grid.indices[start + 2 + grid.columns])
        assert f"digit #{expected}" in str(app.screen.query_one("#picker-status",
                                                                  Static).render())
        await pilot.press("enter")
        assert isinstance(app.screen, StepperScreen)
        assert app.index == expected
        assert f"digit #{expected} " in header(app)
        assert app.trace.steps[app.step_index].name == "a1"
        await pilot.press("d", "escape")
        assert isinstance(app.screen, StepperScreen) and app.index == expected


async def test_picker_thumbnails_show_label_and_prediction(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        grid = app.screen.query_one(DigitGrid)
        caption = grid.render_line(4).text  # the caption row of the first row of thumbnails
        first = f"{app.digits.labels[0]}→{app.predictions[0]}"
        assert first in caption


async def test_help_opens_and_closes(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table", Static).render()
        await pilot.press("escape")
        assert isinstance(app.screen, StepperScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, StepperScreen)
        assert table is not None


def test_every_binding_has_an_id_and_a_footer_entry_or_help_line():
    from screens.help import help_rows

    for cls in (CnnApp, StepperScreen, PickerScreen, HelpScreen):
        for b in cls.BINDINGS:
            assert b.id, f"{cls.__name__} binding {b.key} has no id"
            assert b.show or help_rows([b]), b
    ids = [b.id for cls in (CnnApp, StepperScreen) for b in cls.BINDINGS]
    assert len(ids) == len(set(ids))


async def test_tiny_terminal_shows_a_message_and_recovers(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=(50, 15)) as pilot:
        await pilot.pause()
        small = app.screen.query_one(TooSmall)
        assert small.display and small.region.width > 0
        assert "terminal too small (50x15), need 60x20" in str(small.render())
        assert not app.screen.query_one("#body").region.width
        await pilot.resize_terminal(100, 32)
        await pilot.pause()
        assert not app.screen.query_one(TooSmall).region.width
        assert app.screen.query_one("#body").region.width == 100
        await pilot.resize_terminal(70, 19)  # too short, wide enough
        await pilot.pause()
        assert "terminal too small (70x19)" in str(app.screen.query_one(TooSmall).render())
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.screen.query_one("#body").region.width == 80


async def test_resizing_never_crashes(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        for i, (w, h) in enumerate([(80, 24), (200, 60), (61, 20), (30, 10), (120, 40),
                                    (59, 40), (100, 19), (100, 32)]):
            await pilot.resize_terminal(w, h)
            await pilot.press("right" if i % 2 else "d")
            await pilot.pause()
            if isinstance(app.screen, PickerScreen):
                await pilot.press("escape")
        assert app.is_running


async def test_layout_at_80x24_keeps_every_pane_visible(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=(80, 24)) as pilot:
        app.go_to(app.trace.position("z2"))
        await pilot.pause()
        screen = app.screen
        for sel in ("#header", "#stepbar", "#title", "#map", "#scale", "#explain", "#side"):
            region = screen.query_one(sel).region
            assert region.width > 0 and region.height > 0, sel
        # all 8 channels of conv2 fit without scrolling
        tv = screen.query_one(TensorView)
        assert len(tv.text_lines) <= tv.size.height


@pytest.mark.parametrize("mode", MODES)
async def test_every_colour_mode_renders(seed_params, mode):
    app = make_app(seed_params, color=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.color_mode == mode
        for _ in range(25):
            tv = app.screen.query_one(TensorView)
            assert tv.text_lines
            for y in range(tv.size.height):
                tv.render_line(y)
            await pilot.press("right")
        await pilot.press("d")
        await pilot.press("escape")


async def test_no_colour_mode_keeps_the_sign(seed_params):
    app = make_app(seed_params, color="none")
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z2"))  # signed, both signs present
        await pilot.pause()
        text = "".join(app.screen.query_one(TensorView).text_lines)
        assert any(g in text for g in NEGATIVE_GLYPHS)
        assert any(g in text for g in POSITIVE_GLYPHS)
        assert "<0" in text_of(app, "#scale")  # the legend explains the glyphs
        app.go_to(app.trace.position("a2"))  # non-negative: no negative glyphs
        await pilot.pause()
        text = "".join(app.screen.query_one(TensorView).text_lines)
        assert not any(g in text for g in NEGATIVE_GLYPHS if g != "·")


def test_no_colour_glyphs_differ_by_sign_at_every_magnitude():
    pal = palette("none", True)
    ts = np.linspace(0.05, 1, 40)
    pos = {pal.glyph(int(v)) for v in pal.levels(ts)}
    neg = {pal.glyph(int(v)) for v in pal.levels(-ts)}
    assert not pos & neg
    assert " " not in pos | neg  # a nonzero value is never drawn as blank


async def test_values_table_shows_the_selected_channel(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z2"))
        await pilot.press("2", "v")
        table = app.screen.query_one(DataTable)
        assert table.display and app.focused is table
        assert table.row_count == 14 and len(table.columns) == 14
        value = app.trace["z2"].value[2]
        assert f"z2[2][0,0] = {value[0, 0]:.12g}" in text_of(app, "#cell")
        await pilot.press("down", "right")
        assert f"z2[2][1,1] = {value[1, 1]:.12g}" in text_of(app, "#cell")
        await pilot.press("n")  # stepping still works while the table has focus
        assert app.trace.steps[app.step_index].name == "a2"
        await pilot.press("v")
        assert not app.screen.query_one("#values-box").display or not table.region.width


async def test_channel_keys_enlarge_one_channel_and_s_toggles_the_scale(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("z2"))
        await pilot.press("3")
        view = app.screen.view
        assert len(view.tiles) == 1 and view.selected == 3
        assert np.allclose(view.tiles[0].data, app.trace["z2"].value[3])
        await pilot.press("3")
        assert len(app.screen.view.tiles) == 8
        await pilot.press("s")
        view = app.screen.view
        assert not view.shared
        his = [t.hi for t in view.tiles]
        assert len(set(his)) > 1  # each channel its own range, shown in its label
        assert all("±" in t.label for t in view.tiles)
        assert "per channel" in text_of(app, "#scale")
        await pilot.press("s")
        assert app.screen.view.shared and "shared" in text_of(app, "#scale")


async def test_one_dimensional_steps_are_labelled_bars(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("probs"))
        await pilot.pause()
        lines = app.screen.query_one(TensorView).text_lines
        assert len(lines) == 10
        assert "◀ true" in lines[app.trace.label]
        assert "★ predicted" in lines[app.trace.prediction]
        app.go_to(app.trace.position("flat"))
        await pilot.pause()
        view = app.screen.view
        assert view.tiles[0].data.shape == (8, 49)


async def test_gradient_pane_norms_and_update_ratio(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        app.go_to(app.trace.position("dW2"))
        await pilot.pause()
        grad = text_of(app, "#grad")
        assert "L2 per filter" in grad and "|0.01·dW2|/|W2|" in grad
        assert sum(1 for line in grad.splitlines() if line.strip()[:1].isdigit()) >= 8
        app.go_to(app.trace.position("dz1"))
        await pilot.pause()
        assert "L2 per channel" in text_of(app, "#grad")
        app.go_to(app.trace.position("z1"))
        await pilot.pause()
        assert app.screen.grad_text is None and "gradient" not in text_of(app, "#side")
        app.go_to(app.trace.position("dz2"))
        await pilot.press("a")  # |grad| on a log scale
        assert app.screen.view.magnitude and "log" in text_of(app, "#scale")


async def test_ctrl_s_saves_an_svg_screenshot_and_says_where(seed_params, tmp_path):
    app = make_app(seed_params, screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await wait_for_exports(pilot)
        files = list(tmp_path.glob("*.svg"))
        assert len(files) == 1 and files[0].read_text().startswith("<svg")
        assert any(str(files[0]) in str(n.message) for n in app._notifications)


async def test_command_palette_goes_to_a_step_and_opens_a_digit(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"step dz1")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.trace.steps[app.step_index].name == "dz1"
        await pilot.press("ctrl+p")
        await pilot.press(*"digit 42")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.index == 42
        assert app.trace.steps[app.step_index].name == "dz1"


def test_cli_errors_are_one_sentence_and_exit_1(capsys, tmp_path):
    assert cli.main(["--weights", str(tmp_path / "missing.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnntui: ") and "does not exist" in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert cli.main(["--index", "5000"]) == 1
    err = capsys.readouterr().err
    assert "there is no digit 5000" in err and err.count("\n") == 1


async def test_page_keys_and_J_K_reach_what_a_small_terminal_cuts_off(seed_params):
    app = make_app(seed_params)
    async with app.run_test(size=(80, 20)) as pilot:
        maps, side = app.screen.query_one("#map"), app.screen.query_one("#side")
        app.go_to(app.trace.position("p1"))
        app.screen.action_channel(0)  # one channel at full size, its 28 rows and its output
        await pilot.pause()
        assert maps.max_scroll_y > 0  # outgrows 80x20
        await pilot.press("pagedown")
        assert maps.scroll_y > 0
        await pilot.press("pageup")
        assert maps.scroll_y == 0
        app.go_to(app.trace.position("dW2"))  # stats and 8 filters' gradient norms
        await pilot.pause()
        assert side.max_scroll_y > 0
        await pilot.press("J")
        assert side.scroll_y > 0
        await pilot.press("K")
        assert side.scroll_y == 0
