"""Draw a digit: a 28x28 canvas painted with the mouse or the keyboard, the network's prediction
updating as you draw, and what the network will see (the drawing prepared as MNIST's digits).

The mouse paints while a button is held (the right button erases); in tmux this needs
``set -g mouse on``. The keyboard moves a cursor and paints with space, or with the pen down
(p) paints wherever the cursor goes. Enter hands the drawing back to step through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from cnntui.drawing import Drawing
from cnntui.image import ImageError, read_drawing, save_png
from screens.colors import GREY_GLYPHS, cursor_color, grey_level, grey_ramp
from screens.panes import eighths_bar
from screens.training import SaveWeightsScreen
from screens.widgets.footer import Footer
from screens.widgets.too_small import TooSmall

# probabilities and the prepared 28x28 digit of a drawing, None while it has no ink
Predictor = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray] | None"]
PREDICT_DELAY = 0.04  # s: strokes coalesce into one prediction at most this often
DEFAULT_DRAWING = "drawing.png"


class PixelGrid(Widget, can_focus=False):
    """A 28x28 array of ink drawn in grey: at scale 1 two pixel rows per text row (half blocks,
    square pixels), at scale 2 each pixel two cells wide and one tall."""

    DEFAULT_CSS = "PixelGrid { width: 28; height: 14; }"

    def __init__(self, pixels: np.ndarray, mode: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pixels = pixels
        self.mode = mode
        self.scale = 1
        self.cursor: tuple[int, int] | None = None  # (row, column) shown in the cursor colour
        self.pen_down = False

    def set_scale(self, scale: int) -> None:
        self.scale = scale
        n = self.pixels.shape[0]
        self.styles.width = n * scale
        self.styles.height = n // 2 * scale
        self.refresh()

    def show(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self.refresh()

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self.pixels.shape[1] * self.scale

    def _color(self, y: int, x: int):  # noqa: ANN202 (a rich Color or None)
        if self.cursor == (y, x):
            return cursor_color(self.mode, self.pen_down)
        ramp = grey_ramp(self.mode)
        return ramp[grey_level(float(self.pixels[y, x]), len(ramp))]

    def render_line(self, y: int) -> Strip:
        n = self.pixels.shape[0]
        segments: list[Segment] = []
        if self.scale == 2:
            if y >= n:
                return Strip.blank(self.size.width)
            for x in range(n):
                if self.mode == "none":
                    glyph = GREY_GLYPHS[grey_level(float(self.pixels[y, x]), len(GREY_GLYPHS))]
                    style = Style(reverse=self.cursor == (y, x))
                    segments.append(Segment(glyph * 2, style))
                else:
                    segments.append(Segment("  ", Style(bgcolor=self._color(y, x))))
            return Strip(segments, 2 * n)
        top, bottom = 2 * y, 2 * y + 1
        if bottom >= n:
            return Strip.blank(self.size.width)
        for x in range(n):
            if self.mode == "none":  # one glyph for the stronger of the two pixels
                v = max(float(self.pixels[top, x]), float(self.pixels[bottom, x]))
                glyph = GREY_GLYPHS[grey_level(v, len(GREY_GLYPHS))]
                cursor = self.cursor in ((top, x), (bottom, x))
                segments.append(Segment(glyph, Style(reverse=cursor)))
            else:
                segments.append(Segment("▀", Style(color=self._color(top, x),
                                                   bgcolor=self._color(bottom, x))))
        return Strip(segments, n)


class Canvas(PixelGrid, can_focus=True):
    """The drawing itself: painted by mouse drags and by the keyboard cursor."""

    def __init__(self, drawing: Drawing, mode: str, on_change: Callable[[], None]) -> None:
        super().__init__(drawing.pixels, mode, id="canvas")
        self.drawing = drawing
        self.on_change = on_change
        self.cursor = (drawing.size // 2, drawing.size // 2)
        self._stroke: tuple[float, float, bool] | None = None  # last point and erasing

    def pixel_at(self, event: events.MouseEvent) -> tuple[float, float]:
        """The pixel centre under the pointer: at scale 1 a text row is two pixel rows, and the
        pointer is between them."""
        offset = event.get_content_offset_capture(self)
        if self.scale == 2:
            return float(offset.y), float(offset.x // 2)
        return 2 * offset.y + 0.5, float(offset.x)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        if event.button not in (1, 3):
            return
        y, x = self.pixel_at(event)
        erase = event.button == 3
        self.drawing.begin_stroke()
        self.drawing.dab(y, x, erase)
        self._stroke = (y, x, erase)
        self.capture_mouse()
        self.cursor = None  # the mouse draws; the keyboard's cursor shows again on a key
        self.changed()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._stroke is None:
            return
        y0, x0, erase = self._stroke
        y, x = self.pixel_at(event)
        self.drawing.line(y0, x0, y, x, erase)
        self._stroke = (y, x, erase)
        self.changed()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._stroke is not None:
            self._stroke = None
            self.release_mouse()

    def move(self, dy: int, dx: int) -> None:
        n = self.drawing.size
        if self.cursor is None:
            self.cursor = (n // 2, n // 2)
            self.refresh()
            return
        y, x = self.cursor
        ny, nx = min(max(y + dy, 0), n - 1), min(max(x + dx, 0), n - 1)
        if self.pen_down and (ny, nx) != (y, x):
            self.drawing.line(y, x, ny, nx)
            self.cursor = (ny, nx)
            self.changed()
        else:
            self.cursor = (ny, nx)
            self.refresh()

    def dab_at_cursor(self, erase: bool = False) -> None:
        if self.cursor is None:
            self.cursor = (self.drawing.size // 2, self.drawing.size // 2)
        self.drawing.begin_stroke()
        self.drawing.dab(*self.cursor, erase)
        self.changed()

    def changed(self) -> None:
        self.refresh()
        self.on_change()


class CanvasScreen(Screen[np.ndarray | None]):
    """Dismissed with the drawing's 28x28 pixels (Enter) or None (Esc)."""

    BINDINGS = [
        Binding("enter", "submit", "step through it", id="draw_submit",
                tooltip="Run the stepper on the drawing (unlabelled: the loss is towards the "
                        "predicted class)"),
        Binding("escape", "back", "back", key_display="esc", id="draw_back",
                tooltip="Back to the stepper without the drawing"),
        Binding("space", "paint", "paint", id="draw_paint",
                tooltip="Paint a dab of the soft brush at the cursor"),
        Binding("p", "pen", "pen", id="draw_pen",
                tooltip="Pen down or up: while down, moving the cursor paints"),
        Binding("x", "erase", "erase", id="draw_erase", tooltip="Erase a dab at the cursor"),
        Binding("u,ctrl+z", "undo", "undo", id="draw_undo", tooltip="Take back the last stroke"),
        Binding("c", "clear", "clear", id="draw_clear", tooltip="Clear the canvas (undo brings it "
                                                                 "back)"),
        Binding("w", "save", "save", id="draw_save", tooltip="Save the drawing as a 28x28 PNG"),
        Binding("o", "open", "open", id="draw_open",
                tooltip="Open a PNG (a saved drawing, or any picture, prepared as MNIST's)"),
        *(Binding(keys, f"move({dy}, {dx})", f"move {way}", show=False, id=f"draw_{way}",
                  tooltip=f"Move the cursor {way} (with the pen down, painting)")
          for keys, dy, dx, way in (("up,k", -1, 0, "up"), ("down,j", 1, 0, "down"),
                                    ("left,h", 0, -1, "left"), ("right,l", 0, 1, "right"))),
    ]
    DEFAULT_CSS = """
    CanvasScreen #draw-help { height: 1; padding: 0 1; color: $text-muted; }
    CanvasScreen #draw-body { height: auto; }
    CanvasScreen .draw-box { width: auto; height: auto; border: round $accent; }
    CanvasScreen #canvas:focus { background-tint: $accent 0%; }
    CanvasScreen #draw-bars { width: 20; height: 12; border: round $primary; padding: 0 1; }
    CanvasScreen #draw-status { height: 1; padding: 0 1; }
    """

    def __init__(self, predict: Predictor, *, initial: np.ndarray | None = None,
                 save_dir: Path | None = None, weights: str = "") -> None:
        super().__init__()
        self.predict = predict
        self.drawing = Drawing(initial)
        self.save_dir = Path(save_dir) if save_dir else Path.cwd()
        self.weights = weights
        self.probs: np.ndarray | None = None
        self._predict_timer = None
        self.saved: Path | None = None

    def compose(self) -> ComposeResult:
        mode = self.app.color_mode  # type: ignore[attr-defined]
        yield Static(Text("draw a digit: drag the mouse (the right button erases), or the "
                          "arrows and space"), id="draw-help")
        with Horizontal(id="draw-body"):
            with Vertical(classes="draw-box", id="draw-canvas-box") as box:
                box.border_title = "your drawing 28x28"
                yield Canvas(self.drawing, mode, self.drawing_changed)
            yield Static(id="draw-bars")
            with Vertical(classes="draw-box", id="draw-seen-box") as seen:
                seen.border_title = "the network sees"
                yield PixelGrid(np.zeros_like(self.drawing.pixels), mode, id="draw-seen")
        yield Static(id="draw-status")
        yield Footer()
        yield TooSmall()

    @property
    def canvas(self) -> Canvas:
        return self.query_one(Canvas)

    def on_mount(self) -> None:
        self.canvas.focus()
        self.query_one("#draw-bars").border_title = "prediction"
        self.run_prediction()

    def on_resize(self, event: events.Resize) -> None:
        # pixels two cells wide and a row tall where they fit: easier to hit with the mouse
        w, h = event.size
        scale = 2 if h >= 28 + 6 and w >= 56 + 2 + 20 + 30 else 1
        self.canvas.set_scale(scale)
        self.query_one("#draw-seen", PixelGrid).set_scale(1)

    # ---- what the drawing shows ---------------------------------------------------------------

    def drawing_changed(self) -> None:
        self.saved = None
        self.show_status()
        if self._predict_timer is None:
            self._predict_timer = self.set_timer(PREDICT_DELAY, self.run_prediction)

    def run_prediction(self) -> None:
        self._predict_timer = None
        got = self.predict(self.drawing.pixels.copy())
        seen = self.query_one("#draw-seen", PixelGrid)
        if got is None:
            self.probs = None
            seen.show(np.zeros_like(self.drawing.pixels))
        else:
            self.probs, digit = got
            seen.show(digit)
        self.query_one("#draw-bars", Static).update(self.bars_text())
        self.show_status()

    def bars_text(self) -> Text:
        t = Text()
        if self.probs is None:
            t.append("draw a digit:\nthe prediction\nshows here as\nyou draw", "dim")
            return t
        best = int(np.argmax(self.probs))
        for k, p in enumerate(self.probs):
            style = "bold" if k == best else ""
            t.append(f"{k} ", style or "dim")
            t.append(eighths_bar(float(p), 8), "bold green" if k == best else "green")
            t.append(f" {p:4.0%}" if p < 0.995 else " 100%", style)
            t.append("\n" if k < 9 else "")
        return t

    def show_status(self) -> None:
        canvas = self.canvas
        t = Text()
        if self.probs is not None:
            best = int(np.argmax(self.probs))
            t.append(f"reads as {best} ({self.probs[best]:.0%})", "bold")
        else:
            t.append("empty", "dim")
        t.append(f" · pen {'down' if canvas.pen_down else 'up'}")
        if canvas.cursor is not None:
            t.append(f" · cursor {canvas.cursor[0]},{canvas.cursor[1]}")
        if self.saved is not None:
            t.append(f" · saved to {self.saved}", "green")
        elif self.weights:
            t.append(f" · {self.weights}", "dim")
        self.query_one("#draw-status", Static).update(t)

    # ---- keys ---------------------------------------------------------------------------------

    def action_move(self, dy: int, dx: int) -> None:
        self.canvas.move(dy, dx)
        self.show_status()

    def action_paint(self) -> None:
        self.canvas.dab_at_cursor()

    def action_erase(self) -> None:
        self.canvas.dab_at_cursor(erase=True)

    def action_pen(self) -> None:
        canvas = self.canvas
        canvas.pen_down = not canvas.pen_down
        if canvas.pen_down:  # putting the pen down paints where it is, as a stroke of its own
            canvas.dab_at_cursor()
        canvas.refresh()
        self.show_status()

    def action_undo(self) -> None:
        if self.drawing.undo():
            self.canvas.changed()
        else:
            self.notify("nothing to undo", timeout=2)

    def action_clear(self) -> None:
        self.drawing.clear()
        self.canvas.changed()

    def action_submit(self) -> None:
        if self.probs is None:
            self.notify("the canvas is empty: draw a digit first", severity="warning")
            return
        self.dismiss(self.drawing.pixels.copy())

    def action_back(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if self.drawing.empty:
            self.notify("the canvas is empty: nothing to save", severity="warning")
            return
        default = str(self.saved or self.save_dir / DEFAULT_DRAWING)

        def chosen(path: str | None) -> None:
            if path is None:
                return
            try:
                self.saved = save_png(path, self.drawing.pixels)
            except ImageError as e:
                self.notify(str(e), severity="error", timeout=8)
                return
            self.notify(f"drawing saved to {self.saved}")
            self.show_status()

        self.app.push_screen(DrawingPathScreen(default, opening=False), chosen)

    def action_open(self) -> None:
        def chosen(path: str | None) -> None:
            if path is None:
                return
            try:
                pixels = read_drawing(path)
            except ImageError as e:
                self.notify(str(e), severity="error", timeout=8)
                return
            self.drawing.begin_stroke()  # opening is undoable, like any stroke
            self.drawing.pixels[:] = pixels
            self.canvas.changed()
            self.notify(f"opened {path}")

        self.app.push_screen(DrawingPathScreen(str(self.save_dir / DEFAULT_DRAWING),
                                               opening=True), chosen)


class DrawingPathScreen(SaveWeightsScreen):
    """The path to save a drawing to (``.png`` added to a bare name) or to open one from."""

    def __init__(self, default: str, opening: bool) -> None:
        super().__init__(default)
        self.opening = opening

    @property
    def verb(self) -> str:
        return "open" if self.opening else "save"

    @property
    def dialog_title(self) -> str:
        return "open a drawing" if self.opening else "save the drawing"

    @property
    def note(self) -> str:
        where = f"relative paths are from {Path.cwd()}"
        if self.opening:
            return (f"a PNG, JPEG, PGM or .npy: 28x28 opens as it is, anything bigger is "
                    f"prepared as MNIST's digits; {where}")
        return f"a 28x28 grey PNG, light ink on black as MNIST's digits; {where}"

    def with_suffix(self, path: Path) -> Path:
        return path.with_suffix(".png") if path.suffix == "" else path

    def target(self, text: str) -> Path:
        if not self.opening:
            return super().target(text)
        path = Path(text.strip() or self.default).expanduser()
        if not path.is_file():
            raise ValueError(f"{path} does not exist" if not path.exists()
                             else f"{path} is not a file")
        return path
