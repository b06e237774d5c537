"""Pilot tests of the training screen (issue 4): start, the sparkline receives data, pause,
resume, stop, the controls, saving, divergence, quitting mid-run, and back to the stepper with
the trained weights. A tiny configuration (a few hundred digits) keeps them fast."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import numpy as np
import pytest
from pilot_helpers import wait_for
from textual import events
from textual.widgets import ContentSwitcher, Input, OptionList, Sparkline

from cnntui.data import load_digits
from cnntui.model import SIMPLE_CNN, load_weights, weights_from
from cnntui.training import TrainConfig
from cnntui.training.process import TrainerProcess
from screens import panes
from screens.app import CnnApp
from screens.help import HelpScreen, help_rows
from screens.stepper import StepperScreen
from screens.training import SaveWeightsScreen, TrainingScreen
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane
from screens.widgets.too_small import TooSmall

SIZE = (100, 30)
TINY = TrainConfig(epochs=2, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def pretrained():
    return weights_from("pretrained")[0]


def factory(config: TrainConfig = TINY, n_train: int = 256, n_test: int = 120):
    digits = load_digits()

    def make(params=None) -> TrainerProcess:  # noqa: ANN001 - the app's default kind
        return TrainerProcess(config, params=params, data=digits,
                       train_idx=digits.train_idx[:n_train], test_idx=digits.test_idx[:n_test])

    return make


def make_app(params, config: TrainConfig = TINY, **kw) -> CnnApp:
    kw.setdefault("reference", "off")
    kw.setdefault("predictions", "sync")
    kw.setdefault("color", "truecolor")
    n_train = kw.pop("n_train", 256)
    return CnnApp(params, "pretrained", trainer_factory=factory(config, n_train), **kw)


def pane(screen, selector: str) -> str:
    return screen.query_one(selector, TextPane).plain


async def open_training(pilot) -> TrainingScreen:
    await pilot.press("t")
    screen = pilot.app.screen
    assert isinstance(screen, TrainingScreen)
    return screen


async def test_t_opens_the_screen_and_space_trains_with_a_live_sparkline(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        assert "ready" in pane(screen, "#t-header")
        assert not screen.query_one(Sparkline).data
        await pilot.press("space")
        assert screen.state in ("running", "finished")  # a tiny run may be over already
        await wait_for(pilot, lambda: len(screen.query_one(Sparkline).data or []) >= 3)
        title = pane(screen, "#t-loss-title")
        assert "now " in title and "min " in title
        # the sparkline shows the batch losses the trainer reported (log scale)
        losses = screen.feed.losses
        data = screen.query_one(Sparkline).data
        assert np.allclose(data[:3], np.log10(losses[:3]))
        assert "gradient L2 norms" in pane(screen, "#t-grads")
        assert "W2" in pane(screen, "#t-grads")
        await wait_for(pilot, lambda: screen.state == "finished")
        epochs = pane(screen, "#t-epochs")
        assert "  1 " in epochs and "  2 " in epochs and "%" in epochs
        # results: test accuracy, confusion matrix, misclassified list
        assert screen.query_one(ContentSwitcher).current == "t-results"
        ev = screen.trainer.last_evaluation
        assert f"{ev.accuracy:.2%}" in pane(screen, "#t-result-line")
        confusion = pane(screen, "#t-confusion").splitlines()
        assert len(confusion) == 11 and confusion[0].split()[1:] == [str(i) for i in range(10)]
        for row, line in zip(ev.confusion, confusion[1:], strict=True):
            assert [int(x) if x != "·" else 0 for x in line.split()[1:]] == list(row)
        assert screen.query_one(OptionList).option_count == len(ev.misclassified)


async def test_pause_resume_and_stop(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 2)
        await pilot.press("space")
        assert screen.state == "paused" and "paused" in pane(screen, "#t-header")
        assert screen.trainer.paused
        await pilot.pause(0.2)  # the batch in flight finishes
        n = len(screen.feed.losses)
        await pilot.pause(0.3)
        assert len(screen.feed.losses) == n  # nothing trains while paused
        await pilot.press("space")
        assert screen.state == "running"
        await wait_for(pilot, lambda: len(screen.feed.losses) > n + 2)
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.state == "cancelled")
        assert not screen.trainer.running and not screen.active
        assert "stopped" in pane(screen, "#t-header")
        assert screen.evaluation is not None  # the weights so far, scored


async def test_stop_while_paused_stops_at_once(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 1)
        await pilot.press("space", "x")
        await wait_for(pilot, lambda: screen.state == "cancelled", timeout=5)


async def test_escape_returns_to_the_stepper_with_the_trained_weights(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=SIZE) as pilot:
        before = {s.name: s.value.copy() for s in app.trace.steps}
        assert "weights: pretrained" in app.stepper.query_one("#header", TextPane).plain
        app.go_to(app.trace.position("z1"))
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        acc = screen.trainer.last_evaluation.accuracy
        await pilot.press("escape")
        assert isinstance(app.screen, StepperScreen)
        header = app.stepper.query_one("#header", TextPane).plain
        assert f"weights: trained (epoch 2, {acc:.1%} test)" in header
        assert app.trace.steps[app.step_index].name == "z1"  # same step, new weights
        trained = screen.trainer.params("float64")
        for k, v in trained.items():
            np.testing.assert_array_equal(app.params[k], v)
        for name in ("z1", "a2", "logits", "dW1"):
            after = app.trace.steps[app.trace.position(name)].value
            assert not np.allclose(after, before[name]), name
        # the weights are those of the trace
        np.testing.assert_array_equal(app.trace.steps[app.trace.position("z1")].params["W1"],
                                      trained["W1"])
        # t again: the same trainer, history and results
        await pilot.press("t")
        assert app.screen is screen and screen.state == "finished"
        await pilot.press("escape")
        assert f"epoch 2, {acc:.1%} test" in app.stepper.query_one("#header", TextPane).plain


async def test_escape_mid_run_stops_the_run_and_hands_over_its_weights(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 3)
        await pilot.press("escape")
        assert isinstance(app.screen, StepperScreen)
        assert not screen.trainer.running and screen.state == "cancelled"
        header = app.stepper.query_one("#header", TextPane).plain
        # stopped in the first epoch or a later one, as the run got there
        assert re.search(r"weights: trained \((epoch \d+ \+ )?\d+ batch(es)?, [\d.]+% test\)",
                         header) or re.search(r"weights: trained \(epoch \d+, [\d.]+% test\)",
                                              header), header
        for k, v in screen.trainer.params("float64").items():
            np.testing.assert_array_equal(app.params[k], v)


async def test_escape_without_training_keeps_the_stepper_weights(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=SIZE) as pilot:
        await open_training(pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, StepperScreen)
        assert app.weights_desc == "pretrained"
        assert app.params is pretrained


async def test_enter_on_a_misclassified_digit_opens_it_in_the_stepper(pretrained):
    # one epoch on few digits: plenty of mistakes
    app = make_app(pretrained, replace(TINY, epochs=1), n_train=96)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        wrong = screen.trainer.last_evaluation.misclassified
        assert len(wrong) >= 2
        assert app.focused is screen.query_one(OptionList)
        await pilot.press("down", "enter")
        assert isinstance(app.screen, StepperScreen)
        assert app.index == wrong[1]
        assert app.weights_desc.startswith("trained (epoch 1, ")
        assert f"digit #{wrong[1]}" in app.stepper.query_one("#header", TextPane).plain


async def test_learning_rate_optimiser_and_reset_keys(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        trainer = screen.trainer
        lr = trainer.lr
        await pilot.press("plus")
        assert trainer.lr == pytest.approx(2 * lr)
        assert "lr 0.02" in pane(screen, "#t-header")
        await pilot.press("minus", "minus")
        assert trainer.lr == pytest.approx(lr / 2)
        assert trainer.config.optimizer == "adam"
        await pilot.press("o")
        assert trainer.config.optimizer == "sgd" and "sgd" in pane(screen, "#t-header")
        await pilot.press("o")
        assert trainer.config.optimizer == "adam"
        # while running: the next batches use the new rate, and the key redraws the header
        # alone (a full draw took 15-25 ms, and a key 55-60 ms to show in tmux)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 2)
        draws = []
        screen.draw = lambda *a, **kw: draws.append(a)  # the frames, from here on, not drawn
        await pilot.press("plus")
        assert trainer.lr == pytest.approx(lr) and not draws
        assert f"lr {panes.num(lr)}" in pane(screen, "#t-header")
        del screen.draw
        step = screen.feed.batch.step
        await wait_for(pilot, lambda: screen.feed.batch.step > step + 1)
        b = screen.feed.batch
        assert b.lr == pytest.approx(lr * trainer.config.lr_factor(
            (b.step - 1) / (b.epochs * b.batches)))
        # reset during the run: seed weights, the run restarts at epoch 1
        await pilot.press("r")
        seed = SIMPLE_CNN.init_params()
        await wait_for(pilot, lambda: screen.feed.resets == 1)
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.active)
        await pilot.press("r")
        assert screen.state == "ready" and not screen.feed.losses
        for k, v in trainer.params("float64").items():
            np.testing.assert_array_equal(v, seed[k])
        await pilot.press("escape")
        assert app.weights_desc == "seed"


async def test_w_saves_the_weights_to_a_typed_path(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(pretrained, replace(TINY, epochs=1))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        await pilot.press("w")
        assert isinstance(app.screen, SaveWeightsScreen)
        field = app.screen.query_one(Input)
        assert field.value == "cnntui-weights.npz"
        await pilot.press("enter")  # the default, in the working directory
        assert app.screen is screen
        params, meta = load_weights(tmp_path / "cnntui-weights.npz")
        for k, v in screen.trainer.params("float64").items():
            np.testing.assert_array_equal(params[k], v)
        assert meta["epoch"] == 1
        # a typed path
        await pilot.press("w")
        field = app.screen.query_one(Input)
        field.value = ""
        (tmp_path / "sub").mkdir()  # a missing folder is refused (tests/test_fixes_issue9.py)
        await pilot.press(*"sub/mine.npz", "enter")
        assert (tmp_path / "sub" / "mine.npz").is_file()
        # Esc cancels
        await pilot.press("w", "escape")
        assert app.screen is screen
        # an unwritable path: one sentence, no traceback, the screen goes on
        (tmp_path / "afile").write_text("x")
        await pilot.press("w")
        app.screen.query_one(Input).value = str(tmp_path / "afile" / "w.npz")
        await pilot.press("enter")
        await pilot.pause()
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and errors[-1].message.startswith("could not save the weights to ")
        assert "\n" not in errors[-1].message
        assert app.screen is screen and app.is_running


async def test_divergence_shows_the_trainers_message_and_keeps_good_weights(pretrained):
    app = make_app(pretrained, replace(TINY, lr=0.01, optimizer="sgd", epochs=20))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        for _ in range(12):  # lr 0.01 * 2**12 = 41
            await pilot.press("plus")
        await pilot.press("space")
        await wait_for(pilot, lambda: not screen.active)
        assert screen.state == "diverged"
        message = screen.result.message
        assert "diverged" in message and "kept the last good weights" in message
        assert any(n.message == message and n.severity == "error" for n in app._notifications)
        assert "diverged" in pane(screen, "#t-header")
        params = screen.trainer.params()
        assert all(np.isfinite(v).all() for v in params.values())
        await pilot.press("escape")
        assert all(np.isfinite(v).all() for v in app.params.values())
        assert app.trace.probs is not None and np.isfinite(app.trace.probs).all()


async def test_quitting_mid_run_stops_the_trainer(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=1000))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 2)
        trainer = screen.trainer
        await pilot.press("q")
    t0 = time.perf_counter()
    while trainer.running and time.perf_counter() - t0 < 5:
        time.sleep(0.01)
    assert not trainer.running
    assert app.return_code in (None, 0)


async def test_keys_answer_while_the_run_goes_on(pretrained):
    """Keys are handled during a run, not after it (their latency is in the benchmark)."""
    app = make_app(pretrained, replace(TINY, epochs=2000))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 2)
        lr = screen.trainer.lr
        for key, char, done in (
                ("plus", "+", lambda: screen.trainer.lr == 2 * lr),
                ("question_mark", "?", lambda: isinstance(app.screen, HelpScreen)),
                ("escape", None, lambda: app.screen is screen),
                ("o", "o", lambda: screen.trainer.config.optimizer == "sgd"),
                ("space", " ", lambda: screen.state == "paused")):
            n = len(screen.feed.losses)
            app.post_message(events.Key(key, char))  # as the terminal would, no Pilot waits
            await wait_for(pilot, done, timeout=10)
            assert screen.trainer.running, key
            if key != "space":
                assert len(screen.feed.losses) - n < 2000  # the run did not end meanwhile
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.active)


async def test_the_screen_redraws_at_most_20_times_a_second(pretrained, monkeypatch):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        draws = []
        original = screen.draw
        monkeypatch.setattr(screen, "draw", lambda full=True: (
            draws.append(time.perf_counter()), original(full)))
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.feed.losses) >= 2)
        draws.clear()
        n0 = len(screen.feed.losses)
        t0 = time.perf_counter()
        # not pilot.pause: its waiting would use the UI's frame budget
        while len(draws) < 5 and time.perf_counter() - t0 < 30:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        batches = len(screen.feed.losses) - n0
        assert draws, "no frame drawn while training"
        assert len(draws) <= 20 * elapsed + 1  # at most 20 frames a second
        assert batches > len(draws)  # several batches per frame: updates replace each other
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.active)


async def test_layout_at_80x24_keeps_every_pane_visible(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        for sel in ("#t-header", "#t-loss-title", "#t-spark", "#t-epochs", "#t-epoch-bar",
                    "#t-batch-bar", "#t-result-line", "#t-confusion", "#t-wrong"):
            region = screen.query_one(sel).region
            assert region.width > 0 and region.height > 0, sel
        assert screen.query_one("#t-confusion").size.height >= 11
        await pilot.press("v")
        await pilot.pause()
        for sel in ("#t-w1", "#t-w2", "#t-grads"):
            region = screen.query_one(sel).region
            assert region.width > 0 and region.height > 0, sel
        w2 = screen.query_one("#t-w2", TensorView)
        assert len(w2.text_lines) <= w2.size.height  # all 8 conv2 filters, no scrolling
        assert len(w2.text_lines[0].split()) == 8


async def test_tiny_terminal_shows_the_message(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_training(pilot)
        await pilot.resize_terminal(50, 15)
        await pilot.pause()
        small = screen.query_one(TooSmall)
        assert small.region.width > 0
        assert not screen.query_one("#t-top").region.width
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        assert screen.query_one("#t-top").region.width > 0


@pytest.mark.parametrize("mode", ["truecolor", "256", "16", "none"])
async def test_every_colour_mode_renders_the_training_screen(pretrained, mode):
    app = make_app(pretrained, replace(TINY, epochs=1), color=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_training(pilot)
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.state == "finished")
        assert pane(screen, "#t-confusion")
        await pilot.press("v")
        await pilot.pause()
        assert screen.query_one("#t-w2", TensorView).text_lines


async def test_palette_runs_training_actions(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"open the training screen")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        lr = screen.trainer.lr
        await pilot.press("ctrl+p")
        await pilot.press(*"double the learning")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert screen.trainer.lr == pytest.approx(2 * lr)
        await pilot.press("ctrl+p")
        await pilot.press(*"back to the stepper")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, StepperScreen)


async def test_help_lists_the_training_keys(pretrained):
    app = make_app(pretrained)
    async with app.run_test(size=SIZE) as pilot:
        await open_training(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        sections = dict(app.screen.sections)
        ids = {b.id for b in sections["Training (t)"]}
        assert {"train_run_pause", "train_stop", "train_lr_up", "train_lr_down",
                "train_optimizer", "train_save", "train_reset", "train_back"} <= ids
        assert "train" in {b.id for b in sections["Everywhere"]}


async def test_f_trains_from_the_stepper_weights(pretrained):
    app = make_app(pretrained, replace(TINY, epochs=1))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        seed = SIMPLE_CNN.init_params()
        np.testing.assert_array_equal(screen.trainer.params("float64")["W1"], seed["W1"])
        await pilot.press("plus", "o", "f")
        assert "from the stepper's weights (pretrained)" in pane(screen, "#t-header")
        trainer = screen.trainer
        assert trainer.lr == pytest.approx(2 * TINY.lr) and trainer.config.optimizer == "sgd"
        for k, v in trainer.params("float64").items():
            np.testing.assert_array_equal(v, pretrained[k])
        await pilot.press("escape")  # nothing trained yet: the stepper keeps its weights
        assert app.weights_desc == "pretrained"
        await pilot.press("t", "space")
        await wait_for(pilot, lambda: screen.state == "finished")
        assert screen.feed.losses[0] < 0.5  # pretrained: far below ln 10
        await pilot.press("r")
        for k, v in trainer.params("float64").items():
            np.testing.assert_array_equal(v, seed[k])


def test_every_training_binding_has_an_id_and_a_footer_entry_or_help_line():
    for cls in (TrainingScreen, SaveWeightsScreen):
        for b in cls.BINDINGS:
            assert b.id, f"{cls.__name__} binding {b.key} has no id"
            assert b.show or help_rows([b]), b
    ids = [b.id for cls in (CnnApp, StepperScreen, TrainingScreen) for b in cls.BINDINGS]
    assert len(ids) == len(set(ids))
    assert "train" in ids


async def test_the_training_screen_draws_nothing_while_nothing_happens(pretrained, monkeypatch):
    """Idle CPU: before and after a run, the open training screen repaints nothing (Textual's
    progress bars refreshed themselves every second, 0.4% of a core)."""
    from textual.screen import Screen

    app = make_app(pretrained, replace(TINY, epochs=200))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_training(pilot)
        paints = []
        real = Screen._compositor_refresh
        monkeypatch.setattr(Screen, "_compositor_refresh",
                            lambda self: (paints.append(self), real(self))[1])
        for run in (False, True):
            if run:
                await pilot.press("space")  # a run stopped half way has an ETA that ticks
                await wait_for(pilot, lambda: len(screen.feed.losses) >= 3)
                await pilot.press("x")
                await wait_for(pilot, lambda: screen.state == "cancelled")
                app.clear_notifications()
                await pilot.pause(0.5)
            paints.clear()
            await pilot.pause(2.5)
            when = "after" if run else "before"
            assert not paints, f"{len(paints)} repaints in 2.5 s idle, {when} a run"
