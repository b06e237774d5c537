"""NaN and Inf in the debugger (issue 7): finite weights that overflow must not crash any pane,
and every pane draws NaN/Inf as such and flags it loudly (lovely-tensors style, with counts).

Weights are saved with ``save_weights`` and loaded back as a user's ``--weights FILE`` would be:
W1 x 1e308 makes most of the network NaN or +-Inf; W1 x 1e307 overflows a single logit to -Inf
and leaves everything else finite; a planted NaN gives a map with a few NaN cells.
"""

from __future__ import annotations

import numpy as np
import pilot_helpers
import pytest
from textual.widgets import DataTable, Static

from cnntui import stats
from cnntui.model import save_weights, weights_from
from screens.app import CnnApp
from screens.colors import palette
from screens.picker import PickerScreen
from screens.stepper import StepperScreen
from screens.widgets.steps import StepBar, StepList
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane

SIZES = [(100, 30), (80, 24)]
NAN_GLYPH, POSINF_GLYPH, NEGINF_GLYPH = "?", "▲", "▼"  # how a heatmap draws them


def overflow_weights(tmp_path, factor: float) -> dict[str, np.ndarray]:
    params = weights_from("pretrained")[0]
    params["W1"] = params["W1"] * factor  # every entry still finite
    assert all(np.all(np.isfinite(v)) for v in params.values())
    path = save_weights(tmp_path / f"overflow-{factor:g}.npz", params)
    return weights_from(str(path))[0]


@pytest.fixture
def nan_weights(tmp_path):
    return overflow_weights(tmp_path, 1e308)


@pytest.fixture
def one_inf_weights(tmp_path):
    return overflow_weights(tmp_path, 1e307)


def make_app(params, **kw) -> CnnApp:
    return pilot_helpers.make_app(params, "overflow", **kw)


def pane(app: CnnApp, selector: str) -> str:
    return app.screen.query_one(selector, TextPane).plain


def map_text(app: CnnApp) -> str:
    return "\n".join(app.screen.query_one(TensorView).text_lines)


def step_list_lines(app: CnnApp) -> list[str]:
    steps = app.screen.query_one(StepList)
    return [steps.render_line(y).text for y in range(steps.size.height)]


def counts(step) -> tuple[int, int, int]:  # noqa: ANN001
    v = np.asarray(step.value, dtype=float)
    return int(np.isnan(v).sum()), int(np.isposinf(v).sum()), int(np.isneginf(v).sum())


def expected_flags(step) -> list[str]:  # noqa: ANN001
    nan, pos, neg = counts(step)
    return [f for f, n in ((f"NaN! x{nan}", nan), (f"+Inf! x{pos}", pos),
                           (f"-Inf! x{neg}", neg)) if n]


def check_step(app: CnnApp) -> None:
    """The current step's panes show its NaN/Inf, flagged with counts, or no flag at all."""
    step = app.trace.steps[app.step_index]
    flags = expected_flags(step)
    header, title, side = pane(app, "#header"), pane(app, "#title"), pane(app, "#side")
    scale, picture = pane(app, "#scale"), map_text(app)
    nan, pos, neg = counts(step)
    for flag in flags:
        assert flag in header, (step.name, flag, header)
        assert flag in title, (step.name, flag, title)
        assert f"!! {flag}" in side, (step.name, flag, side)
    if not flags:
        assert "NaN!" not in title and "Inf!" not in title
    assert f"nan {nan}" in side
    if pos or neg:
        assert f"+inf {pos}" in side and f"-inf {neg}" in side
    view = app.screen.view
    whole = "argmax" not in step.cache and view.selected is None  # the picture is the tensor
    if view.kind == "tiles" and whole and (flags or hasattr(view, "nonfinite")):
        assert view.nonfinite == (nan, pos, neg)
    if view.kind == "tiles" and (flags or hasattr(view, "nonfinite")):
        nan, pos, neg = view.nonfinite
        if nan:
            assert NAN_GLYPH in picture and "NaN!" in scale
        if pos:
            assert POSINF_GLYPH in picture and "+Inf!" in scale
        if neg:
            assert NEGINF_GLYPH in picture and "-Inf!" in scale
    elif view.kind == "bars":
        lines = picture.splitlines()
        for k, v in enumerate(np.asarray(step.value, dtype=float)):
            if np.isnan(v):
                assert "NaN!" in lines[k] and " nan" in lines[k] and "predicted" not in lines[k]
            elif np.isinf(v):
                assert ("+Inf!" if v > 0 else "-Inf!") in lines[k]
            else:
                assert "Inf!" not in lines[k] and "NaN!" not in lines[k]
    if view.kind == "tiles" and view.shared:  # the colour scale: finite values only
        assert np.isfinite(view.lo) and np.isfinite(view.hi)
    # the step list flags the current step, and only steps that hold NaN/Inf are flagged
    if app.screen.query_one(StepList).size.height:
        current = next(line for line in step_list_lines(app) if line.startswith("▶"))
        assert current.rstrip().endswith(("NaN", "Inf")) == bool(flags), current
        assert current.endswith(" ")  # a blank column before the maps
    else:  # narrow: the one-line step bar, a flagged step's name followed by "!"
        bar = app.screen.query_one(StepBar)
        assert bar.size.height
        line = bar.render_line(0).text
        assert (f" {step.name}! " in f" {line} ") == bool(flags), line


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_step_of_an_overflowing_network_draws_and_flags_nan_inf(nan_weights, size):
    app = make_app(nan_weights)
    async with app.run_test(size=size) as pilot:
        steps = app.trace.steps
        assert any(counts(s)[0] for s in steps) and any(counts(s)[1] for s in steps) \
            and any(counts(s)[2] for s in steps)  # the weights do make NaN, +Inf and -Inf
        for i in range(len(steps)):
            assert app.step_index == i
            check_step(app)
            await pilot.press("right")
        assert app.screen.at_update  # the SGD step after dx
        await pilot.press("left")
        for i in range(len(steps) - 1, -1, -1):
            assert app.step_index == i
            check_step(app)
            await pilot.press("left")
        assert isinstance(app.screen, StepperScreen)
        # the header names the first step that went wrong, on steps that are fine themselves
        app.go_to(0)
        await pilot.pause()
        first = next(s for s in steps if any(counts(s)))
        assert f"NaN/Inf from {first.name}" in pane(app, "#header")
        assert "no prediction: probs NaN!" in pane(app, "#header") or size[0] < 100


async def test_panes_and_views_of_nan_steps(nan_weights):
    """The other views of a NaN step: values table, enlarged channel, per-channel scale, |grad|,
    no-colour mode, the PyTorch pane and the picker."""
    app = make_app(nan_weights, reference="sync", color="none")
    async with app.run_test(size=SIZES[0]) as pilot:
        app.go_to(app.trace.position("z2"))
        await pilot.press("1")  # channel 1 large
        check_step(app)
        assert NAN_GLYPH in map_text(app)
        await pilot.press("escape", "s")  # one colour scale per channel
        assert NAN_GLYPH in map_text(app)
        await pilot.press("s", "v")
        table = app.screen.query_one(DataTable)
        cells = [str(table.get_cell_at((r, c))) for r in range(table.row_count)
                 for c in range(len(table.columns))]
        z2 = app.trace["z2"].value[0]
        assert sum(c.strip() == "nan" for c in cells) == int(np.isnan(z2).sum())
        assert sum(c.strip() == "-inf" for c in cells) == int(np.isneginf(z2).sum())
        cell = str(app.screen.query_one("#cell", Static).render())
        assert "z2[0][0,0] = " in cell
        await pilot.press("v")
        torch = app.screen.torch_text.plain
        assert "torch NaN! x" in torch  # PyTorch's value overflows too
        assert "NaN/Inf: no number to compare there" in torch
        # backward, |grad| on a log scale: NaN stays NaN
        app.go_to(app.trace.position("dz2"))
        await pilot.press("a")
        check_step(app)
        assert NAN_GLYPH in map_text(app)
        await pilot.press("d")
        assert isinstance(app.screen, PickerScreen)
        await pilot.pause()
        status = str(app.screen.query_one("#picker-status", Static).render())
        assert "NaN!" in status
        assert "NaN! probabilities for" in str(app.screen.query_one("#picker-filter",
                                                                    Static).render())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_one_logit_overflowing_is_flagged_only_where_it_is(one_inf_weights, size):
    app = make_app(one_inf_weights)
    async with app.run_test(size=size) as pilot:
        bad = [s.name for s in app.trace.steps if any(counts(s))]
        assert bad == ["logits"] and counts(app.trace["logits"]) == (0, 0, 1)
        for _ in range(len(app.trace.steps)):
            check_step(app)
            await pilot.press("right")
        app.go_to(app.trace.position("logits"))
        await pilot.pause()
        assert "-Inf! x1" in pane(app, "#header")
        assert "of the 9 finite values" in pane(app, "#side")
        assert "NaN!" not in pane(app, "#side")
        app.go_to(app.trace.position("probs"))
        await pilot.pause()
        assert "NaN/Inf from logits" in pane(app, "#header")
        assert "Inf!" not in pane(app, "#title")
        if app.screen.query_one(StepList).size.height:
            flagged = [line for line in step_list_lines(app) if line.rstrip().endswith("Inf")]
            assert len(flagged) == 1 and "logits" in flagged[0]
        else:
            bar = app.screen.query_one(StepBar).render_line(0).text
            assert bar.count("!") == 1 and "logits!" in bar


@pytest.mark.parametrize("mode", ["truecolor", "none"])
async def test_a_map_with_a_few_nan_cells(mode):
    """A few planted NaN/Inf cells are drawn as their glyphs, the other cells on a colour scale
    taken from the finite values only, and counted in the legend."""
    app = make_app(weights_from("pretrained")[0], color=mode)
    async with app.run_test(size=SIZES[0]) as pilot:
        step = app.trace["z1"]
        finite = step.value.copy()
        step.value = step.value.copy()
        step.value[0, 0, 0] = np.nan
        step.value[0, 4, 4] = np.inf
        step.value[1, 5, 5] = -np.inf
        app.screen.new_trace()
        app.go_to(app.trace.position("z1"))
        await pilot.pause()
        check_step(app)
        view = app.screen.view
        m = float(np.max(np.abs(np.delete(finite.ravel(), [0, 4 * 28 + 4, 784 + 5 * 28 + 5]))))
        assert view.hi == pytest.approx(m) and view.lo == pytest.approx(-m)
        picture = map_text(app)
        # scale 1: one NaN, one +Inf, one -Inf cell, and the rest of the map is drawn as usual
        assert picture.count(NAN_GLYPH) == 1
        assert picture.count(POSINF_GLYPH) == 1 and picture.count(NEGINF_GLYPH) == 1
        scale = pane(app, "#scale")
        assert "NaN!" in scale and "+Inf!" in scale and "-Inf!" in scale
        assert "NaN! x1" in pane(app, "#title") and "+Inf! x1" in pane(app, "#title")
        if mode == "truecolor":  # on a colour of their own, none of the colour map's
            ramp = set(palette(mode, True).colors)
            glyphs = {NAN_GLYPH, POSINF_GLYPH, NEGINF_GLYPH}
            special = {style.bgcolor for line in app.screen.query_one(TensorView).cells
                       for text, style in line if text.strip() and set(text) <= glyphs}
            assert len(special) == 3 and not special & ramp


def test_stats_of_huge_and_nonfinite_values():
    a = np.array([1e308, -1e308, 1.7e308, np.nan, np.inf, -np.inf, -np.inf, 0.0])
    s = stats.summarize(a)  # used to raise: "Too many bins for data range"
    assert (s.min, s.max) == (-1e308, 1.7e308)
    assert (s.nan, s.posinf, s.neginf, s.inf, s.finite) == (1, 1, 2, 3, 4)
    assert np.isfinite(s.mean) and np.isfinite(s.std) and sum(s.histogram) == 4
    assert s.flags() == ["NaN! x1", "+Inf! x1", "-Inf! x2"]
    assert stats.summarize(np.full(4, np.nan)).flags() == ["NaN! x4"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    ref = np.histogram(x, bins=stats.HIST_BINS, range=(x.min(), x.max()))[0]
    assert np.abs(np.array(stats.summarize(x).histogram) - ref).sum() <= 2  # edge rounding
    assert stats.norm(np.array([1e300, 1e300])) == pytest.approx(np.sqrt(2) * 1e300)
    norms = stats.channel_norms(np.array([[3.0, 4.0], [np.nan, 1.0], [np.inf, 1.0]]))
    assert norms[0] == 5.0 and np.isnan(norms[1]) and np.isinf(norms[2])


async def test_training_screen_flags_nan_losses_and_weights():
    """The training screen: a NaN/Inf batch loss is flagged above the sparkline, NaN gradient
    norms are red, and conv filters holding NaN/Inf are drawn with their glyphs and flagged."""
    from cnntui.training import BatchEnd
    from screens import training_panes as tp
    from screens.training import TrainingScreen

    app = make_app(weights_from("pretrained")[0])
    async with app.run_test(size=SIZES[0]) as pilot:
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        norms = {k: 1.0 for k in ("W1", "b1", "W2", "b2", "W3", "b3")}
        events = [BatchEnd(1, 2, b + 1, 5, b + 1, loss, 0.01, "adam", 1000.0,
                           dict(norms, W1=np.nan) if b == 2 else norms)
                  for b, loss in enumerate([2.3, 2.1, np.nan])]
        screen.replay(events)
        await pilot.pause()
        loss = pane(app, "#t-loss-title")
        assert "NaN/Inf! x1" in loss and "now nan" in loss
        assert "min 2.1000" in loss  # the minimum of the finite losses
        assert "W1 nan" in pane(app, "#t-grads")
        w = weights_from("pretrained")[0]["W2"].copy()
        w[0, 1, 0, 0], w[3, 0, 2, 2] = np.nan, -np.inf
        view = tp.filters_view(w, "W2")
        assert view.hi == pytest.approx(np.max(np.abs(w[np.isfinite(w)])))  # finite only
        title = tp.filters_title("conv2", "W2", view, 4).plain
        assert "NaN! x1" in title and "-Inf! x1" in title
        tv = screen.query_one("#t-w2", TensorView)
        tv.show(view, "truecolor")
        picture = "\n".join(tv.text_lines)
        assert picture.count(NAN_GLYPH) == 1 and picture.count(NEGINF_GLYPH) == 1
