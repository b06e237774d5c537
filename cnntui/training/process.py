"""A ``Trainer`` in a child process, behind the same interface, for the training screen.

In one process the trainer's Python code and the UI share one GIL: keys waited for batches and
frames slowed training. Here the child owns the trainer and does all the maths; the parent holds
what it needs to draw without asking (the settings, whether it is paused, the last evaluation)
and asks the child for the rest (the weights, a save). Two socket pairs connect them: a control
one (a request, then its reply, one at a time) and an event one (a run's events, in order).

The child ends when the parent closes its sockets, which also happens when the parent dies.
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from cnntui.model import SIMPLE_CNN, Architecture
from cnntui.training.config import TrainConfig
from cnntui.training.events import Callback, EpochEnd, Evaluation, Reset, RunEnd, TrainResult
from cnntui.training.trainer import Trainer, start_params

# the controls that change the settings: the child replies with its new config after each
_SETTINGS = ("set_lr", "scale_lr", "set_optimizer", "switch_optimizer")


class TrainerProcess:
    """Trains like ``Trainer`` (same constructor, controls, ``run`` and ``save``), in a child
    process. ``run`` blocks the calling thread (a worker) only in a socket read, which releases
    the GIL; every other method is a short request answered between two batches' Python code."""

    def __init__(self, config: TrainConfig | None = None, *, arch: Architecture = SIMPLE_CNN,
                 params: dict[str, np.ndarray] | None = None, data=None,  # noqa: ANN001
                 train_idx: np.ndarray | None = None, test_idx: np.ndarray | None = None) -> None:
        from cnntui.data import load_digits

        config = config or TrainConfig()
        config.validate()
        self.arch = arch
        self.data = data = data or load_digits()
        self.train_idx = np.asarray(data.train_idx if train_idx is None else train_idx)
        self.test_idx = np.asarray(data.test_idx if test_idx is None else test_idx)
        self._config = config
        self._paused = False
        self._running = False
        self._stopping = False
        self.last_evaluation: Evaluation | None = None
        self.epoch = 0  # epochs completed in the current (or last) run, as Trainer.epoch
        # the weights as they are, while the child cannot have changed them (no run since)
        self._params: dict[str, np.ndarray] | None = start_params(arch, params, config.dtype)
        self._lock = threading.Lock()  # one request and its reply at a time
        control, child_control = socket.socketpair()
        events, child_events = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cnntui.training.process",
             str(child_control.fileno()), str(child_events.fileno())],
            pass_fds=(child_control.fileno(), child_events.fileno()),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        child_control.close()
        child_events.close()
        self._control = Connection(control.detach())
        self._events = Connection(events.detach())
        setup = pickle.dumps((config, arch, params, data, self.train_idx, self.test_idx),
                             protocol=pickle.HIGHEST_PROTOCOL)
        # the data set can be large (MNIST): send it while the child starts, off this thread;
        # the first request waits for it (the lock)
        self._lock.acquire()
        threading.Thread(target=self._send_setup, args=(setup,), daemon=True).start()

    def _send_setup(self, setup: bytes) -> None:
        try:
            self._control.send_bytes(setup)
        except OSError:
            pass  # the child is gone: the first request says so
        finally:
            self._lock.release()

    # -- talking to the child --

    def _request(self, name: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._control.send((name, args))
                ok, value = self._control.recv()
            except (EOFError, OSError) as e:
                raise RuntimeError(self._gone()) from e
        if not ok:
            raise value
        return value

    def _gone(self) -> str:
        try:  # its sockets close as it dies: a moment before it can be reaped
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        how = "" if code is None else f" (exit status {code})"
        return f"the training process ended unexpectedly{how}"

    def close(self) -> None:
        """End the child (a run stops after its batch); waits for it briefly."""
        for conn in (self._control, self._events):
            conn.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None and self._proc.poll() is None:
            self.close()

    # -- state, without asking the child --

    @property
    def config(self) -> TrainConfig:
        return self._config

    @property
    def lr(self) -> float:
        return self._config.lr

    @property
    def running(self) -> bool:
        return self._running

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._running and self._stopping

    def params(self, dtype: str | None = None) -> dict[str, np.ndarray]:
        params = self._params
        if params is None:
            return self._request("params", dtype)
        return {k: np.array(v, dtype=dtype or v.dtype) for k, v in params.items()}

    # -- controls --

    def pause(self) -> None:
        self._request("pause")
        self._paused = True

    def resume(self) -> None:
        self._request("resume")
        self._paused = False

    def stop(self) -> None:
        if self._proc.poll() is not None:
            return  # nothing runs in a child that has gone
        self._request("stop")
        self._paused = False
        self._stopping = True

    def _setting(self, name: str, *args: Any) -> Any:
        value, self._config = self._request(name, *args)
        return value

    def set_lr(self, lr: float) -> float:
        return self._setting("set_lr", lr)

    def scale_lr(self, factor: float) -> float:
        return self._setting("scale_lr", factor)

    def set_optimizer(self, name: str) -> None:
        self._setting("set_optimizer", name)

    def switch_optimizer(self) -> str:
        return self._setting("switch_optimizer")

    def reset(self) -> None:
        self._request("reset")
        self._params = None if self._running else start_params(self.arch, None,
                                                              self._config.dtype)
        self.last_evaluation, self.epoch = None, 0

    def evaluate(self, params: dict[str, np.ndarray] | None = None) -> Evaluation:
        return self._request("evaluate", params)

    def save(self, path, params=None, epoch=None):  # noqa: ANN001, ANN201 - as Trainer.save
        return self._request("save", path, params, epoch)

    # -- the run --

    def run(self, callback: Callback | None = None) -> TrainResult:
        """As ``Trainer.run``: blocks until the run ends, its events to ``callback`` in this
        thread."""
        emit = callback or (lambda event: None)
        self._params = None
        self._running, self._stopping = True, False
        try:
            self._request("run")
            while True:
                try:
                    event = self._events.recv()
                except (EOFError, OSError) as e:
                    raise RuntimeError(self._gone()) from e
                if isinstance(event, str):  # the child's run failed: a bug, in one sentence
                    raise RuntimeError(event)
                if isinstance(event, (EpochEnd, Reset)):
                    self.epoch = event.epoch if isinstance(event, EpochEnd) else 0
                if isinstance(event, RunEnd):
                    self.epoch = event.result.epochs_completed
                    self.last_evaluation = event.result.evaluation
                    self._params = self._request("params", None)
                    break
                emit(event)
        finally:
            self._running = self._stopping = self._paused = False
        emit(event)
        return event.result


def _serve(control: Connection, events: Connection) -> None:
    """The child: build the trainer, then answer requests until the parent goes."""
    config, arch, params, data, train_idx, test_idx = pickle.loads(control.recv_bytes())
    trainer = None
    run: threading.Thread | None = None
    while True:
        try:
            name, args = control.recv()
        except (EOFError, OSError):
            break
        try:
            if trainer is None:  # built at the first request, so its errors reach the parent
                trainer = Trainer(config, arch=arch, params=params, data=data,
                                  train_idx=train_idx, test_idx=test_idx)
            if name == "run":
                if trainer.running:
                    raise RuntimeError("this trainer is already running")
                run = threading.Thread(target=_run, args=(trainer, events), daemon=True)
                run.start()
                value = None
            else:
                value = getattr(trainer, name)(*args)
                if name in _SETTINGS:
                    value = (value, trainer.config)
            reply = (True, value)
        except Exception as e:  # noqa: BLE001 - the parent raises it
            reply = (False, e)
        try:
            control.send(reply)
        except pickle.PicklingError:
            control.send((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
        except OSError:
            break
    if trainer is not None:
        trainer.stop()
    if run is not None:
        run.join()


def _run(trainer: Trainer, events: Connection) -> None:
    def send(event: object) -> None:
        try:
            events.send(event)
        except OSError:
            trainer.stop()  # the parent has gone: finish the batch and end

    try:
        trainer.run(send)
    except Exception as e:  # noqa: BLE001 - a bug: the parent's run() says it in one sentence
        send(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    from cnntui.cli import limit_threads

    limit_threads()  # the parent's CNNTUI_THREADS, as for every command
    # a request waits for the training thread to let go of the GIL: every 1 ms, not 5, so a
    # key that asks the child (a learning rate, the weights) is answered within a frame
    sys.setswitchinterval(0.001)
    _serve(Connection(int(sys.argv[1])), Connection(int(sys.argv[2])))
