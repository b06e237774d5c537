"""The drawing canvas, driven as a user does: mouse drags, the keyboard cursor, undo and clear,
the live prediction, Enter into the stepper, and drawings saved to PNG and opened again."""

from __future__ import annotations

import numpy as np
import pytest
from pilot_helpers import make_app, wait_for

from cnntui import model
from cnntui.drawing import Drawing
from cnntui.image import read_drawing
from screens.canvas import Canvas, CanvasScreen, DrawingPathScreen


@pytest.fixture(scope="module")
def pretrained():
    return model.weights_from(model.PRETRAINED)


def app_for(pretrained, **kw):
    params, desc = pretrained
    return make_app(params, desc, **kw)


async def open_canvas(pilot) -> CanvasScreen:
    await pilot.press("D")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CanvasScreen))
    await pilot.pause()
    return pilot.app.screen


async def drag(pilot, points, button: int = 1) -> None:
    """Press at the first (column, row) of the canvas, move through the rest, release."""
    await pilot.mouse_down(Canvas, offset=points[0], button=button)
    for p in points[1:]:
        await pilot.hover(Canvas, offset=p)
    await pilot.mouse_up(Canvas, offset=points[-1])
    await pilot.pause(0.1)  # the prediction runs after a short coalescing delay


def seven_strokes() -> list[list[tuple[int, int]]]:
    """A seven at scale 1 (columns, text rows): a top bar, then a diagonal down to the left."""
    top = [(c, 2) for c in range(7, 22)]
    down = [(21 - k, 2 + k) for k in range(1, 12)]
    return [top + down]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_mouse_drag_paints_a_line_and_the_prediction_follows(pretrained, size):
    app = app_for(pretrained)
    async with app.run_test(size=size) as pilot:
        screen = await open_canvas(pilot)
        assert screen.drawing.empty and screen.probs is None
        canvas = screen.canvas
        scale = canvas.scale
        assert scale == (2 if size == (120, 40) else 1)
        # draw the seven in canvas cells at this scale: pixel (row, col) -> cell
        cells = [[(c * scale, r * scale) for c, r in stroke] for stroke in seven_strokes()]
        for stroke in cells:
            await drag(pilot, stroke)
        px = screen.drawing.pixels
        # an unbroken top bar: every column between the ends got ink in the bar's rows
        assert (px[3:7, 8:21].max(axis=0) > 0.5).all()
        assert screen.probs is not None and int(np.argmax(screen.probs)) == 7
        assert "reads as 7" in str(screen.query_one("#draw-status").render())
        seen = screen.query_one("#draw-seen").pixels  # the drawing as the network gets it
        assert seen.shape == (28, 28) and max(np.ptp(np.nonzero(seen)[0]),
                                              np.ptp(np.nonzero(seen)[1])) == 19


async def test_the_right_button_erases(pretrained):
    app = app_for(pretrained)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        await drag(pilot, [(c, 6) for c in range(4, 24)])
        assert screen.drawing.pixels[12:14, 10].min() > 0.7  # between two pixel rows: both
        await drag(pilot, [(10, 6), (11, 6)], button=3)
        assert screen.drawing.pixels[12:14, 10].max() == 0
        assert screen.drawing.pixels[12:14, 20].min() > 0.7  # the rest of the line stays


async def test_the_keyboard_draws_with_space_and_with_the_pen(pretrained):
    app = app_for(pretrained)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        canvas = screen.canvas
        assert canvas.cursor == (14, 14)
        await pilot.press("up", "up", "k", "left", "h")  # hjkl move as the arrows do
        assert canvas.cursor == (11, 12)
        await pilot.press("space")
        assert screen.drawing.pixels[11, 12] == 1.0 and screen.drawing.pixels[11, 16] == 0
        await pilot.press("p", *["right"] * 8, "p")  # pen down, along, pen up
        assert (screen.drawing.pixels[11, 12:21] > 0.9).all()
        await pilot.press("down", "down", "down")  # pen up: moving paints nothing
        assert screen.drawing.pixels[14, 20] < 0.5
        assert "pen up" in str(screen.query_one("#draw-status").render())
        for _ in range(40):  # the cursor stays on the canvas
            await pilot.press("right")
        assert canvas.cursor == (14, 27)


async def test_undo_takes_back_strokes_and_clear_is_undoable(pretrained):
    app = app_for(pretrained)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        await drag(pilot, [(c, 4) for c in range(5, 20)])
        one = screen.drawing.pixels.copy()
        await drag(pilot, [(12, r) for r in range(2, 12)])
        assert not np.array_equal(screen.drawing.pixels, one)
        await pilot.press("u")
        np.testing.assert_array_equal(screen.drawing.pixels, one)
        await pilot.press("c")
        assert screen.drawing.empty
        await pilot.press("ctrl+z")
        np.testing.assert_array_equal(screen.drawing.pixels, one)
        await pilot.press("u", "u")  # the first stroke, then nothing left to undo
        assert screen.drawing.empty and not screen.drawing.can_undo
        await pilot.pause(0.1)
        assert screen.probs is None  # the prediction follows the undo too


async def test_enter_steps_through_the_drawing_with_the_mnist_weights(pretrained):
    app = app_for(pretrained)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_canvas(pilot)
        await pilot.press("enter")  # empty: refused, the canvas stays
        assert isinstance(app.screen, CanvasScreen)
        for stroke in seven_strokes():
            await drag(pilot, stroke)
        drawn = screen.drawing.pixels.copy()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, CanvasScreen))
        assert app.trace.input_name == "drawing" and not app.trace.label_given
        assert app.trace.prediction == 7 and app.weights_desc == "pretrained-mnist"
        np.testing.assert_array_equal(app.sample.original, drawn)
        await pilot.press("D")  # the canvas opens again on the same drawing
        await wait_for(pilot, lambda: isinstance(app.screen, CanvasScreen))
        np.testing.assert_array_equal(app.screen.drawing.pixels, drawn)
        await pilot.press("escape")
        await pilot.press("right_square_bracket")  # a digit of the set: its own weights again
        await pilot.pause()
        assert app.weights_desc == pretrained[1] and app.trace.input_name != "drawing"


async def test_escape_leaves_the_stepper_as_it_was(pretrained):
    app = app_for(pretrained)
    async with app.run_test(size=(80, 24)) as pilot:
        before = app.trace.input_name
        await open_canvas(pilot)
        await drag(pilot, [(c, 4) for c in range(5, 20)])
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CanvasScreen) and app.trace.input_name == before


async def test_a_drawing_saves_to_png_and_opens_again(pretrained, tmp_path):
    app = app_for(pretrained, screenshot_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        await pilot.press("w")  # empty: nothing to save, no dialog
        assert app.screen is screen
        for stroke in seven_strokes():
            await drag(pilot, stroke)
        drawn = screen.drawing.pixels.copy()
        await pilot.press("w")
        assert isinstance(app.screen, DrawingPathScreen)
        await pilot.press(*"/no/such/folder/x", "enter")  # refused: the dialog stays
        assert isinstance(app.screen, DrawingPathScreen)
        app.screen.query_one("Input").value = str(tmp_path / "seven")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen and screen.saved == tmp_path / "seven.png"
        np.testing.assert_allclose(read_drawing(tmp_path / "seven.png"), drawn, atol=0.5 / 255)
        await pilot.press("c", "o")
        assert isinstance(app.screen, DrawingPathScreen)
        app.screen.query_one("Input").value = str(tmp_path / "seven.png")
        await pilot.press("enter")
        await pilot.pause(0.1)
        np.testing.assert_allclose(screen.drawing.pixels, drawn, atol=0.5 / 255)
        assert int(np.argmax(screen.probs)) == 7


async def test_opening_a_bad_file_says_so_and_keeps_the_drawing(pretrained, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    app = app_for(pretrained, screenshot_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        await drag(pilot, [(c, 4) for c in range(5, 20)])
        drawn = screen.drawing.pixels.copy()
        await pilot.press("o")
        app.screen.query_one("Input").value = str(bad)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        np.testing.assert_array_equal(screen.drawing.pixels, drawn)
        assert any("not a picture" in n.message for n in app._notifications)


@pytest.mark.parametrize("mode", ["truecolor", "256", "16", "none"])
async def test_every_colour_depth_shows_the_ink_and_the_cursor(pretrained, mode):
    app = app_for(pretrained, color=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_canvas(pilot)
        canvas = screen.canvas
        blank = [canvas.render_line(y) for y in range(14)]
        await drag(pilot, [(c, 4) for c in range(5, 20)])
        inked = [canvas.render_line(y) for y in range(14)]
        assert inked[4] != blank[4] and inked[10] == blank[10]
        if mode == "none":  # glyphs stand for ink without colour
            assert set(inked[4].text) - {" "} and set(blank[10].text) == {" "}
        # the keyboard cursor shows again after a key, somewhere that changes when it moves
        await pilot.press("up")
        here = canvas.render_line(canvas.cursor[0] // 2)
        await pilot.press("left", "left", "left")
        assert canvas.render_line(canvas.cursor[0] // 2) != here


def test_the_brush_is_soft_and_strokes_are_unbroken():
    d = Drawing()
    d.dab(10, 10)
    assert d.pixels[10, 10] == 1 and 0.2 < d.pixels[10, 11] < 0.7 and d.pixels[10, 13] == 0
    d = Drawing()
    d.dab(5, 2)  # where the stroke starts, then the line from there
    d.line(5, 2, 5, 25)
    assert (d.pixels[5, 2:26] > 0.99).all()  # a long jump between two points is still a line
    before = d.pixels.copy()
    d.line(5, 2, 5, 25)  # going over it again changes nothing
    np.testing.assert_array_equal(d.pixels, before)
    with pytest.raises(ValueError, match="28x28"):
        Drawing(np.zeros((8, 8)))
