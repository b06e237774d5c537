"""The trainer: determinism, learning, PyTorch agreement, divergence, controls, checkpoints, and
the ``cnntui train`` command. Runs use a subset of the training split to stay fast."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnntui import model
from cnntui.data import load_digits
from cnntui.model import SIMPLE_CNN, WeightsError
from cnntui.training import (
    BatchEnd,
    EpochEnd,
    Reset,
    RunEnd,
    TrainConfig,
    Trainer,
)
from cnntui.training.augment import epoch_plan, shift_images
from cnntui.training.torch_twin import torch_train

ROOT = Path(__file__).resolve().parent.parent
SMALL = 256  # training digits for the quick runs


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def small(digits, **changes) -> Trainer:
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, **changes})
    return Trainer(config, data=digits, train_idx=digits.train_idx[:SMALL])


def assert_params_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- training ---------------------------------------------------------------------------------


def test_same_seed_gives_a_bit_identical_run(digits):
    runs = []
    for seed in (3, 3, 4):
        trainer = small(digits, seed=seed)
        losses = []
        trainer.run(lambda e, losses=losses: isinstance(e, BatchEnd) and losses.append(e.loss))
        runs.append((trainer.params(), losses))
    assert_params_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert runs[0][1] != runs[2][1]


def test_untrained_loss_is_chance_level(digits):
    """A network that predicts every class alike scores exactly ln(10) = 2.30. The lesson's
    He-scaled initialisation is at chance accuracy but starts higher, at 3.64 (train) and 3.59
    (test): the pooled features are all positive, so W3's column sums give each class a
    different offset (logits' std ~1.9 per image)."""
    uniform = dict(SIMPLE_CNN.init_params(), W3=np.zeros((392, 10)))
    trainer = small(digits, epochs=1, optimizer="sgd", momentum=0.0)
    assert trainer.evaluate(uniform).loss == pytest.approx(math.log(10), abs=1e-12)
    first = []
    Trainer(trainer.config, params=uniform, data=digits, train_idx=trainer.train_idx).run(
        lambda e: isinstance(e, BatchEnd) and e.step == 1 and first.append(e.loss))
    assert first[0] == pytest.approx(math.log(10), abs=1e-12)

    untrained = trainer.evaluate()
    assert abs(untrained.accuracy - 0.1) < 0.05
    assert math.log(10) < untrained.loss < math.log(10) + 1.5
    assert untrained.loss == pytest.approx(3.588, abs=0.01)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_short_run_lowers_the_loss(digits, dtype):
    trainer = small(digits, dtype=dtype)
    before = trainer.evaluate()
    events = []
    result = trainer.run(events.append)
    assert result.status == "finished"
    assert all(v.dtype == np.dtype(dtype) for v in trainer.params().values())
    assert result.evaluation.loss < before.loss - 1.0
    assert result.evaluation.accuracy > 0.6
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert np.mean([e.loss for e in batches[-4:]]) < np.mean([e.loss for e in batches[:4]])
    assert set(batches[0].grad_norms) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert all(b.images_per_s > 0 for b in batches)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == [1, 2] and isinstance(events[-1], RunEnd)


def test_end_of_run_confusion_matrix_and_misclassified(digits):
    result = small(digits, epochs=1).run()
    ev = result.evaluation
    assert ev.confusion.shape == (10, 10) and ev.confusion.sum() == len(digits.test_idx)
    assert ev.accuracy == pytest.approx(np.trace(ev.confusion) / ev.confusion.sum())
    wrong = ev.misclassified
    assert len(wrong) == ev.confusion.sum() - np.trace(ev.confusion)
    assert set(wrong) <= set(digits.test_idx.tolist())
    assert result.to_json()["misclassified"] == wrong


def test_shifts_move_each_image_and_fill_with_its_background(rng):
    x = rng.random((5, 1, 28, 28))
    shifts = np.array([[0, 0], [2, -1], [-2, 2], [1, 1], [0, -2]])
    out = shift_images(x, shifts, 2)
    for n, (dy, dx) in enumerate(shifts):
        expected = np.full((28, 28), x[n].min())
        src = x[n, 0]
        ys, xs = slice(max(dy, 0), 28 + min(dy, 0)), slice(max(dx, 0), 28 + min(dx, 0))
        expected[ys, xs] = src[max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
        np.testing.assert_allclose(out[n, 0], expected, atol=1e-15)
    order, sh = epoch_plan(0, 1, 100, 2)
    assert sorted(order) == list(range(100)) and np.abs(sh).max() <= 2
    again = epoch_plan(0, 1, 100, 2)
    np.testing.assert_array_equal(order, again[0])
    np.testing.assert_array_equal(sh, again[1])


@pytest.mark.parametrize("changes", [
    # the check: plain SGD, no momentum, no augmentation
    dict(optimizer="sgd", momentum=0.0, augment=False, schedule="constant", lr=0.05),
    # and the defaults (Adam, cosine schedule, shifts) with weight decay
    dict(weight_decay=0.01),
    # and SGD with momentum, weight decay and the step schedule (it steps within the epoch)
    dict(optimizer="sgd", lr=0.05, weight_decay=1e-3, schedule="step"),
])
def test_numpy_training_matches_pytorch_for_an_epoch(digits, changes):
    """One full epoch of the training split (23 batches of 64) in float64, from the seed init."""
    config = TrainConfig(epochs=1, batch_size=64, dtype="float64", **changes)
    trainer = Trainer(config, data=digits)
    assert trainer.run().status == "finished"
    x, y = digits.images[digits.train_idx], digits.labels[digits.train_idx]
    theirs, _ = torch_train(config, SIMPLE_CNN.init_params(), x, y)
    ours = trainer.params()
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-10, err_msg=k)
        assert not np.allclose(ours[k], SIMPLE_CNN.init_params()[k])  # it did train


def test_schedules():
    cosine, step, constant = (TrainConfig(schedule=name) for name in ("cosine", "step", "constant"))
    assert [cosine.lr_factor(t) for t in (0, 0.5, 1)] == pytest.approx([1, 0.5, 0])
    assert [step.lr_factor(t) for t in (0, 0.49, 0.5, 0.74, 0.75, 1)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert constant.lr_factor(0.7) == 1


def test_batch_lr_follows_the_schedule(digits):
    trainer = small(digits, epochs=2, lr=0.004)
    lrs = []
    trainer.run(lambda e: isinstance(e, BatchEnd) and lrs.append((e.step, e.batches, e.lr)))
    total = 2 * lrs[0][1]
    for step, _, lr in lrs:
        assert lr == pytest.approx(0.004 * 0.5 * (1 + math.cos(math.pi * (step - 1) / total)))


# ---- divergence and the controls --------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_divergence_stops_with_a_message_and_keeps_the_last_good_weights(digits, optimizer):
    trainer = small(digits, lr=10.0, optimizer=optimizer)
    steps = []
    result = trainer.run(lambda e: isinstance(e, BatchEnd) and steps.append(e))
    assert result.status == "diverged"
    assert "diverged" in result.message and "learning rate" in result.message
    assert "\n" not in result.message
    params = trainer.params()
    assert all(np.isfinite(v).all() for v in params.values())
    # the weights are those that gave the last sane loss: they still score a sane loss
    assert trainer.evaluate().loss < 4 * math.log(10)
    assert len(steps) < 10


def test_batch_size_1_trains_through_single_confident_mistakes(digits):
    """One image's loss can exceed 4 ln 10 (the first Adam step alone gives 13 here) while the
    run learns: divergence is judged on the loss smoothed over recent images."""
    trainer = Trainer(TrainConfig(epochs=1, batch_size=1), data=digits,
                      train_idx=digits.train_idx[:SMALL])
    losses = []
    result = trainer.run(lambda e: isinstance(e, BatchEnd) and losses.append(e.loss))
    assert result.status == "finished", result.message
    assert max(losses) > 4 * math.log(10) and len(losses) == SMALL
    assert result.evaluation.accuracy > 0.5


@pytest.mark.parametrize("batch_size", [1, 16])
def test_a_far_too_large_lr_still_diverges_and_is_blamed(digits, batch_size):
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=10.0, schedule="constant")
    trainer = Trainer(config, data=digits, train_idx=digits.train_idx[:SMALL])
    result = trainer.run()
    assert result.status == "diverged"
    assert "learning rate 10" in result.message and "smaller learning rate" in result.message
    assert trainer.evaluate().loss < 4 * math.log(10)  # the last good weights


def test_weights_that_overflow_are_blamed_not_the_learning_rate(digits):
    params = SIMPLE_CNN.init_params()
    params["W1"] = params["W1"] * 1e300
    params["W2"] = params["W2"] * 1e300
    trainer = Trainer(TrainConfig(epochs=1), params=params, data=digits,
                      train_idx=digits.train_idx[:SMALL])
    result = trainer.run()
    assert result.status == "diverged" and "learning rate" not in result.message
    assert "starting weights" in result.message and "\n" not in result.message


def test_stop_cancels_between_batches(digits):
    trainer = small(digits, epochs=5)

    def on_event(e):
        if isinstance(e, BatchEnd) and e.step == 3:
            trainer.stop()

    events = []
    result = trainer.run(lambda e: (events.append(e), on_event(e)))
    assert result.status == "cancelled"
    assert result.epochs_completed == 0 and trainer.epoch_params is None
    assert sum(isinstance(e, BatchEnd) for e in events) == 3
    assert all(np.isfinite(v).all() for v in trainer.params().values())


def test_pause_resume_and_stop_from_another_thread(digits):
    trainer = small(digits, epochs=50)
    steps: list[int] = []
    reached = {n: threading.Event() for n in (2, 6)}

    def on_event(e):
        if isinstance(e, BatchEnd):
            steps.append(e.step)
            if len(steps) == 2:
                trainer.pause()  # as the UI would, from outside; here at a known point
            if len(steps) in reached:
                reached[len(steps)].set()

    results = []
    worker = threading.Thread(target=lambda: results.append(trainer.run(on_event)))
    worker.start()
    assert reached[2].wait(30)
    assert not reached[6].wait(0.3)  # paused: no batch runs
    assert trainer.paused and trainer.running and steps == [1, 2]
    # controls act at once while paused: the screen shows the reset weights straight away
    assert trainer.switch_optimizer() == "sgd" and trainer.config.optimizer == "sgd"
    trainer.reset()
    assert_params_equal(trainer.params(), SIMPLE_CNN.init_params())
    trainer.resume()
    assert reached[6].wait(30)  # (steps restart at 1 after the reset)
    trainer.stop()
    worker.join(30)
    assert not worker.is_alive() and not trainer.running
    assert results[0].status == "cancelled"
    assert steps[:3] == [1, 2, 1]


def test_controls_hammered_from_another_thread_leave_a_consistent_trainer(digits):
    trainer = small(digits, epochs=3)
    done = threading.Event()
    seen = []

    def ui():
        rng = np.random.default_rng(0)
        resets = 0
        while not done.is_set():
            time.sleep(0.001)  # a key press every millisecond or so
            action = rng.integers(5)
            if action == 0:
                trainer.scale_lr(float(rng.choice([0.5, 2.0])))
            elif action == 1:
                trainer.switch_optimizer()
            elif action == 2 and resets < 2 and rng.random() < 0.1:
                trainer.reset()
                resets += 1
            elif action == 3:
                params = trainer.params("float64")
                seen.append(all(np.isfinite(v).all() for v in params.values()))
            else:
                trainer.pause()
                trainer.resume()

    thread = threading.Thread(target=ui)
    thread.start()
    try:
        result = trainer.run()
    finally:
        done.set()
        thread.join(30)
    assert result.status in ("finished", "diverged")  # random lr doubling may overshoot
    assert all(seen) and len(seen) > 10
    assert all(np.isfinite(v).all() for v in trainer.params().values())
    assert len(result.history) == result.epochs_completed == trainer.epoch


def test_learning_rate_optimiser_and_reset_change_while_running(digits):
    trainer = small(digits, epochs=2, schedule="constant", lr=0.01)
    events = []

    def on_event(e):
        events.append(e)
        if isinstance(e, BatchEnd) and not any(isinstance(x, Reset) for x in events):
            if e.step == 2:
                assert trainer.scale_lr(2) == pytest.approx(0.02)
            if e.step == 3:
                trainer.set_optimizer("sgd")
            if e.step == 4:
                trainer.reset()

    result = trainer.run(on_event)
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert [b.lr for b in batches[:3]] == pytest.approx([0.01, 0.01, 0.02])
    assert [b.optimizer for b in batches[:4]] == ["adam"] * 3 + ["sgd"]
    first_reset = next(i for i, e in enumerate(events) if isinstance(e, Reset))
    after = [e for e in events[first_reset:] if isinstance(e, BatchEnd)]
    assert after[0].epoch == 1 and after[0].batch == 1  # restarted
    assert result.status == "finished" and result.epochs_completed == 2
    assert [e.epoch for e in result.history] == [1, 2]
    # and idle: reset goes straight back to the lesson's initialisation
    trainer.reset()
    assert_params_equal(trainer.params(), SIMPLE_CNN.init_params())
    with pytest.raises(ValueError, match="positive"):
        trainer.set_lr(-1)
    with pytest.raises(ValueError, match="optimiser"):
        trainer.set_optimizer("rmsprop")


def test_params_is_a_copy(digits):
    trainer = small(digits)
    p = trainer.params()
    p["W1"][:] = 0
    assert np.abs(trainer.params()["W1"]).sum() > 0


def test_bad_settings_are_refused_with_one_sentence():
    for changes, words in [({"lr": 0.0}, "--lr"), ({"epochs": 0}, "--epochs"),
                           ({"batch_size": 0}, "--batch-size"), ({"optimizer": "x"}, "optimiser"),
                           ({"lr": float("nan")}, "--lr")]:
        with pytest.raises(ValueError, match=words):
            Trainer(TrainConfig(**changes))


# ---- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_has_the_weights_and_metadata(digits, tmp_path):
    trainer = small(digits, epochs=1, optimizer="sgd", weight_decay=1e-4)
    trainer.run()
    path = trainer.save(tmp_path / "ckpt.npz")
    params, meta = model.load_weights(path)
    assert_params_equal(params, trainer.params())
    assert meta["epoch"] == 1 and meta["optimizer"] == "sgd" and meta["weight_decay"] == 1e-4
    assert meta["batch_size"] == 32 and meta["lr"] == TrainConfig().lr
    assert meta["test_accuracy"] == pytest.approx(trainer.evaluate().accuracy)
    with np.load(path, allow_pickle=False) as z:
        assert str(z["architecture"]) == SIMPLE_CNN.name
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temp file left behind


def test_corrupt_and_other_shape_checkpoints_are_refused_and_left_intact(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip file")
    other = tmp_path / "other.npz"
    wrong = dict(SIMPLE_CNN.init_params(), W3=np.zeros((100, 10)))
    np.savez(other, architecture=np.asarray(SIMPLE_CNN.name), **wrong)
    before = {p: p.read_bytes() for p in (corrupt, other)}
    with pytest.raises(WeightsError, match="not a readable"):
        model.load_weights(corrupt)
    with pytest.raises(WeightsError, match="W3 shaped"):
        model.load_weights(other)
    for path, words in [(corrupt, "not a readable"), (other, "W3 shaped")]:
        run = cli("train", "--weights", str(path), "--epochs", "1", "--out", str(path))
        assert run.returncode == 1
        assert words in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert "Traceback" not in run.stderr + run.stdout
    assert {p: p.read_bytes() for p in (corrupt, other)} == before


# ---- the shipped weights ----------------------------------------------------------------------


def readme_training_accuracy() -> float:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Training", 1)[1].split("\n## ", 1)[0]
    return float(re.search(r"test accuracy of ([\d.]+)%", section).group(1)) / 100


def test_shipped_weights_score_what_the_readme_states(digits):
    params, meta = model.load_weights(model.pretrained_path())
    result = Trainer(TrainConfig(), params=params, data=digits).evaluate()
    assert result.accuracy >= 0.985
    assert meta["test_accuracy"] == pytest.approx(result.accuracy, abs=1e-12)
    # the README rounds to 0.01%: at most 5e-5 away
    assert readme_training_accuracy() == pytest.approx(result.accuracy, abs=5e-5 + 1e-12)
    assert model.weights_from("pretrained")[1] == "pretrained"


# ---- the command ------------------------------------------------------------------------------


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "cnntui", *args], capture_output=True,
                          text=True, cwd=kwargs.pop("cwd", ROOT), env=env, timeout=120, **kwargs)


def test_cli_train_tiny_run_with_json_and_out(tmp_path):
    out = tmp_path / "w.npz"
    run = cli("train", "--epochs", "2", "--train-limit", "128", "--batch-size", "32",
              "--optimizer", "sgd", "--lr", "0.05", "--dtype", "float32", "--no-augment",
              "--seed", "1", "--weight-decay", "0.0001", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "finished" and len(doc["history"]) == 2
    assert doc["config"]["optimizer"] == "sgd" and doc["config"]["augment"] is False
    assert doc["config"]["dtype"] == "float32" and doc["saved"] == str(out)
    assert np.array(doc["confusion"]).shape == (10, 10) and len(doc["batch_losses"]) == 2 * 4
    _, meta = model.load_weights(out)
    assert meta["epoch"] == 2 and meta["test_accuracy"] == pytest.approx(doc["test_accuracy"])


def test_cli_train_prints_the_table_and_confusion_matrix():
    run = cli("train", "--epochs", "1", "--train-limit", "64")
    assert run.returncode == 0, run.stderr
    assert "train loss" in run.stdout and "test acc" in run.stdout
    assert "confusion matrix" in run.stdout and "test accuracy" in run.stdout


@pytest.mark.parametrize("args, status, words", [
    (["--bogus"], 2, "unrecognized arguments"),
    (["--optimizer", "rmsprop"], 2, "invalid choice"),
    (["--epochs", "many"], 2, "invalid int value"),
    (["--lr", "-1"], 1, "--lr must be a positive number"),
    (["--out", "/proc/no/such/w.npz"], 1, "cannot write --out"),
    (["--lr", "10", "--epochs", "1", "--batch-size", "16"], 1, "diverged"),
])
def test_cli_train_bad_input_gives_one_sentence_and_no_traceback(args, status, words):
    run = cli("train", "--train-limit", "64", *args)
    assert run.returncode == status
    assert words in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert len([line for line in run.stderr.splitlines() if "error" in line or "cnntui:" in line
                ]) == 1


def test_cli_divergence_leaves_an_existing_out_file_intact(tmp_path):
    out = tmp_path / "keep.npz"
    model.save_weights(out, SIMPLE_CNN.init_params())
    before = out.read_bytes()
    run = cli("train", "--lr", "10", "--train-limit", "64", "--batch-size", "16", "--out", str(out))
    assert run.returncode == 1 and "nothing was written" in run.stdout
    assert out.read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_ctrl_c_saves_the_last_complete_epoch(tmp_path):
    out = tmp_path / "stopped.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnntui", "train", "--epochs", "200", "--train-limit", "128",
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in proc.stdout:
            if line.strip().startswith("2/200"):  # two epochs done
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    assert "last complete epoch" in stdout
    _, meta = model.load_weights(out)
    assert 2 <= meta["epoch"] < 200
    assert [p.name for p in tmp_path.iterdir()] == ["stopped.npz"]


def test_bench_against_torch_reports_both_rates():
    """Smoke test of ``cnntui train --bench`` (one short round; the numbers are not asserted)."""
    from cnntui.training.torch_twin import bench_against_torch

    report = bench_against_torch(TrainConfig(dtype="float32"), epochs=1, rounds=1, threads=1)
    assert report["numpy_images_per_s"] > 0 and report["torch_images_per_s"] > 0
    assert report["threads"] == 1 and len(report["samples"]["torch"]) == 1
