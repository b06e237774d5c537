"""The stepper: one digit's forward and backward pass, one step at a time."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from cnntui import explain
from cnntui.trace import Step, Trace
from screens import cell_view, panes
from screens.colors import palette
from screens.figure import figure_png, figure_svg, text_svg
from screens.views import View, build_view
from screens.widgets.footer import Footer
from screens.widgets.steps import StepBar, StepChosen, StepList
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane
from screens.widgets.too_small import TooSmall

if TYPE_CHECKING:
    from screens.app import CnnApp

TINY_LOSS = 1e-3  # below it every gradient is tiny: dlogits = probs - onehot is at most this
EXPLAIN_MIN, EXPLAIN_MAX = 2, 7  # lines of the explanation pane
PREFETCH_DELAY = 0.02  # s after a step before its neighbours are built
PLAY_INTERVAL = 0.6  # seconds per step while playing
CHANNEL_KEYS = "0123456789"  # key k enlarges channel #k, as the maps are labelled
STEP_GROUP = Binding.Group("step", compact=True)
CELL_GROUP = Binding.Group("cell (n p: step)", compact=True)
UPDATE_LR = 0.01  # the update step's learning rate (the training default)
UPDATE_STEP = "SGD"  # the update step's name in the step list
SHOWN_KEPT = 8  # steps whose panes are kept built (the current one and its neighbours)
DIGIT_GROUP = Binding.Group("digit", compact=True)  # key k selects channel CHANNEL_KEYS.index(k)


class Shown(NamedTuple):
    """What the normal view shows of one step: the picture and every pane's text."""

    view: View
    header: Text
    title: Text
    scale: Text
    explanation: Text
    side_parts: tuple[Text, Text, Text | None]  # stats, PyTorch, gradient sizes
    side: Text


def counterpart(trace: Trace, index: int) -> int:
    """The step on the other side of the pass: z2 <-> dz2, dW2 -> z2, probs -> dlogits."""
    step = trace.steps[index]
    names = trace.names
    if step.phase == "forward":
        for name in ("d" + step.name, "dlogits"):
            if name in names:
                return names.index(name)
        return trace.first_backward
    if step.name[1:] in names and trace.steps[names.index(step.name[1:])].phase == "forward":
        return names.index(step.name[1:])
    for s in trace.steps:  # a parameter's gradient: the layer's forward output
        if s.phase == "forward" and s.layer == step.layer:
            return s.index
    return 0


def value_cell(x: float) -> str | Text:
    """One number of the values table; NaN and Inf spelled out, loudly."""
    if np.isfinite(x):
        return f"{x: .4g}"
    return Text(f"{x: .4g}", panes.BAD_STYLE)  # " nan", " inf", "-inf"


class StepperScreen(Screen):
    """Header, step list, heatmaps, stats, gradients, PyTorch and the explanation."""

    AUTO_FOCUS = ""  # nothing: the values table takes focus only while it is shown

    BINDINGS = [
        # in cell mode (and over the values table) the arrows move a cursor; n and p still step
        *[Binding(keys, f"move({dr},{dc})", "cell", key_display=arrow, id=f"cell_{way}",
                  tooltip=f"Cell mode: move the cursor {way}", group=CELL_GROUP)
          for keys, dr, dc, arrow, way in (("left,h", 0, -1, "←", "left"),
                                           ("right,l", 0, 1, "→", "right"),
                                           ("up,k", -1, 0, "↑", "up"),
                                           ("down,j", 1, 0, "↓", "down"))],
        Binding("left,h", "step(-1)", "step", key_display="←", tooltip="Previous step",
                id="previous_step", group=STEP_GROUP),
        Binding("right,l", "step(1)", "step", key_display="→", tooltip="Next step",
                id="next_step", group=STEP_GROUP),
        Binding("p", "step_by(-1)", "Previous step", show=False, id="previous_step_p"),
        Binding("n", "step_by(1)", "Next step", show=False, id="next_step_n"),
        Binding("home,g", "first", "First step", show=False, id="first_step"),
        Binding("end,G", "last", "Last step", show=False, id="last_step"),
        Binding("space", "play", "play", key_display="␣", show=False,
                tooltip="Play / pause automatic stepping", id="play_pause"),
        Binding("tab", "flip", "fwd/bwd", key_display="⇥",
                tooltip="Jump between forward and backward: z2 <-> dz2, dW2 -> z2",
                id="flip_phase"),
        Binding("left_square_bracket", "digit(-1)", "digit", key_display="[",
                tooltip="Previous digit", id="previous_digit", group=DIGIT_GROUP),
        Binding("right_square_bracket", "digit(1)", "digit", key_display="]", tooltip="Next digit",
                id="next_digit", group=DIGIT_GROUP),
        Binding("d", "pick", "pick", id="pick_digit",
                tooltip="Pick a digit from a grid of thumbnails"),
        Binding("s", "scale", "scale", id="toggle_scale", show=False,
                tooltip="Colour scale shared across channels / one per channel"),
        Binding("v", "values", "values", id="toggle_values", show=False,
                tooltip="Table of the raw numbers of the selected channel, with the cursor cell"),
        Binding("a", "magnitude", "|grad|", show=False,
                tooltip="Backward steps: |gradient| heatmap on a log scale / signed values",
                id="toggle_magnitude"),
        *[Binding(k, f"channel({i})", f"Enlarge channel {i}", show=False, id=f"channel_{k}")
          for i, k in enumerate(CHANNEL_KEYS)],
        Binding("escape", "leave", "leave", key_display="esc", id="leave_cell_mode",
                tooltip="Leave cell mode, the im2col view or the values table"),
        Binding("c", "cell_mode", "cell", id="cell_mode",
                tooltip="Cell mode: a cursor over the maps shows how one number is made "
                        "(or click a cell)"),
        Binding("m", "im2col", "im2col", show=False, id="im2col",
                tooltip="Conv steps: the lesson's im2col, cols @ W = out, the cursor's row lit"),
        Binding("u", "apply_update", "apply", id="apply_update",
                tooltip=f"{UPDATE_STEP} step: apply the SGD step to the network"),
        Binding("z", "undo_update", "undo", id="undo_update",
                tooltip=f"Undo the last applied {UPDATE_STEP} step"),
        Binding("escape", "channel(-1)", "All channels", show=False, id="all_channels"),
        Binding("e", "export_figure", "figure", show=False, id="export_figure",
                tooltip="Save the picture shown (all channels, one enlarged, cell mode's or "
                        "the update's) as an SVG and a PNG figure for slides"),
        Binding("E", "export_explanation", "explanation", show=False, id="export_explanation",
                tooltip="Save the explanation shown (in cell mode: how the number is made) as "
                        "an SVG figure, and a PNG where a converter exists"),
        # the maps and the side pane outgrow small terminals: let the keyboard reach the rest
        Binding("pagedown", "scroll('map', 1)", "Scroll the maps down", show=False,
                id="maps_down"),
        Binding("pageup", "scroll('map', -1)", "Scroll the maps up", show=False, id="maps_up"),
        Binding("J", "scroll('side', 1)", "Scroll the stats pane down", show=False,
                id="side_down"),
        Binding("K", "scroll('side', -1)", "Scroll the stats pane up", show=False,
                id="side_up"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shared = True
        self.channel: int | None = None
        self.magnitude = False
        self.show_values = False
        self.playing = False
        self.view: View | None = None
        self.first_bad: Step | None = None  # the first step with a NaN or an Inf
        self.told_tiny = False  # the note on tiny gradients is shown once per session
        self.cell: tuple[int, ...] | None = None  # cell mode's cursor, in the step's tensor
        self.im2col = False  # cell mode on a conv: show cols @ W = out
        self.at_update = False  # on the SGD step after the last gradient
        self.update: explain.Update | None = None
        self.undo: list[tuple[dict[str, np.ndarray], str]] = []  # weights before each apply
        self._timer = None
        self._floor_trace: Trace | None = None  # explain_floor's trace and width
        self._floor_width = 0
        self._floor = 0
        # what the normal view showed of recent steps (``shown``), oldest first
        self._shown: OrderedDict[tuple, Shown] = OrderedDict()
        self._going, self._last_index = 1, 0  # the way the user steps: prefetched first

    @property
    def cnn(self) -> CnnApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield TextPane(id="header", wrap=False, keep=SHOWN_KEPT)
        yield StepBar(id="stepbar")
        with Horizontal(id="body"):
            yield StepList(id="steps")
            with Vertical(id="center"):
                yield TextPane(id="title", wrap=False, keep=SHOWN_KEPT)
                yield TensorView(id="map", mode=self.cnn.color_mode)
                with Vertical(id="values-box"):
                    yield DataTable(id="values", zebra_stripes=True)
                    yield Static(id="cell")
                yield TextPane(id="scale", wrap=False, keep=SHOWN_KEPT)
                yield TextPane(id="explain", keep=SHOWN_KEPT)
            yield TextPane(id="side", keep=SHOWN_KEPT, steady=True)
        yield Footer(compact=True)
        yield TooSmall()

    def on_mount(self) -> None:
        self._timer = self.set_interval(PLAY_INTERVAL, self._tick, pause=True)
        self.query_one(DataTable).can_focus = False
        self.new_trace()

    # ---- drawing -------------------------------------------------------------------------

    @property
    def step(self) -> Step:
        return self.cnn.trace.steps[self.cnn.step_index]

    def new_trace(self) -> None:
        steps = self.cnn.trace.steps
        names = [(s.name, s.phase) for s in steps]
        # which steps hold a NaN or an Inf: flagged in the step list, the first one in the header
        flags = [panes.step_flags(s) for s in steps]
        marks = ["NaN" if any(f.startswith("NaN") for f in fl) else "Inf" if fl else ""
                 for fl in flags]
        self.first_bad = next((s for s, fl in zip(steps, flags, strict=True) if fl), None)
        names.append((UPDATE_STEP, "update"))
        marks.append("")
        self.update = None
        self._shown.clear()
        self.query_one(StepList).set_steps(names, marks)
        self.query_one(StepBar).set_steps(names, marks)
        self.redraw()

    def redraw(self) -> None:
        """Show the current step of the current trace (in cell mode, the cursor's cell; after
        the last step, the update step)."""
        trace, step = self.cnn.trace, self.step
        if self.at_update:
            self.draw_update()
            return
        if self.cell is not None:
            self.draw_cell()
            return
        self._going = -1 if step.index < self._last_index else 1
        self._last_index = step.index
        shown = self.shown(step.index)
        self.view = view = shown.view
        self.channel = view.selected
        self.query_one("#header", TextPane).set(shown.header)
        tensor_view = self.query_one(TensorView)
        tensor_view.show(view, self.cnn.color_mode)
        self.query_one("#title", TextPane).set(shown.title)
        self.query_one("#scale", TextPane).set(shown.scale)
        self.set_explanation(shown.explanation)
        self.update_side()
        if step.phase == "backward" and not self.told_tiny and trace.loss < TINY_LOSS:
            self.told_tiny = True
            self.notify(f"The loss is {panes.num(trace.loss)}: dlogits = probs - onehot is "
                        "that small, so every gradient below it is tiny. ] or d: a digit the "
                        "network is less sure of.", title="Tiny gradients", timeout=8)
        self.mark_current(step.index)
        if self.show_values:
            self.fill_values()
        self.refresh_bindings()
        # not at once after the refresh: Textual's output thread must first get the GIL to
        # write the step to the terminal (it waited up to 5 ms for a prefetch)
        self.set_timer(PREFETCH_DELAY, self._prefetch)

    def shown(self, index: int) -> Shown:
        """What the normal view shows of step ``index`` in the current state (settings, pane
        sizes, PyTorch's progress), built once: stepping back and forth rebuilds nothing.
        Forgotten with the trace (``new_trace``) and when PyTorch's results arrive."""
        cnn = self.cnn
        tensor_view = self.query_one(TensorView)
        key = self._shown_key(index)
        center_w, side_w = key[-2:]
        got = self._shown.get(key)
        if got is not None:
            self._shown.move_to_end(key)
            return got
        trace, step, mode = cnn.trace, cnn.trace.steps[index], cnn.color_mode
        view = build_view(step, trace, shared=self.shared, channel=self.channel,
                          magnitude=self.magnitude, mode=mode)
        reduction = tensor_view.prepare(view)
        verdict = None
        if cnn.reference_state == "ready" and step.torch_value is not None:
            verdict = cnn.verdict(step)
        parts = (panes.stats_text(step, side_w), panes.torch_text(step, cnn.reference_state,
                                                                   verdict),
                 panes.grad_text(step, trace, width=side_w))
        # the gradient sizes before PyTorch: in a short pane they are what a backward step is for
        side = [parts[0], parts[1]] if parts[2] is None else [parts[0], parts[2], parts[1]]
        got = self._shown[key] = Shown(
            view, panes.header(trace, step, cnn.weights_desc, self.playing, self.first_bad),
            panes.title(step, view, reduction),
            panes.scale_text(view, palette(mode, view.diverging), center_w),
            panes.explain_text(step, self.legend(reduction, view)), parts,
            Text("\n\n").join(side))
        while len(self._shown) > SHOWN_KEPT:
            self._shown.popitem(last=False)
        return got

    def _prefetch(self) -> None:
        """While idle after a step: build the neighbouring steps (the way the user is going
        first), one per call so that a key pressed meanwhile is handled in between."""
        if not self.is_current or self.cell is not None or self.at_update:
            return
        index, last = self.cnn.step_index, len(self.cnn.trace.steps) - 1
        for i in (index + self._going, index - self._going):
            if 0 <= i <= last and not self._has_shown(i):
                self._prepare(i)
                self.call_later(self._prefetch)
                return

    def _has_shown(self, index: int) -> bool:
        return self._shown_key(index) in self._shown

    def _shown_key(self, index: int) -> tuple:
        cnn = self.cnn
        return (index, self.shared, self.channel, self.magnitude, cnn.color_mode, self.playing,
                cnn.weights_desc, cnn.reference_state, tuple(self.query_one(TensorView).size),
                self.query_one("#center").size.width or 60,
                (self.query_one("#side").size.width or 28) - 2)

    def _prepare(self, index: int) -> None:
        shown = self.shown(index)
        for pane, text in (("#header", shown.header), ("#title", shown.title),
                           ("#scale", shown.scale), ("#explain", shown.explanation),
                           ("#side", shown.side)):
            self.query_one(pane, TextPane).prepare(text)

    def mark_current(self, index: int) -> None:
        self.query_one(StepList).set_current(index)
        self.query_one(StepBar).set_current(index)

    def _show(self, view: View, title: Text, side: Text, explanation: Text) -> None:
        """Cell mode, im2col and the update step: a view with its own scales per picture."""
        self.view = view
        mode = self.cnn.color_mode
        trace = self.cnn.trace
        self.query_one("#header", TextPane).set(
            panes.header(trace, self.step, self.cnn.weights_desc, self.playing, self.first_bad,
                         update=self.at_update))
        self.query_one(TensorView).show(view, mode)
        self.query_one("#title", TextPane).set(title)
        width = self.query_one("#center").size.width or 60
        self.query_one("#scale", TextPane).set(
            panes.scale_text(view, palette(mode, view.diverging), width))
        self.set_explanation(explanation)
        self.query_one("#side", TextPane).set(side)
        self.refresh_bindings()

    def draw_cell(self) -> None:
        trace, step = self.cnn.trace, self.step
        self.cell = cell_view.clip_cell(step, self.cell)
        side_w = (self.query_one("#side").size.width or 28) - 2
        explained = explain.explain_cell(trace, step.name, self.cell)
        where = Text(no_wrap=True, overflow="ellipsis")
        where.append(f"{step.layer}  ", "bold")
        if self.im2col and self.im2col_ok(step):
            im = explain.im2col_view(trace, step.name, self.cell)
            view = cell_view.im2col_view(trace, im, self.cnn.color_mode, self.cell)
            name = cell_view.cell_name(step, self.cell)
            if im.row is not None:
                where.append(f"im2col {im.shape}", "bold cyan")
                where.append(f"  row {im.row} = {name}'s window", panes.KEY_STYLE)
            else:
                where.append(f"im2col dW = cols.T @ dout: {im.dw_shape}", "bold cyan")
                where.append(f"  {name}: column {im.column} of cols . dout", panes.KEY_STYLE)
            self._show(view, where, panes.cell_text(explained, side_w, cell_view.SMALL_GRID),
                       panes.im2col_text(im, step, view.legend))
            if im.row is not None:
                self.query_one(TensorView).scroll_to_pixel(0, im.row)
        else:
            view = cell_view.cell_view(step, trace, explained, self.cnn.color_mode)
            where.append(cell_view.cell_name(step, self.cell), "bold cyan")
            where.append(f"  = {explained.value:.6g}  cell mode", panes.KEY_STYLE)
            self._show(view, where, panes.cell_text(explained, side_w, cell_view.SMALL_GRID),
                       panes.explain_text(step, view.legend))
            row, _ = cell_view.tile_position(step, trace, self.cell)
            self.query_one(TensorView).scroll_to_pixel(0, row)
        self.mark_current(step.index)

    def draw_update(self) -> None:
        trace = self.cnn.trace
        if self.update is None or self.update.trace_after.index != trace.index:
            self.update = explain.sgd_update(trace, UPDATE_LR)
        update = self.update
        view = cell_view.update_view(update)
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append("update  ", "bold")
        title.append(f"W <- W - {update.lr:g}·dW  ", "bold cyan")
        title.append("  u: apply it to the network" + ("  z: undo" if self.undo else ""),
                     panes.KEY_STYLE)
        side_w = (self.query_one("#side").size.width or 28) - 2
        self._show(view, title, panes.update_text(update, side_w),
                   panes.update_explain(update, view.legend, bool(self.undo)))
        self.mark_current(len(trace.steps))

    def im2col_ok(self, step: Step) -> bool:
        return step.kind == "conv" and (step.phase == "forward" or step.value.ndim == 4)

    def set_explanation(self, text: Text) -> None:
        """The explanation pane grows to show all of its lines (up to EXPLAIN_MAX), so the
        formula, the code and the legend are never cut; the maps get the rest."""
        pane = self.query_one("#explain", TextPane)
        width = pane.size.width or self.query_one("#center").size.width
        if not width:
            pane.set(text)
            return
        lines = max(pane.lines_needed(text, width), self.explain_floor(width))
        height = max(EXPLAIN_MIN, min(EXPLAIN_MAX, lines))
        self._floor = height  # and it stays as tall while this trace is shown at this width
        if pane.styles.height is None or pane.styles.height.value != height:
            pane.styles.height = height
            pane.set(text, resizing=True)
        else:
            pane.set(text)

    def explain_floor(self, width: int) -> int:
        """The lines the longest step's formula and code need at this width, or more once a
        step's legend needed more. The pane keeps at least that height on every step, so
        stepping does not resize it: a resize is a layout pass and a repaint of every pane
        (at 80x24 it doubled a step's time)."""
        trace = self.cnn.trace
        if self._floor_trace is not trace or self._floor_width != width:
            self._floor_trace, self._floor_width = trace, width
            self._floor = max(len(panes.explain_text(s).wrap(self.app.console, width))
                              for s in trace.steps)
        return self._floor

    def legend(self, reduction: int, view: View | None = None) -> str:
        """The view's legend (default: the view shown), unless the maps are too small to show
        what it describes."""
        view = self.view if view is None else view
        if view is None or not view.legend or reduction == 1 or \
                not any(t.marks is not None for t in view.tiles):
            return view.legend if view else ""
        keys = f"0-{view.channels - 1}" if view.channels > 1 else "0"
        return (f"at 1/{reduction} size the windows' maxima can't be marked: "
                f"{keys} shows one channel at full size")

    def on_tensor_view_resolution(self, event: TensorView.Resolution) -> None:
        if self.view is not None and self.cell is None and not self.at_update:
            self.query_one("#title", TextPane).set(panes.title(self.step, self.view,
                                                               event.reduction))
            self.set_explanation(panes.explain_text(self.step, self.legend(event.reduction)))

    def update_side(self) -> None:
        """Stats, the PyTorch comparison and (backward) gradient sizes, in one pane."""
        shown = self.shown(self.step.index)
        self.stats_text, self.torch_text, self.grad_text = shown.side_parts
        self.query_one("#side", TextPane).set(shown.side)

    def update_torch(self) -> None:
        """The PyTorch run finished: its pane is in the normal view's side pane only."""
        self._shown.clear()  # every step's comparison changed
        if self.cell is None and not self.at_update:
            self.update_side()
            self.call_after_refresh(self._prefetch)

    def values_matrix(self) -> tuple[np.ndarray, str, list[str]]:
        """The selected channel's numbers as a 2-D table, the index prefix, and row labels."""
        v = np.asarray(self.step.value)
        ch = self.channel or 0
        name = self.step.name
        if v.ndim == 1:
            return v[:, None], f"{name}", [str(i) for i in range(v.size)]
        if v.ndim == 2:
            return v, f"{name}", [str(i) for i in range(v.shape[0])]
        ch = min(ch, v.shape[0] - 1)
        if v.ndim == 3:
            return v[ch], f"{name}[{ch}]", [str(i) for i in range(v.shape[1])]
        c, kh, kw = v.shape[1:]
        return (v[ch].reshape(c * kh, kw), f"{name}[{ch}]",
                [f"{i // kh},{i % kh}" for i in range(c * kh)])

    def fill_values(self) -> None:
        table = self.query_one(DataTable)
        m, prefix, rows = self.values_matrix()
        table.clear(columns=True)
        for j in range(m.shape[1]):
            table.add_column(str(j), key=str(j))
        for i, r in enumerate(m):
            table.add_row(*(value_cell(x) for x in r.tolist()), label=rows[i])
        self.show_cell(0, 0)

    def show_cell(self, row: int, col: int) -> None:
        m, prefix, rows = self.values_matrix()
        if not (0 <= col < m.shape[1] and 0 <= row < m.shape[0]):
            text = Text(f"{prefix}: move the cursor onto a number", "dim")
        else:
            x = float(m[row, col])
            text = Text()
            idx = f"{rows[row]},{col}" if m.shape[1] > 1 else rows[row]
            text.append(f"{prefix}[{idx}] = ", "dim")
            text.append(f"{x:.12g}", "bold" if np.isfinite(x) else panes.BAD_STYLE)
            tv = self.step.torch_value
            if tv is not None:
                tm = self.values_matrix_of(tv)
                y = float(tm[row, col])
                text.append("   torch ", "dim")
                text.append(f"{y:.12g}", "" if np.isfinite(y) else panes.BAD_STYLE)
        self.query_one("#cell", Static).update(text)

    def values_matrix_of(self, a: np.ndarray) -> np.ndarray:
        """``a`` (shaped like the step's value) laid out like ``values_matrix``."""
        v = np.asarray(a)
        ch = min(self.channel or 0, v.shape[0] - 1) if v.ndim > 2 else 0
        if v.ndim == 1:
            return v[:, None]
        if v.ndim == 2:
            return v
        if v.ndim == 3:
            return v[ch]
        return v[ch].reshape(-1, v.shape[-1])

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self.show_cell(event.coordinate.row, event.coordinate.column)

    def on_step_chosen(self, event: StepChosen) -> None:
        if event.index >= len(self.cnn.trace.steps):
            self.go_update()
            return
        self.at_update = False
        if event.index == self.cnn.step_index:
            self.redraw()
        self.cnn.go_to(event.index)

    def on_tensor_view_clicked(self, event: TensorView.Clicked) -> None:
        """A click on a map picks that cell (and enters cell mode)."""
        if self.at_update or self.view is None or self.im2col:
            return
        step = self.step
        if self.cell is not None and event.tile != 0:
            return  # the other pictures show what the cursor's cell read
        if self.view.kind != "tiles" or event.tile >= len(self.view.tiles):
            return
        picked = cell_view.cell_at(step, self.cnn.trace, self.view.tiles[event.tile],
                                   event.row, event.col)
        if picked is not None:
            self.cell = picked
            self.redraw()

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    # ---- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        cell = self.cell is not None
        if action == "move":  # the values table moves its own cursor: the footer says so
            return cell or self.show_values
        if action == "step":
            return not (cell or self.show_values)
        if action == "leave":
            return cell or self.show_values
        if action == "im2col":
            return True if cell and self.im2col_ok(self.step) else None
        if action == "apply_update":
            return self.at_update
        if action == "undo_update":
            return bool(self.undo) and self.at_update
        if action == "cell_mode":
            return not cell and not self.at_update
        return True

    def action_step(self, delta: int) -> None:
        if self.at_update:
            if delta < 0:
                self.at_update = False
                self.redraw()
            return
        if delta > 0 and self.cnn.step_index == len(self.cnn.trace.steps) - 1:
            self.go_update()
            return
        if self.cell is not None and self.cnn.step_index + delta in range(
                len(self.cnn.trace.steps)):
            self.im2col = self.im2col and self.im2col_ok(
                self.cnn.trace.steps[self.cnn.step_index + delta])
        self.cnn.go_to(self.cnn.step_index + delta)

    def action_step_by(self, delta: int) -> None:
        """n and p: a step in every mode (the arrows may move a cursor instead)."""
        self.action_step(delta)

    def go_update(self) -> None:
        self.at_update = True
        self.cell, self.im2col = None, False
        self.redraw()

    def action_move(self, dr: int, dc: int) -> None:
        if self.cell is None:
            return  # the values table, focused, moved its own cursor
        self.cell = cell_view.move(self.step, self.cnn.trace, self.cell, dr, dc)
        self.redraw()

    def action_cell_mode(self) -> None:
        if self.show_values:
            self.action_values()
        self.at_update = False
        step = self.step
        self.cell = cell_view.clip_cell(step, None if self.channel is None else
                                        cell_view.with_channel(step,
                                                               cell_view.first_cell(step),
                                                               self.channel))
        self.redraw()

    def action_leave(self) -> None:
        if self.show_values:
            self.action_values()
            return
        if self.im2col:
            self.im2col = False
        else:
            self.cell = None
        self.redraw()

    def action_im2col(self) -> None:
        if self.cell is None or not self.im2col_ok(self.step):
            self.notify("im2col applies to a convolution's output or weight gradient, in "
                        "cell mode (c)", timeout=3)
            return
        self.im2col = not self.im2col
        self.redraw()

    def action_apply_update(self) -> None:
        if not self.at_update or self.update is None:
            return
        update = self.update
        self.undo.append((self.cnn.params, self.cnn.weights_desc))
        self.cnn.set_weights(update.params_after, update.trace_after.weights)
        self.go_update()  # the next step from the new weights: u again takes it
        self.notify(f"applied: loss {panes.num(update.loss_before)} -> "
                    f"{panes.num(update.loss_after)} for digit #{self.cnn.index}; z undoes it",
                    timeout=4)

    def action_undo_update(self) -> None:
        if not self.undo:
            return
        params, desc = self.undo.pop()
        self.cnn.set_weights(params, desc)
        self.go_update()
        self.notify(f"undone: back to {desc} weights", timeout=3)

    def action_first(self) -> None:
        self.cnn.go_to(0)

    def action_last(self) -> None:
        self.cnn.go_to(len(self.cnn.trace.steps) - 1)

    def action_flip(self) -> None:
        self.cnn.go_to(counterpart(self.cnn.trace, self.cnn.step_index))

    def action_play(self) -> None:
        self.playing = not self.playing
        if self.playing:
            if self.cnn.step_index == len(self.cnn.trace.steps) - 1:
                self.cnn.go_to(0)
            self._timer.resume()
        else:
            self._timer.pause()
        self.redraw()

    def _tick(self) -> None:
        if self.cnn.step_index >= len(self.cnn.trace.steps) - 1:
            self.action_play()  # stop at the end
            return
        self.cnn.go_to(self.cnn.step_index + 1)

    def action_digit(self, delta: int) -> None:
        self.cnn.set_digit(self.cnn.index + delta)

    def action_pick(self) -> None:
        self.cnn.action_pick()

    def action_scale(self) -> None:
        self.shared = not self.shared
        self.redraw()
        self.notify("shared colour scale across channels" if self.shared
                    else "one colour scale per channel", timeout=2)

    def action_magnitude(self) -> None:
        self.magnitude = not self.magnitude
        self.redraw()
        if self.magnitude and self.step.phase == "forward":
            self.notify("the |grad| view applies to backward steps", timeout=2)

    def export_name(self) -> str:
        where = "update" if self.at_update else self.step.name
        cell = "" if self.cell is None else "-" + "-".join(map(str, self.cell))
        return f"cnntui-{self.cnn.input_stem()}-{where}{cell}"

    def action_export_figure(self) -> None:
        if self.view is None:
            self.notify("there is no picture on this step to save", timeout=3)
            return
        self.cnn.save_export(f"{self.export_name()}-figure", "figure", figure_svg(self.view),
                             figure_png(self.view))

    def action_export_explanation(self) -> None:
        parts = [self.query_one("#title", TextPane).text]
        if self.cell is not None:  # the products, the sum and the value are in the side pane
            parts.append(self.query_one("#side", TextPane).text)
        parts.append(self.query_one("#explain", TextPane).text)
        width = self.query_one("#center").size.width or 80
        self.cnn.save_export(f"{self.export_name()}-explanation", "explanation",
                             text_svg(Text("\n\n").join(parts), width, self.cnn.trace.input_name))

    def action_values(self) -> None:
        self.show_values = not self.show_values
        self.set_class(self.show_values, "-values")
        table = self.query_one(DataTable)
        table.can_focus = self.show_values
        if self.show_values:
            self.fill_values()
            table.focus()
        else:
            self.set_focus(None)

    def action_scroll(self, pane: str, pages: int) -> None:
        widget = self.query_one(f"#{pane}")
        widget.scroll_relative(y=pages * max(1, widget.size.height - 2), animate=False)

    def action_channel(self, channel: int) -> None:
        if self.cell is not None and channel >= 0:  # the cursor moves to that channel
            step = self.step
            count = cell_view.channel_count(step)
            if channel >= count:
                self.notify(f"{step.name} has channels 0-{count - 1}" if count else
                            f"{step.name} has no channels", timeout=2)
                return
            self.cell = cell_view.with_channel(step, self.cell, channel)
            self.redraw()
            return
        if channel < 0 or channel == self.channel:
            self.channel = None
        else:
            count = self.view.channels if self.view else 0
            if not count:
                self.notify(f"{self.step.name} has no channels to enlarge", timeout=2)
                return
            if channel >= count:
                self.notify(f"{self.step.name} has channels 0-{count - 1}", timeout=2)
                return
            self.channel = channel
        self.redraw()
