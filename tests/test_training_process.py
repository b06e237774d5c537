"""The trainer in a child process (``TrainerProcess``, the training screen's default): the same
run bit for bit as ``Trainer`` in this process, the controls during a run, errors raised here in
one sentence, and a child that never outlives its parent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnntui.data import load_digits
from cnntui.model import load_weights
from cnntui.training import BatchEnd, ConfigError, EpochEnd, RunEnd, TrainConfig, Trainer
from cnntui.training.process import TrainerProcess

SMALL = 256
CONFIG = TrainConfig(epochs=2, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture
def remote(digits):
    trainer = TrainerProcess(CONFIG, data=digits, train_idx=digits.train_idx[:SMALL])
    yield trainer
    trainer.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, seconds: float = 20) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_run_in_the_child_equals_the_run_in_this_process(digits, remote):
    local = Trainer(CONFIG, data=digits, train_idx=digits.train_idx[:SMALL])
    local_events, remote_events = [], []
    expected = local.run(local_events.append)
    result = remote.run(remote_events.append)
    assert [type(e) for e in remote_events] == [type(e) for e in local_events]
    assert [e.loss for e in remote_events if isinstance(e, BatchEnd)] == \
        [e.loss for e in local_events if isinstance(e, BatchEnd)]
    assert isinstance(remote_events[-1], RunEnd) and result.message == expected.message
    assert [e.test_loss for e in result.history] == [e.test_loss for e in expected.history]
    assert remote.epoch == local.epoch == 2
    ours, theirs = remote.params(), local.params()
    assert list(ours) == list(theirs)
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    assert remote.params("float32")["W1"].dtype == np.float32
    np.testing.assert_array_equal(remote.last_evaluation.confusion,
                                  local.last_evaluation.confusion)


def test_before_a_run_the_weights_need_no_answer_from_the_child(digits):
    local = Trainer(CONFIG, data=digits)
    remote = TrainerProcess(CONFIG, data=digits)
    try:
        start = time.perf_counter()
        params = remote.params()
        assert time.perf_counter() - start < 0.05  # no round trip: the child may still start
        for k, v in local.params().items():
            np.testing.assert_array_equal(params[k], v, err_msg=k)
    finally:
        remote.close()


def test_controls_reach_the_child_and_its_errors_are_raised_here(remote, tmp_path):
    assert remote.scale_lr(2) == pytest.approx(2 * CONFIG.lr) and \
        remote.lr == pytest.approx(2 * CONFIG.lr)
    assert remote.switch_optimizer() == "sgd" and remote.config.optimizer == "sgd"
    with pytest.raises(ConfigError, match="learning rate must be a positive number"):
        remote.set_lr(float("nan"))
    with pytest.raises(ConfigError, match="optimiser must be one of"):
        remote.set_optimizer("rmsprop")
    assert remote.config.optimizer == "sgd"  # a refused change changes nothing
    events = []
    result = remote.run(events.append)
    assert {e.optimizer for e in events if isinstance(e, BatchEnd)} == {"sgd"}
    saved = remote.save(tmp_path / "w.npz")
    params, meta = load_weights(saved)
    for k, v in remote.params().items():
        np.testing.assert_array_equal(params[k], v, err_msg=k)
    assert meta["optimizer"] == "sgd" and meta["epoch"] == result.epochs_completed
    with pytest.raises(OSError):
        remote.save(saved / "under-a-file.npz")  # its folder is a file


def test_pause_stop_and_reset_during_a_run(digits):
    import threading

    remote = TrainerProcess(TrainConfig(epochs=100, batch_size=32, seed=0), data=digits,
                            train_idx=digits.train_idx[:SMALL])
    events: list[object] = []
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=remote.run(events.append)))
    try:
        worker.start()
        assert wait_until(lambda: len(events) >= 3)
        remote.pause()
        assert remote.paused
        time.sleep(0.3)  # the batch in flight finishes
        n = len(events)
        time.sleep(0.3)
        assert len(events) == n  # nothing trains while paused
        remote.resume()
        assert wait_until(lambda: len(events) > n + 2)
        remote.reset()
        assert wait_until(lambda: any(type(e).__name__ == "Reset" for e in events))
        assert wait_until(lambda: any(isinstance(e, EpochEnd) for e in events))
        remote.stop()
        assert remote.stopping
        worker.join(20)
        assert not worker.is_alive() and box["result"].status == "cancelled"
        assert not remote.running and not remote.stopping
    finally:
        remote.close()


def test_a_child_that_dies_mid_run_gives_one_sentence(digits):
    import threading

    remote = TrainerProcess(TrainConfig(epochs=100, batch_size=32, seed=0), data=digits,
                            train_idx=digits.train_idx[:SMALL])
    events: list[object] = []
    box = {}

    def run() -> None:
        try:
            remote.run(events.append)
        except RuntimeError as e:
            box["error"] = str(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert wait_until(lambda: len(events) >= 2)
    remote._proc.kill()
    worker.join(20)
    assert box["error"].startswith("the training process ended unexpectedly (exit status -9")
    with pytest.raises(RuntimeError, match="ended unexpectedly"):
        remote.params()
    remote.stop()  # nothing to stop: no error
    remote.close()


def test_the_child_ends_with_its_parent_even_when_the_parent_is_killed(tmp_path):
    # a parent that starts a run and is then killed: the child sees its sockets close
    script = textwrap.dedent("""
        import sys, threading
        from cnntui.training import TrainConfig
        from cnntui.training.process import TrainerProcess
        remote = TrainerProcess(TrainConfig(epochs=1000, batch_size=32))
        threading.Thread(target=remote.run, daemon=True).start()
        remote.params()
        print(remote._proc.pid, flush=True)
        sys.stdin.read()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    assert wait_until(lambda: not alive(child) or _zombie(child))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_close_ends_the_child(remote):
    pid = remote._proc.pid
    remote.reset()  # the child is up
    remote.close()
    assert remote._proc.returncode == 0 and not alive(pid)
