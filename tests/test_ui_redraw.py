"""What a step redraws (issue 11): only the lines that changed are repainted, each step's panes
are built once (the neighbouring steps while idle), and what is kept is what a fresh build
would show."""

from __future__ import annotations

import pytest
from pilot_helpers import make_app, pretrained_app, wait_for
from rich.text import Text
from textual.app import App, ComposeResult
from textual.screen import Screen

import screens.stepper as stepper
from cnntui.model import weights_from
from screens.stepper import StepperScreen
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane

PANES = ("#header", "#title", "#scale", "#explain", "#side")


class OnePane(App):
    def compose(self) -> ComposeResult:
        yield TextPane(id="pane")


async def test_a_text_pane_repaints_only_the_lines_that_changed():
    app = OnePane()
    async with app.run_test(size=(30, 12)) as pilot:
        pane = app.query_one(TextPane)
        lines = [f"line {i}" for i in range(8)]
        pane.set(Text("\n".join(lines)))
        await pilot.pause()
        assert not pane._styles_cache._dirty_lines  # painted
        lines[3] = "line three"
        pane.set(Text("\n".join(lines)))
        assert pane._styles_cache._dirty_lines == {3}
        await pilot.pause()
        pane.set(Text("\n".join(lines[:5])))  # shorter: the lines it no longer has are blanked
        assert pane._styles_cache._dirty_lines == {5, 6, 7}
        await pilot.pause()
        assert pane.render_line(6).text.strip() == ""


async def test_stepping_repaints_a_fraction_of_the_side_pane_and_the_maps(monkeypatch):
    app = pretrained_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        side, tv = app.screen.query_one("#side", TextPane), app.screen.query_one(TensorView)
        painted = {side: 0, tv: 0}  # lines the compositor asked for (it caches the others)
        for cls in (TextPane, TensorView):
            def counting(self, y, real=cls.render_line):  # noqa: ANN001, ANN202
                if self in painted:
                    painted[self] += 1
                return real(self, y)

            monkeypatch.setattr(cls, "render_line", counting)
        for _ in range(8):
            await pilot.press("right")
        # before: every line of both panes on every step (38 and 32 lines at 120x40)
        assert painted[side] < 8 * side.size.height / 2, painted[side]
        assert painted[tv] < 8 * tv.size.height * 3 / 4, painted[tv]


async def test_a_step_to_a_prefetched_neighbour_builds_nothing(monkeypatch):
    app = pretrained_app()
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        built: list[str] = []
        real = stepper.build_view

        def counting(step, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            built.append(step.name)
            return real(step, *a, **kw)

        monkeypatch.setattr(stepper, "build_view", counting)
        at_redraw: list[list[str]] = []
        redraw = StepperScreen.redraw

        def recorded(self):  # noqa: ANN001, ANN202
            built.clear()
            redraw(self)
            at_redraw.append(list(built))

        monkeypatch.setattr(StepperScreen, "redraw", recorded)
        for key in ("right", "right", "left", "left"):
            i = app.step_index
            await wait_for(pilot, lambda i=i: all(screen._has_shown(j) for j in (i - 1, i + 1)
                                                  if j >= 0))
            await pilot.press(key)
        assert at_redraw == [[], [], [], []]  # without prefetching: one build_view per step
        assert app.step_index == 0


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_what_is_kept_is_what_a_fresh_build_shows(size):
    app = make_app(weights_from("pretrained")[0], "pretrained", reference="sync", index=5)
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        tv = screen.query_one(TensorView)
        keys = ["right"] * 12 + ["s", "left", "left", "a", "right"] + ["right"] * 12 + \
            ["1", "left", "escape", "left"]
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
            kept = [screen.query_one(p, TextPane).plain for p in PANES], tv.cells
            screen._shown.clear()
            tv._built.clear()
            screen.redraw()
            await pilot.pause()
            fresh = [screen.query_one(p, TextPane).plain for p in PANES], tv.cells
            assert kept == fresh, (key, app.trace.steps[app.step_index].name)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_step_lays_the_screen_out_at_most_once(monkeypatch, size):
    """A layout pass re-arranges and repaints every pane: at 80x24 it doubled a step's time. At
    120x40 no step needs one. At 80x24 the explanation pane grows to a pooling step's legend and
    the side pane to its longest text, and then keep that size: a few passes on the way through
    the steps, none on the way back (before: 36 in a pass of 25, then about one a step)."""
    app = pretrained_app()
    counts: list[int] = []
    real = Screen._refresh_layout

    def counting(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        counts[-1] += 1
        return real(self, *a, **kw)

    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        monkeypatch.setattr(Screen, "_refresh_layout", counting)
        for key in ("right", "left"):
            for _ in range(len(app.trace.steps) - 1):
                counts.append(0)
                await pilot.press(key)
                await pilot.pause(0.05)
        n = len(app.trace.steps) - 1
        forward, back = counts[:n], counts[n:]
        if size == (120, 40):
            assert sum(counts) == 0, counts
        else:
            assert max(forward) <= 2 and sum(forward) <= 6, forward
            assert sum(back) == 0, back
