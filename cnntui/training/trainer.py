"""Minibatch training of the from-scratch network on the digits' fixed split (NumPy only, no UI).

A ``Trainer`` owns the parameters, the optimiser and the controls. ``run()`` trains on the
training split and evaluates on the test split, reporting progress as events to a callback, which
the ``cnntui train`` command and the training screen both consume. The controls (pause, resume,
stop, learning rate, optimiser, reset, save, a copy of the weights) are safe to call from another
thread; a run picks changes up between batches. Every run is seeded: the same seed and settings
give a bit-identical run.
"""


from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnntui import model, ops
from cnntui.data import Dataset, load_digits
from cnntui.model import SIMPLE_CNN, Architecture
from cnntui.training.augment import epoch_plan, shift_images
from cnntui.training.config import (
    DIVERGED_LOSS,
    NUM_CLASSES,
    OPTIMIZERS,
    SMOOTHING_IMAGES,
    ConfigError,
    TrainConfig,
)
from cnntui.training.events import (
    BatchEnd,
    Callback,
    EpochEnd,
    Evaluation,
    Reset,
    RunEnd,
    TrainResult,
)
from cnntui.training.optimizers import make_optimizer

if TYPE_CHECKING:

    pass


# ---- the trainer -----------------------------------------------------------------------------


def evaluate(params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
             indices: np.ndarray, arch: Architecture = SIMPLE_CNN,
             chunk: int = 512) -> Evaluation:
    """Forward ``x`` in chunks and score it: mean loss, accuracy, confusion matrix."""
    probs = np.concatenate([model.forward(arch, params, x[i:i + chunk]).acts["probs"]
                            for i in range(0, len(x), chunk)])
    picked = probs[np.arange(len(x)), labels]
    loss = float(np.mean(-np.log(picked + ops.LOG_EPS)))  # the lesson's loss
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return Evaluation(loss, float(np.mean(predicted == labels)), confusion,
                      np.asarray(indices), np.asarray(labels), predicted)


def start_params(arch: Architecture, params: dict[str, np.ndarray] | None,
                 dtype: str) -> dict[str, np.ndarray]:
    """What a trainer starts from: ``params``, or the seed initialisation, in ``dtype``."""
    return model.cast_params(params if params is not None else arch.init_params(), dtype)


class Trainer:
    """Trains ``arch`` on a data set (default: the digits). Typical use from a UI thread worker::

        trainer = Trainer(TrainConfig(epochs=10))
        result = trainer.run(callback)       # blocks, in a worker thread; events to callback
        trainer.pause(); trainer.resume(); trainer.stop()       # from the UI thread
        trainer.scale_lr(2); trainer.switch_optimizer(); trainer.reset()
        trainer.params("float64")            # a copy of the current weights, any time
        trainer.save("weights.npz")          # atomic, with metadata

    ``train_idx``/``test_idx`` default to the fixed split; a subset makes quick checks quick."""

    def __init__(self, config: TrainConfig | None = None, *, arch: Architecture = SIMPLE_CNN,
                 params: dict[str, np.ndarray] | None = None, data: Dataset | None = None,
                 train_idx: np.ndarray | None = None, test_idx: np.ndarray | None = None) -> None:
        config = config or TrainConfig()
        config.validate()
        self.arch = arch
        self._config = config
        self.data = data = data or load_digits()
        self.train_idx = np.asarray(data.train_idx if train_idx is None else train_idx)
        self.test_idx = np.asarray(data.test_idx if test_idx is None else test_idx)
        self._labels = data.labels
        if len(self.train_idx) == 0 or len(self.test_idx) == 0:
            raise ConfigError("training needs at least one training and one test digit")
        self._cast_data()
        self._params = start_params(arch, params, config.dtype)
        self._optimizer = make_optimizer(config, arch)
        self._lock = threading.Lock()  # guards settings, weights and history against the controls
        self._resets = 0  # counts reset() calls, so a run notices one
        self._go = threading.Event()  # cleared while paused
        self._go.set()
        self._stop = threading.Event()
        self._running = False
        self.epoch = 0  # epochs completed in the current (or last) run
        self.history: list[EpochEnd] = []
        self.epoch_params: dict[str, np.ndarray] | None = None  # at the last completed epoch
        self.last_evaluation: Evaluation | None = None

    def _cast_data(self) -> None:
        # the training images are prepared a batch at a time (MNIST's 60,000 in float64 would
        # hold 380 MB); the test images once
        self._y_train = self._labels[self.train_idx]
        self._x_test = self.data.prepared(self.test_idx, self._config.dtype)
        self._y_test = self._labels[self.test_idx]

    # -- state, readable from any thread --

    @property
    def config(self) -> TrainConfig:
        """The current settings (``lr`` and ``optimizer`` change with the controls)."""
        return self._config

    @property
    def lr(self) -> float:
        """The base learning rate; the schedule scales it (``BatchEnd.lr`` is what a batch used)."""
        return self._config.lr

    @property
    def running(self) -> bool:
        return self._running

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    @property
    def stopping(self) -> bool:
        """``stop()`` was called and the run has not ended yet."""
        return self._running and self._stop.is_set()

    def params(self, dtype: str | None = None) -> dict[str, np.ndarray]:
        """A copy of the current weights, optionally cast (the stepper wants float64). Each update
        publishes a new dict, so this is always the weights between two batches."""
        params = self._params
        return {k: np.array(v, dtype=dtype or v.dtype) for k, v in params.items()}

    # -- controls, callable from any thread --
    # They change the settings and weights at once (so a paused screen shows the change); the run
    # picks them up at its next batch and throws away a batch computed from reset weights.

    def pause(self) -> None:
        """Pause after the current batch; ``resume`` continues, ``stop`` ends the run."""
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        """Cancel the run after the current batch (a paused run stops at once)."""
        self._stop.set()
        self._go.set()

    def close(self) -> None:
        """Done with this trainer: stop a run (``TrainerProcess`` also ends its process)."""
        self.stop()

    def set_lr(self, lr: float) -> float:
        """Set the base learning rate (the schedule still scales it); returns it."""
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError("the learning rate must be a positive number")
        with self._lock:
            self._config = replace(self._config, lr=float(lr))
        return float(lr)

    def scale_lr(self, factor: float) -> float:
        """Multiply the base learning rate (``2`` doubles, ``0.5`` halves); returns the new one."""
        with self._lock:
            lr = self._config.lr * factor
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError("the learning rate must be a positive number")
            self._config = replace(self._config, lr=lr)
        return lr

    def set_optimizer(self, name: str) -> None:
        """Switch to ``sgd`` or ``adam``; the new optimiser starts with empty state."""
        if name not in OPTIMIZERS:
            raise ConfigError(f"the optimiser must be one of {', '.join(OPTIMIZERS)}")
        with self._lock:
            if name != self._config.optimizer:
                self._config = replace(self._config, optimizer=name)
                self._optimizer = make_optimizer(self._config, self.arch)

    def switch_optimizer(self) -> str:
        """Switch to the other optimiser (adam <-> sgd); returns its name."""
        with self._lock:
            name = OPTIMIZERS[(OPTIMIZERS.index(self._config.optimizer) + 1) % len(OPTIMIZERS)]
        self.set_optimizer(name)
        return name

    def reset(self) -> None:
        """Back to the seed initialisation with fresh optimiser state and no history; a running
        run restarts at epoch 1 (after a ``Reset`` event)."""
        with self._lock:
            self._params = start_params(self.arch, None, self._config.dtype)
            self._optimizer = make_optimizer(self._config, self.arch)
            self._resets += 1
            self.epoch, self.history, self.epoch_params = 0, [], None
            self.last_evaluation = None

    # -- evaluation and checkpoints --

    def evaluate(self, params: dict[str, np.ndarray] | None = None) -> Evaluation:
        """Score ``params`` (default: the current weights) on the test split."""
        params = self._params if params is None else model.cast_params(params, self._config.dtype)
        return evaluate(params, self._x_test, self._y_test, self.test_idx, self.arch)

    def save(self, path: str | Path, params: dict[str, np.ndarray] | None = None,
             epoch: int | None = None) -> Path:
        """Write ``params`` (default: the current weights) atomically with their metadata: the
        architecture, epoch, optimiser settings and their test accuracy (measured now). Safe
        while a run goes on; raises OSError if the path cannot be written."""
        params = self.params() if params is None else params
        ev = self.evaluate(params)
        return model.save_weights(
            path, params, self.arch,
            epoch=self.epoch if epoch is None else epoch,
            test_accuracy=ev.accuracy, test_loss=ev.loss, test_size=len(self.test_idx),
            train_size=len(self.train_idx), data=self.data.name, **self._config.metadata(),
        )

    # -- the run --

    def run(self, callback: Callback | None = None) -> TrainResult:
        """Train ``config.epochs`` epochs (a new schedule) from the current weights; blocks until
        finished, stopped or diverged. Events go to ``callback`` in this thread, the last one a
        ``RunEnd``. One run at a time."""
        with self._lock:
            if self._running:
                raise RuntimeError("this trainer is already running")
            self._running = True
            self._stop.clear()
        emit = callback or (lambda event: None)
        try:
            with np.errstate(all="ignore"):  # overflow is caught below, as divergence
                result = self._run(emit)
        finally:
            self._running = False
        emit(RunEnd(result))
        return result

    def _run(self, emit: Callback) -> TrainResult:
        started = time.perf_counter()
        paused_total = 0.0
        with self._lock:
            self.epoch, self.history, self.epoch_params = 0, [], None
            resets = self._resets
            good = self._params  # the last weights that gave a sane batch loss
        smoothed = limit = None  # the smoothed loss, and the most it may reach
        updates = 0
        n = len(self.train_idx)
        status, message = "finished", ""
        epoch = 0
        while epoch < self._config.epochs and status == "finished":
            cfg = self._config
            batches = -(-n // cfg.batch_size)
            order, shifts = epoch_plan(cfg.seed, epoch, n, cfg.max_shift if cfg.augment else 0)
            epoch_start = time.perf_counter()
            epoch_paused = compute = 0.0
            loss_sum = correct = seen = 0
            rate = 0.0
            for b in range(batches):
                if not self._go.is_set():
                    t = time.perf_counter()
                    self._go.wait()
                    epoch_paused += time.perf_counter() - t
                if self._stop.is_set():
                    status = "cancelled"
                    break
                with self._lock:
                    cfg, optimizer, params = self._config, self._optimizer, self._params
                    if self._resets != resets:
                        break
                t0 = time.perf_counter()
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x = shift_images(self.data.prepared(self.train_idx[idx], cfg.dtype), shifts[idx],
                                 cfg.max_shift)
                y = self._y_train[idx]
                p = model.loss_and_grads(self.arch, params, x, y)
                grads = {k: p.grads["d" + k] for k in params}
                lr = cfg.lr * cfg.lr_factor((epoch * batches + b) / (cfg.epochs * batches))
                norms = {k: math.sqrt(float(np.vdot(g, g))) for k, g in grads.items()}
                new = None
                # (a sum is NaN or Inf when any of its terms is: cheaper than np.isfinite().all())
                finite = math.isfinite(p.loss + sum(norms.values()))
                if finite:
                    if smoothed is None:  # a bad start may begin above the limit, not rise
                        smoothed = p.loss
                        limit = max(DIVERGED_LOSS, p.loss)
                    smoothed += min(1.0, len(idx) / SMOOTHING_IMAGES) * (p.loss - smoothed)
                if finite and smoothed <= limit:
                    if p.loss <= limit:
                        good = params
                    new = optimizer.step(params, grads, lr)
                    if not math.isfinite(sum(float(np.sum(v)) for v in new.values())):
                        new = None
                with self._lock:
                    if self._resets != resets:
                        break  # reset during this batch: drop it
                    if new is None:
                        # these weights came from updates that overshot: go back to the last
                        # good ones, and start the optimiser afresh (its state is poisoned)
                        self._params = good
                        self._optimizer = make_optimizer(self._config, self.arch)
                    else:
                        self._params = new
                if new is None:
                    status = "diverged"
                    message = _divergence_message(epoch + 1, b + 1, p.loss, smoothed, lr,
                                                  updates)
                    break
                updates += 1
                dt = time.perf_counter() - t0
                compute += dt
                rate = len(idx) / dt if rate == 0 else 0.8 * rate + 0.2 * len(idx) / dt
                loss_sum += p.loss * len(idx)
                correct += int(np.sum(p.acts["probs"].argmax(axis=1) == y))
                seen += len(idx)
                emit(BatchEnd(epoch + 1, cfg.epochs, b + 1, batches, epoch * batches + b + 1,
                              float(p.loss), lr, optimizer.name, rate, norms))
            paused_total += epoch_paused
            if status != "finished":
                break
            end = None
            if self._resets == resets:
                params = self._params
                ev = evaluate(params, self._x_test, self._y_test, self.test_idx, self.arch)
                end = EpochEnd(epoch + 1, cfg.epochs, loss_sum / seen, correct / seen, ev.loss,
                               ev.accuracy, time.perf_counter() - epoch_start - epoch_paused,
                               seen / compute, lr)
                with self._lock:
                    if self._resets == resets:
                        self.epoch, self.epoch_params = epoch + 1, params
                        self.last_evaluation = ev
                        self.history.append(end)
                    else:
                        end = None
            if end is not None:
                emit(end)
                epoch += 1
                continue
            # the weights were reset: start again at epoch 1
            with self._lock:
                resets, good = self._resets, self._params
            smoothed = limit = None
            updates = 0
            epoch = 0
            emit(Reset())
        ev = self.last_evaluation = self.evaluate()
        if status == "finished":
            message = (f"trained {self.epoch} epochs: test accuracy {ev.accuracy:.2%} "
                       f"({int(ev.confusion.trace())}/{len(self.test_idx)})")
        elif status == "cancelled":
            message = f"stopped after {self.epoch} complete epochs"
        return TrainResult(status, message, self.epoch, list(self.history), ev,
                           time.perf_counter() - started - paused_total)


def _divergence_message(epoch: int, batch: int, loss: float, smoothed: float | None, lr: float,
                        updates: int) -> str:
    """One sentence that blames what made the run stop."""
    if updates == 0 and not math.isfinite(loss):  # no update yet: the rate played no part
        return (f"the starting weights give a non-finite loss ({loss:.4g}) on the first batch, "
                f"so there is nothing to train from; start from other weights")
    mean = "" if smoothed in (None, loss) else f", {smoothed:.4g} over recent images"
    return (f"training diverged at epoch {epoch}, batch {batch} (loss {loss:.4g}{mean}, chance "
            f"is {math.log(NUM_CLASSES):.2f}) with learning rate {lr:.4g}; kept the last good "
            f"weights; try a smaller learning rate")


