"""The cnntui App: state (weights, digit, trace, current step), global keys, background work.

Screens: the stepper (default), the digit picker, help, and the training screen (``t``), which
trains in a thread worker and hands the trained weights back to the stepper.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.color import ColorSystem
from textual import events, on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from cnntui import model, reference_process
from cnntui.data import DRAWING_EXPLANATION, Dataset, Sample, load_dataset, load_digits
from cnntui.trace import Step, Trace, trace_sample
from screens.colors import MODES, detect_mode
from screens.commands import CnnCommands
from screens.keys import binding_sections, keymap_path, load_keymap, remapped
from screens.stepper import StepperScreen

# the other screens (and the trainer) are imported when first opened: about a tenth of the
# time to the first paint went on importing them and the Textual widgets they use
if TYPE_CHECKING:
    from cnntui.training.process import TrainerProcess
    from screens.training import TrainerFactory, TrainingScreen

# process: PyTorch in a helper process (the default: the session never imports torch);
# thread: imported into this process and run in a worker thread; sync: before the first paint;
# no-torch: not at all, and the diff pane says so (--no-torch); off: not at all (tests)
REFERENCE_MODES = ("process", "thread", "sync", "no-torch", "off")
NO_TORCH_FLAG = "started with --no-torch: PyTorch is not used, so there are no diffs to show"
COLOR_SYSTEMS = {"truecolor": ColorSystem.TRUECOLOR, "256": ColorSystem.EIGHT_BIT,
                 "16": ColorSystem.STANDARD}


@contextmanager
def _no_color_env(on: bool):
    """Textual reads NO_COLOR when the App is created; set it just for that moment."""
    if not on or "NO_COLOR" in os.environ:
        yield
        return
    os.environ["NO_COLOR"] = "1"
    try:
        yield
    finally:
        os.environ.pop("NO_COLOR", None)


class CnnApp(App[int]):
    """Walk one digit through SimpleCNN's forward and backward pass."""

    CSS_PATH = [str(Path(__file__).with_name(n))  # absolute: subclasses live elsewhere
                for n in ("app.tcss", "training.tcss")]
    TITLE = "cnntui"
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny-w"), (60, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-tiny-h"), (20, "-short"), (30, "-tall")]
    COMMANDS = App.COMMANDS | {CnnCommands}
    BINDINGS = [
        Binding("question_mark,f1", "help", "help", key_display="?", id="help",
                tooltip="Show / hide this help"),
        Binding("q", "quit", "quit", id="quit", tooltip="Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="quit_now"),
        # priority: modal screens (help, the picker, the save dialog) end the binding chain
        Binding("ctrl+s", "screenshot", "Save SVG screenshot", show=False, id="screenshot",
                priority=True),
        Binding("i", "summary", "summary", show=False, id="summary",
                tooltip="Every architecture's layers, shapes, parameters and MACs"),
        Binding("D", "draw", "draw", id="draw", show=False,
                tooltip="Draw a digit with the mouse or the keyboard; Enter steps through it"),
        Binding("t", "train", "train", id="train",
                tooltip="Open the training screen (Esc there comes back with the trained weights)"),
    ]

    def __init__(self, params: dict[str, np.ndarray], weights_desc: str = "seed", *,
                 index: int = 0, color: str = "auto", reference: str = "process",
                 predictions: str = "thread", screenshot_dir: str | os.PathLike | None = None,
                 trainer_factory: TrainerFactory | None = None,
                 arch: model.Architecture = model.SIMPLE_CNN, notice: str | None = None,
                 data: Dataset | None = None, sample: Sample | None = None):
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_MODES)}")
        self.color_mode = detect_mode() if color == "auto" else color
        if self.color_mode not in MODES:
            raise ValueError(f"--color must be auto or one of {', '.join(MODES)}")
        with _no_color_env(self.color_mode == "none"):
            super().__init__()
        if self.color_mode in COLOR_SYSTEMS and color != "auto":
            self.console._color_system = COLOR_SYSTEMS[self.color_mode]
        self.params = params
        self.weights_desc = weights_desc
        self.arch = arch
        self.digits = data or load_digits()  # the data set the picker and [ ] page through
        # the input shown: digit ``index`` of the data set, or the user's own image or drawing
        self.sample = sample or self.digits.sample(index)  # a clear IndexError first
        self.index = index if self.sample.index is None else self.sample.index
        self.step_index = 0
        self.trace: Trace = trace_sample(params, self.sample, weights=weights_desc, arch=arch)
        self.reference_mode = reference
        # "loading" (the first run) | "ready" | "failed: why" | "off" | "off: why"
        self.reference_state = "loading"
        self._torch_process = None
        if reference == "off":
            self.reference_state = "off"
        elif reference == "no-torch":
            self.reference_state = f"off: {NO_TORCH_FLAG}"
        elif not reference_process.torch_available():
            self.reference_state = f"off: {reference_process.NO_TORCH}"
        elif reference == "process":
            self._torch_process = reference_process.TorchProcess()
        self.predictions_mode = predictions
        self.predictions: np.ndarray | None = None
        self.confidences: np.ndarray | None = None
        self._predicting = False
        self.screenshot_dir = Path(screenshot_dir) if screenshot_dir else Path.cwd()
        self.notice = notice  # told once the app is up (why this digit, say)
        self._mnist_weights: tuple[dict[str, np.ndarray], str] | None = None
        # the weights a drawing replaced, given back when a digit of the data set is chosen
        self._weights_for_digits: tuple[dict[str, np.ndarray], str] | None = None
        self.stepper = StepperScreen()
        # the training screen's trainer (the default settings on the full split), from the seed
        # initialisation (None) or from given weights
        self.trainer_factory = trainer_factory or self._default_trainer
        self.training: TrainingScreen | None = None
        # the ids are collected only when there is a keymap: that imports every screen
        path = keymap_path()
        ids = ({b.id for _, bindings in binding_sections() for b in bindings if b.id}
               if path.exists() else set())
        self.keymap, self.keymap_errors = load_keymap(path, ids)
        self.set_keymap(self.keymap)
        if reference == "sync":
            self._attach_now()
        if predictions == "sync":
            self._store_predictions(*self._compute_predictions())

    def _default_trainer(self, params: dict[str, np.ndarray] | None) -> TrainerProcess:
        from cnntui.training import TrainConfig
        from cnntui.training.process import TrainerProcess

        return TrainerProcess(TrainConfig.for_data(self.digits.name), params=params,
                              data=self.digits, arch=self.arch)

    def get_default_screen(self) -> Screen:
        return self.stepper

    def on_mount(self) -> None:
        for error in self.keymap_errors:
            self.notify(error, title="keymap", severity="error", timeout=12)
        if self.notice:
            self.notify(self.notice, timeout=10)
        if self.reference_state == "loading" and self.reference_mode in ("process", "thread"):
            self.call_after_refresh(self._start_reference)  # after the first paint

    def on_unmount(self) -> None:
        if self._torch_process is not None:
            self._torch_process.close()  # (a killed session closes its pipe all the same)

    # ---- state changes ---------------------------------------------------------------------

    def go_to(self, index: int) -> None:
        index = max(0, min(len(self.trace.steps) - 1, index))
        if index != self.step_index or self.stepper.at_update:
            self.step_index = index
            self.stepper.at_update = False
            self.stepper.redraw()

    def set_digit(self, index: int) -> None:
        """Show digit ``index`` (wrapping around the set) at the same step."""
        index %= len(self.digits.labels)
        if self._weights_for_digits is not None:  # back from a drawing read with MNIST's weights
            params, desc = self._weights_for_digits
            self.set_weights(params, desc, index=index)
            return
        self.index = index
        self.show_sample(self.digits.sample(index))

    def show_sample(self, sample: Sample) -> None:
        """Show ``sample`` (a digit of the data set, or an own image or drawing) at the same
        step."""
        self.sample = sample
        self.trace = trace_sample(self.params, sample, weights=self.weights_desc, arch=self.arch)
        self.step_index = min(self.step_index, len(self.trace.steps) - 1)
        if self.reference_mode == "sync":
            self._attach_now()
        elif self.reference_mode in ("process", "thread") and (
                self.reference_state == "ready" or self.reference_state.startswith("failed")):
            self._start_reference()  # (while loading, the first run starts the next itself)
        self.stepper.new_trace()

    def set_weights(self, params: dict[str, np.ndarray], desc: str,
                    index: int | None = None, arch: model.Architecture | None = None) -> None:
        """Show ``params`` (named ``desc`` in the header; for ``arch``, default the current one)
        at the same step, on digit ``index`` (default: the current one); the picker's
        predictions are recomputed."""
        name = self.trace.steps[self.step_index].name
        self._weights_for_digits = None
        if arch is not None and arch is not self.arch:
            self.arch = arch
            if self.training is not None:  # it trains the other architecture
                self.training.trainer.stop()
                self.uninstall_screen("training")
                self.training = None
        self.params = params
        self.weights_desc = desc
        self.predictions = self.confidences = None
        self._predicting = False
        if index is None:
            self.show_sample(self.sample)
        else:
            self.set_digit(index)
        if name in self.trace.names:  # the same tensor in another network (dx stays dx)
            self.go_to(self.trace.position(name))
        if self.predictions_mode == "sync":
            self._store_predictions(*self._compute_predictions())

    def switch_arch(self, key: str) -> None:
        """Open architecture ``key`` with its shipped weights (the seed ones if none ship)."""
        arch = model.ARCHITECTURES[key]
        try:
            params, desc = model.weights_from(model.PRETRAINED, arch)
        except model.WeightsError:
            params, desc = model.weights_from(model.SEED, arch)
        self.set_weights(params, desc, arch=arch)
        self.notify(f"{arch.name}: {desc} weights, {len(self.trace.steps)} steps")

    def stepper_action(self, name: str) -> None:
        getattr(self.stepper, f"action_{name}")()

    # ---- the PyTorch reference --------------------------------------------------------------

    def verdict(self, step: Step) -> tuple[bool | None, str]:
        from cnntui import reference

        v = reference.verdict(step)
        return v.ok, v.text

    def _attach_now(self) -> None:
        if self.reference_state.startswith("off"):
            return
        from cnntui import reference

        try:
            reference.attach(self.trace)
            self.reference_state = "ready"
        except Exception as e:  # torch missing or broken: say so, keep the debugger usable
            self.reference_state = _failure(e)

    def _start_reference(self) -> None:
        self.run_worker(self._reference_worker, thread=True, group="reference",
                        exclusive=True, exit_on_error=False)

    def _reference_worker(self) -> None:
        # computes from the trace in this thread (the helper process computes, this thread
        # waits for it); the steps are filled in on the UI's thread, so a redraw never sees
        # half of them
        trace, results = self.trace, None
        try:
            if self._torch_process is not None:
                # a request queued behind another is dropped if the digit changed meanwhile:
                # the newer run has its own (during the first run the next one waits for it)
                results = self._torch_process.results(
                    trace, wanted=lambda: trace is self.trace or self.reference_state != "ready")
                if results is None:
                    return
            else:
                from cnntui import reference

                results = reference.torch_results(trace)
            state = "ready"
        except Exception as e:
            state = _failure(e)
        self.call_from_thread(self._reference_done, state, trace, results)

    def _reference_done(self, state: str, trace: Trace | None = None,
                        results: dict | None = None) -> None:
        from cnntui import reference

        if results is not None and trace is self.trace:  # a stale run's results are dropped
            reference.apply(trace, results)
        if self.reference_state == "loading" and self.reference_mode == "thread":
            freeze_heap()  # PyTorch has just been imported
        if (state == "ready" and self.reference_state == "loading"
                and trace is not None and trace is not self.trace):
            # the digit changed during the first run (later changes start their own run)
            self._start_reference()
        self.reference_state = state
        self.stepper.update_torch()

    # ---- predictions for the picker ---------------------------------------------------------

    def _compute_predictions(self, params: dict[str, np.ndarray] | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
        params = self.params if params is None else params
        # MNIST's 70,000 inputs at once would take 440 MB; 1797 digits at once left ~50 MiB in
        # the allocator for the session's life (README, Memory per session); 256 is as fast
        chunk = 256
        probs = np.concatenate([
            model.predict(self.arch, params, self.digits.prepared(np.arange(i, min(
                i + chunk, len(self.digits)))))
            for i in range(0, len(self.digits), chunk)])
        return probs.argmax(axis=1), probs.max(axis=1)

    def _store_predictions(self, predictions: np.ndarray, confidences: np.ndarray) -> None:
        from screens.picker import PickerScreen

        self.predictions, self.confidences = predictions, confidences
        self._predicting = False
        if self.is_running and isinstance(self.screen, PickerScreen):
            self.screen.predictions_ready()

    def ensure_predictions(self) -> None:
        """Start the picker's predictions (the picker asks when it opens): 80 ms for the 1797
        digits, in a thread. Started earlier, while the user steps, they held the GIL the UI
        needed: the step in which PyTorch's diffs arrived took 340-480 ms."""
        if self.predictions is not None or self._predicting:
            return
        if self.predictions_mode == "sync":
            self._store_predictions(*self._compute_predictions())
            return
        self._predicting = True
        params = self.params

        def work() -> None:
            result = self._compute_predictions(params)
            if params is self.params:  # not replaced by trained weights meanwhile
                self.call_from_thread(self._store_predictions, *result)

        self.run_worker(work, thread=True, group="predictions", exit_on_error=False)

    # ---- global actions ---------------------------------------------------------------------

    def action_pick(self) -> None:
        from screens.picker import PickerScreen

        if isinstance(self.screen, PickerScreen):
            return

        def chosen(index: int | None) -> None:
            if index is not None:
                self.set_digit(index)

        self.push_screen(PickerScreen(self.index), chosen)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "train":  # only the stepper opens it (hidden from the training footer)
            return isinstance(self.screen, StepperScreen)
        return True

    def action_train(self) -> None:
        from screens.training import TrainingScreen

        if not isinstance(self.screen, StepperScreen):
            return
        if self.stepper.playing:
            self.stepper.action_play()
        if self.training is None:
            self.training = TrainingScreen(self.trainer_factory)
            self.install_screen(self.training, name="training")
        self.push_screen("training")

    def leave_training(self, weights: tuple[dict[str, np.ndarray], str] | None,
                       index: int | None = None) -> None:
        """Back from the training screen: the stepper takes the trained weights (if they
        changed) and opens digit ``index`` if one was chosen there."""
        from screens.training import TrainingScreen

        if isinstance(self.screen, TrainingScreen):
            self.pop_screen()
        if weights is not None:
            self.set_weights(*weights, index=index)
        elif index is not None:
            self.set_digit(index)

    # ---- drawing a digit --------------------------------------------------------------------

    def drawing_weights(self) -> tuple[dict[str, np.ndarray], str]:
        """The weights a drawing is read with: the MNIST-trained ones instead of the shipped
        digits weights (trained on zoomed 8x8 digits, they read drawn digits badly), else the
        current ones."""
        if self.weights_desc == model.PRETRAINED and self.arch is model.SIMPLE_CNN:
            if self._mnist_weights is None:
                self._mnist_weights = model.weights_from(model.PRETRAINED, self.arch, "mnist")
            return self._mnist_weights
        return self.params, self.weights_desc

    def predict_drawing(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """A drawing's class probabilities and the 28x28 digit the network is given (the drawing
        prepared as MNIST's digits); None while it has no ink."""
        from cnntui.image import ImageError, input_from_digit

        try:
            got = input_from_digit(pixels, "drawing")
        except ImageError:
            return None
        return model.predict(self.arch, self.drawing_weights()[0], got.x[None])[0], got.digit

    def open_drawing(self, pixels: np.ndarray) -> None:
        """Step through a drawing (unlabelled: the loss is towards the prediction)."""
        from cnntui.image import ImageError, input_from_digit

        try:
            got = input_from_digit(pixels, "drawing")
        except ImageError as e:
            self.notify(str(e), severity="warning")
            return
        self.sample = Sample(got.x, None, "drawing", DRAWING_EXPLANATION, None, got.digit,
                             np.asarray(pixels, dtype=float))
        params, desc = self.drawing_weights()
        if desc != self.weights_desc:
            before = self.params, self.weights_desc
            self.set_weights(params, desc)
            self._weights_for_digits = before
            self.notify(f"the drawing is read with the weights trained on MNIST ({desc}); "
                        f"a digit of the data set ([, ] or d) brings back {before[1]}")
        else:
            self.show_sample(self.sample)

    def action_draw(self) -> None:
        from screens.canvas import CanvasScreen

        if not isinstance(self.screen, StepperScreen):
            return
        if self.stepper.playing:
            self.stepper.action_play()
        initial = self.sample.original if self.sample.name == "drawing" else None

        def done(pixels: np.ndarray | None) -> None:
            if pixels is not None:
                self.open_drawing(pixels)

        self.push_screen(CanvasScreen(self.predict_drawing, initial=initial,
                                      save_dir=self.screenshot_dir,
                                      weights=self.drawing_weights()[1]), done)

    def action_summary(self) -> None:
        from screens.summary import SummaryScreen

        if isinstance(self.screen, SummaryScreen):
            self.screen.dismiss(None)
        elif isinstance(self.screen, StepperScreen):
            self.push_screen(SummaryScreen(self.arch))

    def action_help(self) -> None:
        from screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen([(title, remapped(bindings, self.keymap))
                                     for title, bindings in binding_sections()]))

    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        """Textual's SVG export, rendered with the terminal's own colour system instead of
        truecolor. Rich caches a Style's ANSI codes the first time it renders it, for whatever
        colour system that is (``Style._ansi``), and the screen is drawn with the same Style
        objects: a truecolor export left 24-bit codes in them, which the terminal then got in
        256- and 16-colour modes. The SVG takes its colours from the styles, not the codes."""
        import io

        from rich.console import Console

        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                          color_system=self.console.color_system or "truecolor", record=True,
                          legacy_windows=False, safe_box=False)
        console.print(self.screen._compositor.render_update(
            full=True, screen_stack=self._background_screens, simplify=simplify))
        return console.export_svg(title=title or self.title)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's palette commands, with its Screenshot (which saves to ~/Downloads and fails
        if that folder is missing) replaced by this app's, which saves where ctrl+s does."""
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":
                yield command
        where = "your browser" if self.is_web else self.screenshot_dir
        yield SystemCommand("Screenshot", f"Save an SVG screenshot to {where} (ctrl+s)",
                            lambda: self.set_timer(0.1, self.action_screenshot))

    def action_screenshot(self) -> None:
        """Save the screen shown as an SVG, and a PNG of it where a converter exists."""
        step = self.trace.steps[self.step_index]
        self.save_export(f"cnntui-{self.input_stem()}-{step.name}", "screenshot",
                         self.export_screenshot())

    def input_stem(self) -> str:
        """The input shown, for file names: digit5, imagea7png, drawing."""
        return re.sub(r"[^a-z0-9]+", "", self.trace.input_name.lower())

    def save_export(self, stem: str, what: str, svg: str, png: bytes | None = None) -> None:
        """Save ``svg`` and a PNG (``png``, else the SVG converted where a converter exists:
        that takes a moment, so in a thread) to ``screenshot_dir`` as ``stem-<time>.svg/.png``
        under new names; if that folder is missing, to the temporary folder, and say so; under
        ``cnntui serve``, to the browser."""
        stem = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"

        def convert() -> None:
            from screens.figure import svg_to_png

            files = [(".svg", svg, "image/svg+xml")]
            picture = png if png is not None else svg_to_png(svg)
            if picture is not None:
                files.append((".png", picture, "image/png"))
            self.call_from_thread(self._save_files, stem, what, files)

        self.run_worker(convert, thread=True, group="export", exit_on_error=False)

    def _save_files(self, stem: str, what: str, files: list[tuple[str, str | bytes, str]]) -> None:
        if self.is_web:
            for suffix, content, mime in files:
                self.deliver_to_browser(stem + suffix, partial(_write_to, content), mime)
            return
        folder, note = self.screenshot_dir, ""
        if not folder.is_dir():
            folder = Path(tempfile.gettempdir())
            note = f" ({self.screenshot_dir} does not exist)"
        saved: list[Path] = []
        try:
            for suffix, content, _ in files:  # the PNG takes the SVG's (numbered) name
                saved.append(_write_new_file(folder, saved[0].stem if saved else stem, suffix,
                                             content))
        except OSError as e:
            self.notify(f"could not save the {what} in {folder}: {e.strerror or e}",
                        severity="error", timeout=8)
            return
        self.last_export = saved
        also = "".join(f" and {p.suffix[1:].upper()}" for p in saved[1:])
        self.notify(f"{what} saved to {saved[0]}{also}{note}", timeout=6)

    def deliver_to_browser(self, filename: str, write: Callable[[Path], Path],
                           mime_type: str) -> bool:
        """Under the web driver (``cnntui serve``) the user's disk is the browser's, not this
        server's: ``write(path)`` the file into a temporary folder (it returns the path it
        wrote, which may differ), send it to the browser as a download named as written and
        return True. In a terminal return False at once; the caller saves as it always has.
        ``write``'s errors propagate, as they would from the caller's own save."""
        if not self.is_web:
            return False
        with tempfile.TemporaryDirectory(prefix="cnntui-deliver-") as folder:
            written = Path(write(Path(folder) / filename))
            content = written.read_bytes()
        # delivered in a thread by Textual; DeliveryFailed below reports a failure
        self.deliver_binary(io.BytesIO(content), save_filename=written.name,
                            mime_type=mime_type, name=f"cnntui:{written.name}")
        self.notify(f"{written.name} sent to your browser (see its downloads)", timeout=6)
        return True

    @on(events.DeliveryFailed)
    def _delivery_failed(self, event: events.DeliveryFailed) -> None:
        if (event.name or "").startswith("cnntui:"):
            self.notify(f"the browser did not get {event.name[7:]}: {event.exception}",
                        severity="error", timeout=8)


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content  # text as UTF-8


def _write_to(content: str | bytes, path: Path) -> Path:
    path.write_bytes(_as_bytes(content))
    return path


def _write_new_file(folder: Path, stem: str, suffix: str, content: str | bytes) -> Path:
    """Write ``content`` to ``folder/stem+suffix``, or ``stem-2+suffix`` and so on if that
    exists: a temp file renamed into place, so a file is never overwritten nor left
    half-written."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_as_bytes(content))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; open() would not
        n = 1
        while (path := folder / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}").exists():
            n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _failure(e: Exception) -> str:
    """The reference state an exception of the reference leads to: one sentence."""
    if isinstance(e, reference_process.ReferenceUnavailable):
        return f"off: {e}"
    if isinstance(e, ImportError) and reference_process.torch_missing(e):
        return f"off: {reference_process.NO_TORCH}"
    if isinstance(e, reference_process.HelperFailed):
        return f"failed: {e}"
    return f"failed: {type(e).__name__}: {e}"


def freeze_heap() -> None:
    """Move every object alive now (the imports, the data, PyTorch once loaded) out of the
    collector's sight: a full collection then scans only what the session made since, instead
    of 125-145 ms over PyTorch's objects in the middle of a step. (No collection first: that
    would be the very pause this avoids.)"""
    gc.freeze()


def run_app(args: argparse.Namespace) -> int:
    """``cnntui`` without a subcommand. Weight, data, image and index errors raise before the
    app starts (``cnntui.cli`` prints them as one sentence and exits 1)."""
    from cnntui.data import load_sample, weights_data

    spec = args.weights or model.PRETRAINED
    data_spec, image = getattr(args, "data", "digits"), getattr(args, "image", None)
    label = getattr(args, "label", None)
    arch = model.architecture_of(spec, getattr(args, "arch", None))
    params, desc = model.weights_from(spec, arch, weights_data(data_spec, image))
    data = load_dataset(data_spec)
    index, notice, sample = getattr(args, "index", None), None, None
    if image is not None:
        sample = load_sample(data_spec, None, image, label)
        if label is None:
            notice = (f"{sample.name} has no label, so the backward pass goes towards the "
                      f"predicted class; --label N sets one")
    elif index is None:  # a digit whose backward pass shows something, not one at 100%
        index, confidence = model.least_sure_test_digit(arch, params, data)
        notice = (f"{data.title} #{index}: the test digit the network is least sure about "
                  f"(its prediction at {confidence:.0%}); --index N opens another")
    if sample is None:
        sample = data.sample(index, -1 if label is None else label)
    app = CnnApp(params, desc, index=index or 0, color=getattr(args, "color", "auto"),
                 arch=arch, notice=notice, data=data, sample=sample,
                 reference="no-torch" if getattr(args, "no_torch", False) else "process")
    freeze_heap()
    result = app.run()
    return int(result or 0) if app.return_code in (None, 0) else int(app.return_code)
