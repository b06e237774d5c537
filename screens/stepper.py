"""The stepper: one digit's forward and backward pass, one step at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from cnntui.trace import Step, Trace
from screens import panes
from screens.colors import palette
from screens.views import View, build_view
from screens.widgets.footer import Footer
from screens.widgets.steps import StepBar, StepChosen, StepList
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane
from screens.widgets.too_small import TooSmall

if TYPE_CHECKING:
    from screens.app import CnnApp

PLAY_INTERVAL = 0.6  # seconds per step while playing
CHANNEL_KEYS = "0123456789"  # key k enlarges channel #k, as the maps are labelled
STEP_GROUP = Binding.Group("step", compact=True)
DIGIT_GROUP = Binding.Group("digit", compact=True)  # key k selects channel CHANNEL_KEYS.index(k)


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
        Binding("left,h,p", "step(-1)", "step", key_display="←", tooltip="Previous step",
                id="previous_step", group=STEP_GROUP),
        Binding("right,l,n", "step(1)", "step", key_display="→", tooltip="Next step",
                id="next_step", group=STEP_GROUP),
        Binding("home,g", "first", "First step", show=False, id="first_step"),
        Binding("end,G", "last", "Last step", show=False, id="last_step"),
        Binding("space", "play", "play", key_display="␣",
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
        Binding("escape", "channel(-1)", "All channels", show=False, id="all_channels"),
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
        self._timer = None

    @property
    def cnn(self) -> CnnApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield TextPane(id="header", wrap=False)
        yield StepBar(id="stepbar")
        with Horizontal(id="body"):
            yield StepList(id="steps")
            with Vertical(id="center"):
                yield TextPane(id="title", wrap=False)
                yield TensorView(id="map", mode=self.cnn.color_mode)
                with Vertical(id="values-box"):
                    yield DataTable(id="values", zebra_stripes=True)
                    yield Static(id="cell")
                yield TextPane(id="scale", wrap=False)
                yield TextPane(id="explain")
            yield TextPane(id="side")
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
        self.query_one(StepList).set_steps(names, marks)
        self.query_one(StepBar).set_steps(names, marks)
        self.redraw()

    def redraw(self) -> None:
        """Show the current step of the current trace."""
        trace, step = self.cnn.trace, self.step
        mode = self.cnn.color_mode
        self.view = view = build_view(step, trace, shared=self.shared, channel=self.channel,
                                      magnitude=self.magnitude, mode=mode)
        self.channel = view.selected
        self.query_one("#header", TextPane).set(
            panes.header(trace, step, self.cnn.weights_desc, self.playing, self.first_bad))
        self.query_one("#title", TextPane).set(panes.title(step, view))
        self.query_one(TensorView).show(view, mode)
        width = self.query_one("#center").size.width or 60
        self.query_one("#scale", TextPane).set(
            panes.scale_text(view, palette(mode, view.diverging), width))
        self.query_one("#explain", TextPane).set(panes.explain_text(step, view.legend))
        self.update_side()
        self.query_one(StepList).set_current(step.index)
        self.query_one(StepBar).set_current(step.index)
        if self.show_values:
            self.fill_values()

    def update_side(self) -> None:
        """Stats, the PyTorch comparison and (backward) gradient sizes, in one pane."""
        step, trace = self.step, self.cnn.trace
        side_w = (self.query_one("#side").size.width or 28) - 2
        verdict = None
        state = self.cnn.reference_state
        if state == "ready" and step.torch_value is not None:
            verdict = self.cnn.verdict(step)
        self.stats_text = panes.stats_text(step, side_w)
        self.torch_text = panes.torch_text(step, state, verdict)
        self.grad_text = panes.grad_text(step, trace, width=side_w)
        parts = [self.stats_text, self.torch_text]
        if self.grad_text is not None:
            parts.append(self.grad_text)
        self.query_one("#side", TextPane).set(Text("\n\n").join(parts))

    update_torch = update_side

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
        self.cnn.go_to(event.index)

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    # ---- actions ---------------------------------------------------------------------------

    def action_step(self, delta: int) -> None:
        self.cnn.go_to(self.cnn.step_index + delta)

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
