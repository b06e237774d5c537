"""The digit picker: a grid of thumbnails with label and prediction, filterable by class and by
"wrong predictions only", with a jump to an index; Enter chooses. Rows are rendered on demand
(Line API) and cached, so paging through MNIST's 70,000 digits costs what one screen costs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Region, Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from cnntui.stats import nonfinite_counts
from screens.colors import palette
from screens.views import Tile, View
from screens.widgets.tensor_view import shrink, tile_cells
from screens.widgets.too_small import TooSmall

if TYPE_CHECKING:
    from screens.app import CnnApp

CELL_W, CELL_H = 10, 5  # 8 columns of thumbnail + gap; 4 rows of thumbnail + caption
THUMB_PIXELS = 8  # a thumbnail's width: the digits' own 8x8, MNIST's 28x28 at 1/4 (7x7)
CURSOR = Style(reverse=True, bold=True)
WRONG = Style(color="red", bold=True)


class DigitGrid(ScrollView, can_focus=False):
    """Thumbnails of the digits in ``indices``, one cursor cell; Line API with cached rows."""

    DEFAULT_CSS = """
    DigitGrid { height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, raw: np.ndarray, labels: np.ndarray, mode: str, raw_max: float = 16.0,
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.raw, self.labels, self.mode = raw, labels, mode
        self.view = View("tiles", "", False, 0.0, raw_max, True)
        self.reduce = -(-raw.shape[-1] // THUMB_PIXELS)  # 1 for the digits, 4 for MNIST
        self.predictions: np.ndarray | None = None
        self.indices = np.arange(len(labels))
        self.cursor = 0
        self._thumbs: dict[int, list[list[Segment]]] = {}
        self._rows: dict[tuple[int, int], Strip] = {}

    @property
    def columns(self) -> int:
        return max(1, (self.scrollable_content_region.width + 2) // CELL_W)

    def set_indices(self, indices: np.ndarray, keep: int | None = None) -> None:
        self.indices = indices
        pos = np.flatnonzero(indices == keep) if keep is not None else []
        self.cursor = int(pos[0]) if len(pos) else 0
        self._changed()

    def set_predictions(self, predictions: np.ndarray) -> None:
        self.predictions = predictions
        self._changed()

    def _changed(self) -> None:
        self._rows.clear()
        rows = -(-len(self.indices) // self.columns)
        self.virtual_size = Size(self.columns * CELL_W, rows * CELL_H)
        self.refresh()
        self.call_after_refresh(self.show_cursor)

    def on_resize(self) -> None:
        self._changed()

    @property
    def selected(self) -> int | None:
        return int(self.indices[self.cursor]) if len(self.indices) else None

    def move(self, delta: int) -> None:
        if not len(self.indices):
            return
        self.cursor = int(np.clip(self.cursor + delta, 0, len(self.indices) - 1))
        self._rows.clear()
        self.refresh()
        self.show_cursor()
        self.post_message(self.Moved())

    class Moved(Message):
        pass

    def show_cursor(self) -> None:
        row, col = divmod(self.cursor, self.columns)
        self.scroll_to_region(Region(col * CELL_W, row * CELL_H, CELL_W, CELL_H), animate=False)

    def thumb(self, index: int) -> list[list[Segment]]:
        if index not in self._thumbs:
            tile = shrink(Tile("", self.raw[index].astype(float), self.view.lo, self.view.hi),
                          self.reduce)
            rows = tile_cells(tile, self.view, palette(self.mode, False), 1)
            pad = THUMB_PIXELS - tile.data.shape[1]
            self._thumbs[index] = [r + [Segment(" " * pad)] if pad else r for r in rows]
        return self._thumbs[index]

    def jump(self, index: int) -> bool:
        """Put the cursor on digit ``index``; False if the filter hides it."""
        pos = np.flatnonzero(self.indices == index)
        if not len(pos):
            return False
        self.move(int(pos[0]) - self.cursor)
        return True

    def caption(self, index: int, is_cursor: bool) -> Segment:
        label = int(self.labels[index])
        if self.predictions is None:
            text, style = f"{label}→…", Style(dim=True)
        else:
            pred = int(self.predictions[index])
            text = f"{label}→{pred}" + ("" if pred == label else " ✗")
            style = WRONG if pred != label else Style()
        return Segment(text.center(8), CURSOR if is_cursor else style)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        vy = y + int(self.scroll_y)
        grid_row, sub = divmod(vy, CELL_H)
        key = (grid_row, sub)
        strip = self._rows.get(key)
        if strip is None:
            segs: list[Segment] = []
            cols = self.columns
            for c in range(cols):
                k = grid_row * cols + c
                if k >= len(self.indices):
                    break
                index = int(self.indices[k])
                mark = "▐" if k == self.cursor else " "
                segs.append(Segment(mark if sub < 4 else " ", Style(color="yellow")))
                if sub < 4:
                    segs.extend(self.thumb(index)[sub])
                else:
                    segs.append(self.caption(index, k == self.cursor))
                segs.append(Segment("▌" if k == self.cursor and sub < 4 else " ",
                                    Style(color="yellow")))
            strip = Strip(segs)
            self._rows[key] = strip
        return strip.crop_extend(int(self.scroll_x), int(self.scroll_x) + width, self.rich_style)

    def on_click(self, event: events.Click) -> None:
        col = (event.x + int(self.scroll_x)) // CELL_W
        row = (event.y + int(self.scroll_y)) // CELL_H
        k = row * self.columns + col
        if col < self.columns and 0 <= k < len(self.indices):
            self.cursor = k
            self._rows.clear()
            self.refresh()
            self.post_message(self.Moved())
            if event.chain >= 2:
                self.screen.action_choose()  # type: ignore[attr-defined]


class PickerScreen(ModalScreen[int | None]):
    """Choose a digit. Returns its index, or None when cancelled."""

    BINDINGS = [
        Binding("enter", "choose", "Choose", id="picker_choose"),
        Binding("escape", "cancel", "Cancel", id="picker_cancel"),
        Binding("right", "move(1)", "Next", show=False, id="picker_right"),
        Binding("left", "move(-1)", "Previous", show=False, id="picker_left"),
        Binding("down", "move_row(1)", "Row down", show=False, id="picker_down"),
        Binding("up", "move_row(-1)", "Row up", show=False, id="picker_up"),
        Binding("pagedown", "move_row(4)", "Page down", show=False, id="picker_page_down"),
        Binding("pageup", "move_row(-4)", "Page up", show=False, id="picker_page_up"),
        *[Binding(str(k), f"only_class({k})", f"Only class {k}", show=False,
                  id=f"picker_class_{k}") for k in range(10)],
        Binding("home", "move(-1000000)", "First", show=False, id="picker_first"),
        Binding("end", "move(1000000)", "Last", show=False, id="picker_last"),
        Binding("w", "wrong", "Wrong only", id="picker_wrong"),
        Binding("a", "all", "All digits", id="picker_all"),
        Binding("g,slash", "jump", "Go to index", id="picker_jump",
                tooltip="Type a digit's index and press Enter"),
    ]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical { width: 100%; height: 100%; border: round $accent;
                              background: $surface; }
    PickerScreen #picker-status, PickerScreen #picker-filter { height: 1; }
    PickerScreen #picker-jump { height: 1; border: none; padding: 0 1; display: none; }
    PickerScreen #picker-jump.shown { display: block; }
    """

    def __init__(self, current: int) -> None:
        super().__init__()
        self.current = current
        self.only: int | None = None
        self.wrong = False

    @property
    def cnn(self) -> CnnApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        digits = self.cnn.digits
        with Vertical() as v:
            v.border_title = "choose a digit"
            v.border_subtitle = ("Enter choose · Esc cancel · 0-9 class · w wrong · a all · "
                                 "g go to")
            yield Static(id="picker-filter")
            yield Input(placeholder=f"go to index (0-{len(digits) - 1}), Enter", id="picker-jump",
                        restrict=r"[0-9]*", disabled=True)  # no keys until it is opened
            yield DigitGrid(digits.raw, digits.labels, self.cnn.color_mode, digits.raw_max,
                            id="grid")
            yield Static(id="picker-status")
        yield TooSmall()

    def on_mount(self) -> None:
        grid = self.query_one(DigitGrid)
        if self.cnn.predictions is not None:
            grid.set_predictions(self.cnn.predictions)
        else:
            self.cnn.ensure_predictions()
        grid.set_indices(np.arange(len(self.cnn.digits.labels)), keep=self.current)

        self.update_status()

    def predictions_ready(self) -> None:
        """Called by the app when the batch of predictions has been computed."""
        self.query_one(DigitGrid).set_predictions(self.cnn.predictions)
        self.apply_filter()

    def apply_filter(self) -> None:
        grid = self.query_one(DigitGrid)
        labels = self.cnn.digits.labels
        keep = np.ones(len(labels), dtype=bool)
        if self.only is not None:
            keep &= labels == self.only
        if self.wrong:
            if self.cnn.predictions is None:
                self.notify("predictions are still being computed", timeout=2)
            else:
                keep &= self.cnn.predictions != labels
        grid.set_indices(np.flatnonzero(keep), keep=grid.selected)
        self.update_status()

    def update_status(self) -> None:
        grid = self.query_one(DigitGrid)
        f = Text()
        f.append("class: ", "dim")
        f.append("all" if self.only is None else str(self.only), "bold")
        f.append("   wrong predictions only: ", "dim")
        f.append("yes" if self.wrong else "no", "bold")
        f.append(f"   {len(grid.indices)} digits", "dim")
        if self.cnn.predictions is None:
            f.append("   computing predictions...", "yellow")
        elif self.cnn.confidences is not None:
            nan, posinf, neginf = nonfinite_counts(self.cnn.confidences)
            if nan + posinf + neginf:
                f.append(f"   NaN! probabilities for {nan + posinf + neginf} digits",
                         "bold white on red")
        self.query_one("#picker-filter", Static).update(f)
        s = Text()
        index = grid.selected
        if index is None:
            s.append("no digit matches this filter", "bold red")
        else:
            label = int(self.cnn.digits.labels[index])
            s.append(f"{self.cnn.digits.title} #{index}  label {label}", "bold")
            if self.cnn.digits.name == "mnist":
                s.append("  (training set)" if index < self.cnn.digits.n_train
                         else "  (test set)", "dim")
            if self.cnn.predictions is not None:
                pred = int(self.cnn.predictions[index])
                conf = float(self.cnn.confidences[index])
                if np.isfinite(conf):
                    s.append(f"  predicted {pred} at {conf:.0%}",
                             "green" if pred == label else "red")
                else:
                    s.append("  no prediction: its probabilities are NaN!", "bold white on red")
        self.query_one("#picker-status", Static).update(s)

    def on_digit_grid_moved(self) -> None:
        self.update_status()

    def action_move(self, delta: int) -> None:
        self.query_one(DigitGrid).move(delta)
        self.update_status()

    def action_move_row(self, rows: int) -> None:
        grid = self.query_one(DigitGrid)
        grid.move(rows * grid.columns)
        self.update_status()

    def action_only_class(self, k: int) -> None:
        self.only = None if self.only == k else k
        self.apply_filter()

    def action_wrong(self) -> None:
        self.wrong = not self.wrong
        self.apply_filter()

    def action_all(self) -> None:
        self.only, self.wrong = None, False
        self.apply_filter()

    def action_jump(self) -> None:
        box = self.query_one("#picker-jump", Input)
        box.value = ""
        box.disabled = False
        box.add_class("shown")
        box.focus()

    def _close_jump(self) -> None:
        box = self.query_one("#picker-jump", Input)
        box.remove_class("shown")
        box.disabled = True
        self.set_focus(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._close_jump()
        if not event.value:
            return
        index = int(event.value)
        if index >= len(self.cnn.digits):
            self.notify(f"there is no digit {index}: the indices go from 0 to "
                        f"{len(self.cnn.digits) - 1}", severity="warning")
            return
        grid = self.query_one(DigitGrid)
        if not grid.jump(index):  # hidden by the filter: show everything, then go there
            self.only, self.wrong = None, False
            self.apply_filter()
            grid.jump(index)
        self.update_status()

    def action_choose(self) -> None:
        index = self.query_one(DigitGrid).selected
        if index is not None:
            self.dismiss(index)

    def action_cancel(self) -> None:
        if self.query_one("#picker-jump", Input).has_class("shown"):
            self._close_jump()
            return
        self.dismiss(None)
