"""The debugger on every architecture: Pilot walks through every step, the PyTorch pane, the
palette's architecture switch, the summary screen and the training screen's panes."""

from __future__ import annotations

import pytest
from pilot_helpers import wait_for

from cnntui import model
from screens.app import CnnApp
from screens.panes import PHASE_SHORT
from screens.summary import SummaryScreen
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane

ARCHS = list(model.ARCHITECTURES.values())


def open_app(arch: model.Architecture, **kw) -> CnnApp:
    params, desc = model.weights_from("pretrained", arch)
    kw.setdefault("reference", "sync")
    return CnnApp(params, desc, color="truecolor", predictions="off", arch=arch, **kw)


@pytest.mark.parametrize("size", [(100, 32), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
async def test_every_step_of_every_architecture(arch, size):
    app = open_app(arch)
    async with app.run_test(size=size) as pilot:
        n = len(app.trace.steps)
        assert app.trace.arch is arch
        for i, step in enumerate(app.trace.steps):
            header = app.screen.query_one("#header", TextPane).plain
            assert f"step {i + 1}/{n} {PHASE_SHORT[step.phase]}" in header
            assert app.screen.query_one("#title", TextPane).plain.startswith(step.layer)
            assert step.torch_ok, (step.name, step.torch_note)
            side = app.screen.query_one("#side", TextPane).plain
            assert "agrees with" in side and "DISAGREES" not in side
            explain = app.screen.query_one("#explain", TextPane).plain
            assert step.formula.split("=")[0].strip() in explain
            await pilot.press("right")
        assert app.step_index == n - 1
        for _ in range(n):
            await pilot.press("left")
        assert app.step_index == 0


async def test_a_header_names_the_architecture_and_the_palette_switches_it():
    app = open_app(model.SIMPLE_CNN, reference="off")
    async with app.run_test(size=(100, 32)) as pilot:
        assert " simple " in app.screen.query_one("#header", TextPane).plain
        app.go_to(app.trace.position("dx"))
        app.switch_arch("separable")
        await pilot.pause()
        assert app.arch is model.SEPARABLE_CNN and len(app.trace.steps) == 29
        assert app.trace.steps[app.step_index].name == "dx"  # the last step stays the last
        assert app.weights_desc == "pretrained"
        assert " separable " in app.screen.query_one("#header", TextPane).plain
        app.go_to(app.trace.position("z2d"))
        await pilot.pause()
        explain = app.screen.query_one("#explain", TextPane).plain
        assert "W2d[c,0]" in explain and "conv2d(p1[c], W2d[c, 0]" in explain
        from screens.commands import CnnCommands

        names = [c[0] for c in CnnCommands(app.screen)._commands()]
        assert any(n.startswith("Architecture: simple") for n in names)
        assert not any(n.startswith("Architecture: separable") for n in names)


async def test_the_summary_screen_shows_every_architecture():
    app = open_app(model.STRIDED_CNN, reference="off")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("i")
        assert isinstance(app.screen, SummaryScreen)
        tables = [str(s.render()) for s in app.screen.query(".summary-table")]
        assert len(tables) == 3
        await pilot.press("escape")
        assert not isinstance(app.screen, SummaryScreen)


async def test_training_screen_shows_every_conv_layers_filters_for_separable():
    arch = model.SEPARABLE_CNN
    from cnntui.data import load_digits
    from cnntui.training import TrainConfig, Trainer

    digits = load_digits()
    app = open_app(arch, reference="off", trainer_factory=lambda params: Trainer(
        TrainConfig(epochs=1), params=params, data=digits, arch=arch,
        train_idx=digits.train_idx[:128]))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("t")
        screen = app.screen
        for weight in ("w1", "w2d", "w2p"):
            assert screen.query_one(f"#t-{weight}", TensorView).text_lines
            assert weight.upper().replace("D", "d").replace("P", "p") in screen.query_one(
                f"#t-{weight}-title", TextPane).plain
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        await pilot.pause(0.3)
        grads = screen.query_one("#t-grads", TextPane).plain
        for name in ("W1", "W2d", "b2d", "W2p", "b2p", "W3"):
            assert name in grads
