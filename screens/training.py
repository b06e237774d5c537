"""The training screen: train SimpleCNN live, watch it learn, and hand the weights to the stepper.

The trainer (``cnntui.training.process.TrainerProcess`` by default: the trainer in a child
process, so training and the UI don't share a GIL) runs from a thread worker, which mostly waits
for the child's events. They land in a ``Feed``
(appends and attribute swaps only); a 20 Hz timer on the UI side draws the latest state when
something changed, so however fast the batches come the screen updates at most 20 times a
second and the keys stay responsive. The controls (pause, stop, learning rate, optimiser,
reset) are the trainer's own methods, safe from the UI thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    ContentSwitcher,
    Input,
    OptionList,
    ProgressBar,
    Sparkline,
    Static,
)
from textual.widgets.option_list import Option
from textual.worker import Worker

from cnntui.model import WeightsError, npz_path
from cnntui.training import BatchEnd, ConfigError, EpochEnd, Reset, RunEnd, Trainer
from cnntui.training.process import TrainerProcess
from screens import training_panes as tp
from screens.colors import palette
from screens.widgets.footer import Footer
from screens.widgets.tensor_view import TensorView
from screens.widgets.text_pane import TextPane
from screens.widgets.too_small import TooSmall

if TYPE_CHECKING:
    from screens.app import CnnApp

POLL_INTERVAL = 1 / 20  # the screen redraws at most this often while training
# While a run goes on, the UI thread (drawing, layout, painting) may use at most this share of
# one core; a frame that would exceed it waits. The trainer's Python code needs the same GIL, so
# this is what keeps training throughput near the headless trainer's on a slow machine, where
# the screen then updates a few times a second instead of 20.
UI_SHARE = 0.10
SLOW_INTERVAL = 0.5  # seconds between redraws of the filters and gradient norms while training
DEFAULT_SAVE_PATH = "cnntui-weights.npz"
LR_GROUP = Binding.Group("lr", compact=True)
# makes the screen's trainer: from the seed initialisation (None) or from the given weights
TrainerFactory = Callable[[dict[str, np.ndarray] | None], Trainer | TrainerProcess]


class Progress(ProgressBar):
    """A ProgressBar without Textual's once-a-second refresh (for its ETA, which these bars do
    not show): the screen updates them with each frame. That refresh was the training screen's
    idle CPU (0.4% of a core)."""

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # not ProgressBar.on_mount's interval
        self.update()


def loss_summary(values: list[float]) -> float:
    """One sparkline bar: the mean (log) loss of the batches it covers."""
    return sum(values) / len(values)


class SaveWeightsScreen(ModalScreen[str | None]):
    """Asks for the path to save the weights to; Enter saves, Esc cancels.

    A folder alone (``/tmp``) saves the default file name inside it; a folder that does not
    exist is refused, with a notification naming it, and the dialog stays open: nothing is
    created but the file."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="save_cancel")]
    DEFAULT_CSS = """
    SaveWeightsScreen { align: center middle; }
    SaveWeightsScreen > Vertical { width: 64; max-width: 100%; height: auto;
                                   border: round $accent; background: $surface; padding: 0 1; }
    SaveWeightsScreen Static { height: auto; }
    """

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = self.dialog_title
            v.border_subtitle = f"Enter {self.verb} · Esc cancel"
            yield Static(Text(self.note, style="dim"))
            yield Input(value=self.default, placeholder=self.default, id="save-path",
                        select_on_focus=False)
        yield TooSmall()

    dialog_title = "save the weights"
    verb = "save"

    @property
    def note(self) -> str:
        return (f"a .npz checkpoint with the test accuracy and the settings; relative paths are "
                f"from {Path.cwd()}; a folder alone gets {self.file_name} in it")

    def with_suffix(self, path: Path) -> Path:
        """The file a typed name saves to (a .npz checkpoint here)."""
        return npz_path(path)

    @property
    def file_name(self) -> str:
        """The file name a folder alone gets: the default's."""
        return Path(self.default).name or DEFAULT_SAVE_PATH

    def target(self, text: str) -> Path:
        """The file ``text`` saves to; ValueError (one sentence) if it cannot be one."""
        typed = text.strip() or self.default
        path = Path(typed).expanduser()
        if path.is_dir():
            path = path / self.file_name
        elif typed.endswith(("/", os.sep)):
            raise ValueError(f"the folder {path} does not exist; create it first or type "
                             f"another path")
        path = self.with_suffix(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; type a file name such as "
                             f"{path / self.file_name}")
        missing = path.parent
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if not missing.exists():
            raise ValueError(f"the folder {missing} does not exist; create it first or type "
                             f"another path")
        return path

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            path = self.target(event.value)
        except ValueError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        self.dismiss(str(path))

    def action_cancel(self) -> None:
        self.dismiss(None)


class TrainingScreen(Screen):
    """Loss sparkline, accuracies, progress, filters and gradient norms while training; the
    confusion matrix and the misclassified digits when a run ends."""

    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("space", "toggle", "run/pause", key_display="␣", id="train_run_pause",
                tooltip="Start training; pause / resume a run"),
        Binding("x", "stop", "stop", id="train_stop",
                tooltip="Stop the run after the current batch (keeps the weights so far)"),
        Binding("plus,equals_sign", "lr(2.0)", "lr", key_display="+", group=LR_GROUP,
                id="train_lr_up", tooltip="Double the learning rate (also while running)"),
        Binding("minus", "lr(0.5)", "lr", key_display="-", group=LR_GROUP,
                id="train_lr_down", tooltip="Halve the learning rate (also while running)"),
        Binding("o", "optimizer", "optim", id="train_optimizer",
                tooltip="Switch the optimiser: Adam <-> SGD with momentum (fresh state)"),
        Binding("w", "save", "save", id="train_save",
                tooltip="Save the current weights to an .npz file (you type the path)"),
        Binding("r", "reset", "reset", id="train_reset",
                tooltip="Reset the weights to the seed initialisation (a run restarts)"),
        Binding("v", "view", "view", id="train_view",
                tooltip="Switch between the live view (filters, gradients) and the results "
                        "(confusion matrix, misclassified digits)"),
        Binding("f", "from_stepper", "fine-tune", show=False, id="train_from_stepper",
                tooltip="Train from the stepper's weights (fine-tune) instead of the seed "
                        "initialisation; r goes back to the seed"),
        Binding("escape", "back", "back", key_display="Esc", id="train_back",
                tooltip="Back to the stepper, which shows the trained weights "
                        "(stops a run first)"),
    ]

    def __init__(self, factory: TrainerFactory) -> None:
        super().__init__()
        self.factory = factory
        self.trainer = factory(None)
        self.feed = tp.Feed()
        self.state = "ready"
        self.active = False  # a run's worker is going (set before the thread starts)
        self.worker: Worker | None = None
        self.start_desc = "seed init"  # where the next run starts from
        self.dirty = False  # the weights changed since the stepper last got them
        self.epochs_trained = 0  # complete epochs since the start (seed or stepper weights)
        self.evaluation = None
        self.result = None
        self.save_path = DEFAULT_SAVE_PATH
        self._seen = -1
        self._mark = (0.0, 0.0)  # (wall, UI thread CPU) seconds at the last drawn frame
        self.frames = 0  # drawn while training (for tests and the benchmark)
        self._slow_at = 0.0
        self._spark_key: tuple[int, int] | None = None

    @property
    def cnn(self) -> CnnApp:
        return self.app  # type: ignore[return-value]

    # ---- layout ---------------------------------------------------------------------------------

    @property
    def arch(self):  # noqa: ANN201 - the trainer's architecture
        return self.trainer.arch

    def compose(self) -> ComposeResult:
        mode = self.cnn.color_mode
        yield TextPane(id="t-header", wrap=False)
        with Horizontal(id="t-top"):
            with Vertical(id="t-loss"):
                yield TextPane(id="t-loss-title", wrap=False)
                yield Sparkline([], id="t-spark", summary_function=loss_summary)
            yield TextPane(id="t-epochs", wrap=False)
        with Horizontal(id="t-prog-epoch", classes="t-prog"):
            yield Static("epoch", classes="t-prog-label")
            yield Progress(total=1, show_eta=False, id="t-epoch-bar")
            yield TextPane(id="t-epoch-info", wrap=False)
        with Horizontal(id="t-prog-batch", classes="t-prog"):
            yield Static("batch", classes="t-prog-label")
            yield Progress(total=1, show_eta=False, id="t-batch-bar")
            yield TextPane(id="t-batch-info", wrap=False)
        with ContentSwitcher(id="t-bottom", initial="t-live"):
            with Horizontal(id="t-live"):
                with Vertical(id="t-filters"):
                    # one heatmap of kernels per conv layer: #t-w1, #t-w2 (or #t-w2d, #t-w2p);
                    # with two, conv2's gets a fixed height; with more, they share the space
                    convs = tp.conv_weights(self.arch)
                    for k, (_, weight) in enumerate(convs):
                        yield TextPane(id=f"t-{weight.lower()}-title", wrap=False,
                                       classes="t-filter-title")
                        yield TensorView(id=f"t-{weight.lower()}", mode=mode,
                                         classes="t-filter" if k and len(convs) == 2 else "")
                yield TextPane(id="t-grads", wrap=False)
            with Horizontal(id="t-results"):
                with Vertical(id="t-conf-box"):
                    yield TextPane(id="t-result-line", wrap=False)
                    yield TextPane(id="t-confusion", wrap=False)
                    yield TextPane(id="t-conf-legend", wrap=False)
                with Vertical(id="t-wrong-box"):
                    yield TextPane(id="t-wrong-title", wrap=False)
                    yield OptionList(id="t-wrong")
        # ctrl+p stays in the help screen: its footer entry would push q quit off 80 columns
        yield Footer(compact=True, show_command_palette=False)
        yield TooSmall()

    def on_mount(self) -> None:
        # polls only while a run is going: an idle screen (or one popped, which stays installed)
        # wakes nothing
        self._poll_timer = self.set_interval(POLL_INTERVAL, self.poll, pause=True)
        self.draw()
        self.draw_results()

    def on_resize(self) -> None:
        self.call_after_refresh(self.draw)

    def on_unmount(self) -> None:
        # the app is closing (a popped training screen stays installed): never leave the
        # training thread (or process) running, or the app would wait for it
        self.trainer.close()

    # ---- the training thread --------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        """Called in the training thread for every event: record it, nothing more."""
        feed = self.feed
        if isinstance(event, BatchEnd):
            feed.on_batch(event)
        elif isinstance(event, EpochEnd):
            feed.on_epoch(event)
        elif isinstance(event, Reset):
            feed.on_reset()
        elif isinstance(event, RunEnd):
            feed.on_end(event.result)

    def _work(self) -> None:
        try:
            self.trainer.run(self._on_event)
        except Exception as e:  # a bug, not a user error: say it in one sentence, keep the UI
            self.feed.on_error(f"training failed: {type(e).__name__}: {e}")

    def start(self) -> None:
        self.feed.clear()
        self.trainer.resume()
        self.active = True
        self.dirty = True
        self.state = "running"
        self.result = None
        self.query_one(ContentSwitcher).current = "t-live"
        self.set_focus(None)
        self.worker = self.run_worker(self._work, thread=True, group="training",
                                      name="training", exit_on_error=False)
        self._poll_timer.resume()
        self.draw()
        self._mark = (time.perf_counter(), time.thread_time())  # the frame budget starts now

    # ---- drawing -------------------------------------------------------------------------------

    def poll(self) -> None:
        """20 times a second: draw what the training thread reported since the last poll,
        unless the UI thread has used more than its share of the time since the last frame."""
        feed = self.feed
        if feed.version == self._seen:
            if not self.active:
                self._poll_timer.pause()
            return
        now, cpu = time.perf_counter(), time.thread_time()
        if self.active and feed.result is None and feed.error is None:
            wall, used = now - self._mark[0], cpu - self._mark[1]
            if used > UI_SHARE * wall:
                return
            self.frames += 1
        self._mark = (now, cpu)
        self._seen = feed.version
        if feed.error and self.active:
            self.active = False
            self.state = "ready"
            self.notify(feed.error, severity="error", timeout=10)
        if feed.result is not None and self.active:
            self.run_ended(feed.result)
        self.draw(full=not self.active)

    def run_ended(self, result) -> None:  # noqa: ANN001
        self.active = False
        self.result = result
        self.state = result.status
        self.evaluation = result.evaluation
        self.epochs_trained += result.epochs_completed
        self.start_desc = "the trained weights"
        if result.status == "diverged":
            self.notify(result.message, title="training diverged", severity="error", timeout=12)
        elif result.status == "finished":
            self.notify(result.message, timeout=6)
        else:
            self.notify(result.message, severity="warning", timeout=6)
        self.draw_results()
        if self.evaluation is not None and self.is_current:
            self.show_results(True)

    def set_text(self, selector: str, text: Text) -> None:
        """Show ``text`` in a pane, unless it already shows exactly that (no repaint)."""
        pane = self.query_one(selector, TextPane)
        if pane.text != text:
            pane.set(text)

    def draw_header(self) -> None:
        """The status, optimiser and learning rate: all that + - and o change (a full draw
        took 15-25 ms and a repaint of every pane, while training)."""
        trainer = self.trainer
        self.set_text("#t-header", tp.header(self.state, trainer.config, trainer.lr, self.feed,
                                             len(trainer.train_idx), len(trainer.test_idx),
                                             self.start_desc))

    def draw(self, full: bool = True) -> None:
        """Everything but the results, from the feed and the trainer's current weights. While
        training (``full=False``) the slower panes (filters, gradient norms) redraw at most
        every ``SLOW_INTERVAL`` seconds; the rest every frame."""
        if not self.is_mounted:
            return
        feed, trainer = self.feed, self.trainer
        cfg = trainer.config
        n_train = len(trainer.train_idx)
        self.draw_header()
        self.set_text("#t-loss-title", tp.loss_text(feed))
        spark = self.query_one(Sparkline)
        key = (id(feed.losses), len(feed.losses))  # a reset replaces the list
        if key != self._spark_key:
            self._spark_key = key
            spark.data = tp.spark_data(feed.losses)
        b = feed.batch
        batches = -(-n_train // cfg.batch_size)
        epochs = b.epochs if b else cfg.epochs
        self.query_one("#t-epoch-bar", ProgressBar).update(
            total=epochs * batches, progress=b.step if b else 0)
        self.query_one("#t-batch-bar", ProgressBar).update(
            total=b.batches if b else batches, progress=b.batch if b else 0)
        self.set_text("#t-epoch-info", tp.progress_epoch_text(feed, epochs))
        self.set_text("#t-batch-info",
                      tp.progress_batch_text(feed, cfg.batch_size, n_train, self.state))
        rows = self.query_one("#t-epochs").size.height or 6
        self.set_text("#t-epochs", tp.epochs_text(feed, rows))  # repaints once an epoch
        now = time.perf_counter()
        if not full and now - self._slow_at < SLOW_INTERVAL:
            return
        self._slow_at = now
        width = self.query_one("#t-grads").size.width or 34
        self.set_text("#t-grads", tp.grads_text(feed, width - 1, self.arch))
        self.draw_filters()

    def draw_filters(self) -> None:
        params = self.trainer.params()
        mode = self.cnn.color_mode
        for layer, name in tp.conv_weights(self.arch):
            selector = f"#t-{name.lower()}"
            view = tp.filters_view(params[name], name)
            self.query_one(selector, TensorView).show(view, mode)
            self.set_text(f"{selector}-title",
                          tp.filters_title(layer, name, view, params[name].shape[1]))

    def draw_results(self) -> None:
        ev = self.evaluation
        pal = palette(self.cnn.color_mode, False)
        self.query_one("#t-result-line", TextPane).set(tp.result_line(self.result, ev))
        self.query_one("#t-confusion", TextPane).set(
            tp.confusion_text(ev.confusion, pal) if ev is not None else Text())
        self.query_one("#t-conf-legend", TextPane).set(
            tp.confusion_legend(pal) if ev is not None else Text())
        wrong = self.query_one(OptionList)
        wrong.clear_options()
        title = Text(no_wrap=True, overflow="ellipsis")
        if ev is None:
            title.append("misclassified test digits", "bold")
        else:
            rows = tp.misclassified_rows(ev)
            title.append(f"misclassified: {len(rows)}", "bold")
            title.append("  Enter opens", "dim")
            wrong.add_options([Option(label, id=str(index)) for index, label in rows])
            if rows:
                wrong.highlighted = 0
        self.query_one("#t-wrong-title", TextPane).set(title)

    def show_results(self, on: bool) -> None:
        self.query_one(ContentSwitcher).current = "t-results" if on else "t-live"
        if on:
            self.query_one(OptionList).focus()
        else:
            self.set_focus(None)
            self.call_after_refresh(self.draw)

    # ---- handing the weights to the stepper -----------------------------------------------------

    def weights_desc(self) -> str:
        """For the stepper's header: ``trained (epoch 3, 97.8% test)``."""
        text = f"epoch {self.epochs_trained}"
        b = self.feed.batch
        if b is not None and b.batch < b.batches and self.result is not None \
                and self.result.status != "finished" and b.epoch > self.result.epochs_completed:
            # stopped inside an epoch: the batches after the last complete one count too
            batches = f"{b.batch} batch{'es' if b.batch != 1 else ''}"
            text = f"{text} + {batches}" if self.epochs_trained else batches
        ev = self.trainer.last_evaluation
        if ev is not None:
            text += f", {ev.accuracy:.1%} test"
        return f"trained ({text})"

    def handover(self) -> tuple[dict[str, np.ndarray], str] | None:
        """The weights for the stepper if they changed since it last got them."""
        if not self.dirty:
            return None
        self.dirty = False
        params = self.trainer.params("float64")
        if self.epochs_trained == 0 and self.feed.batch is None:
            return params, "seed"  # reset and not trained since: the seed initialisation
        return params, self.weights_desc()

    async def finish_run(self) -> None:
        """Stop a run and wait for its thread (one batch at most)."""
        if not self.active:
            return
        self.trainer.stop()
        self.state = "stopping"
        self.draw()
        if self.worker is not None:
            try:
                await self.worker.wait()
            except Exception:  # noqa: BLE001 - its error is reported by the poll
                pass
        self._seen = -1
        self.poll()

    async def leave(self, index: int | None = None) -> None:
        await self.finish_run()
        weights = self.handover()
        self.cnn.leave_training(weights, index)
        if weights is not None:
            self.notify(f"the stepper now uses the {weights[1]} weights", timeout=4)

    # ---- actions --------------------------------------------------------------------------------

    def action_toggle(self) -> None:
        if not self.active:
            self.start()
            return
        if self.state == "stopping":
            return
        if self.trainer.paused:
            self.trainer.resume()
            self.state = "running"
        else:
            self.trainer.pause()
            self.state = "paused"
        self.draw()

    def action_stop(self) -> None:
        if not self.active:
            self.notify("no run to stop; space starts one", timeout=3)
            return
        self.trainer.stop()
        self.state = "stopping"
        self.draw()

    def action_lr(self, factor: float) -> None:
        try:
            lr = self.trainer.scale_lr(factor)
        except ConfigError as e:
            self.notify(str(e), severity="error", timeout=4)
            return
        verb = "doubled" if factor > 1 else "halved"
        self.notify(f"learning rate {verb}: {lr:.4g}" + (" (the schedule scales it)"
                                                         if self.active else ""), timeout=2)
        self.draw_header()

    def action_optimizer(self) -> None:
        name = self.trainer.switch_optimizer()
        self.notify(f"optimiser: {name} (fresh state)", timeout=2)
        self.draw_header()

    def action_reset(self) -> None:
        self.trainer.reset()
        self.dirty = True
        self.epochs_trained = 0
        self.start_desc = "seed init"
        self.evaluation = self.result = None
        self.feed.clear()  # a running run also sends a Reset before its next batch
        if not self.active:
            self.state = "ready"
        self.draw_results()
        self.show_results(False)
        self.notify("weights reset to the seed initialisation"
                    + ("; the run restarts at epoch 1" if self.active else ""), timeout=3)
        self.draw()

    def action_from_stepper(self) -> None:
        if self.active:
            self.notify("stop the run first (x), then f trains from the stepper's weights",
                        timeout=4)
            return
        old = self.trainer
        self.trainer = self.factory(self.cnn.params)
        old.close()
        self.trainer.set_lr(old.lr)  # keep what +, - and o chose
        self.trainer.set_optimizer(old.config.optimizer)
        self.feed.clear()
        self.state = "ready"
        self.start_desc = f"the stepper's weights ({self.cnn.weights_desc})"
        self.dirty = False  # these are the stepper's weights
        self.epochs_trained = 0
        self.evaluation = self.result = None
        self.draw_results()
        self.show_results(False)
        self.notify(f"the next run starts from the stepper's weights ({self.cnn.weights_desc}); "
                    "r goes back to the seed initialisation", timeout=4)
        self.draw()

    def action_view(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if switcher.current == "t-results":
            self.show_results(False)
        elif self.evaluation is None:
            self.notify("the results (confusion matrix, misclassified digits) appear when a "
                        "run ends", timeout=3)
        else:
            self.show_results(True)

    def action_save(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.save_to(path)

        self.app.push_screen(SaveWeightsScreen(self.save_path), chosen)

    def save_to(self, path: str) -> None:
        """Save the weights to ``path``; under ``cnntui serve``, to the browser, named as
        ``path``'s last part (the server's disk is not the user's)."""
        self.save_path = path
        try:
            if self.cnn.deliver_to_browser(Path(path).name, self.trainer.save,
                                           "application/octet-stream"):
                return
            saved = self.trainer.save(Path(path).expanduser())
        except (OSError, WeightsError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            self.notify(f"could not save the weights to {path}: {reason}", severity="error",
                        timeout=8)
            return
        self.notify(f"weights saved to {Path(saved).resolve()}", timeout=6)

    async def action_back(self) -> None:
        await self.leave()

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            await self.leave(int(event.option.id))

    # ---- tests and snapshots --------------------------------------------------------------------

    def replay(self, events: list[object], state: str = "running") -> None:
        """Show ``events`` as if a run had reported them (fixed data for snapshots); a RunEnd
        among them shows its results, without the notification."""
        self.feed.clear()
        for event in events:
            self._on_event(event)
        self.state = state
        self._seen = self.feed.version
        result = self.feed.result
        if result is not None:
            self.result, self.evaluation = result, result.evaluation
            self.draw_results()
            self.show_results(self.evaluation is not None)
        self.draw()
