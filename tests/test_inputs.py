"""Data sets behind one interface, inputs as Samples, unlabelled inputs, and the flags that choose
them (--data, --index, --image, --label) on every command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pilot_helpers import make_app

from cnntui import cli, data, model
from cnntui.data import Mnist, load_digits, load_sample, prepare_mnist, standardise
from cnntui.trace import build_trace, trace_sample
from cnntui.training import TrainConfig, Trainer


def tiny_mnist(n_train: int = 30, n_test: int = 10, seed: int = 0) -> Mnist:
    """A small MNIST-shaped data set: 0-255 pixels, a bright blob per class on a dark page."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n) % 10
    raw = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        raw[i, 4 + 2 * k:8 + 2 * k, 6:20] = 255
    return Mnist(raw, labels.astype(np.int64), n_train, "tests")


@pytest.fixture(scope="module")
def seed_params():
    return model.weights_from("seed")[0]


# ---- data sets --------------------------------------------------------------------------------


def test_mnist_inputs_are_pixels_over_255_standardised_per_image():
    ds = tiny_mnist()
    x = ds.prepared(np.array([3, 31]))
    for row, i in zip(x, (3, 31), strict=True):
        img = ds.raw[i] / 255.0
        expected = (img - img.mean()) / (img.std() + 1e-5)  # the lesson's formula, written out
        np.testing.assert_array_equal(row[0], expected)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float64
    assert ds.prepared(np.array([3]), "float32").dtype == np.float32
    image, label = ds.get(31)
    np.testing.assert_array_equal(image, x[1])
    assert label == 1


def test_mnist_split_is_its_own_training_digits_then_test_digits():
    ds = tiny_mnist(30, 10)
    np.testing.assert_array_equal(ds.train_idx, np.arange(30))
    np.testing.assert_array_equal(ds.test_idx, np.arange(30, 40))
    np.testing.assert_array_equal(ds.test_indices(), ds.test_idx)


def test_an_index_past_the_end_names_the_range_and_the_split():
    with pytest.raises(IndexError) as e:
        tiny_mnist(30, 10).get(40)
    msg = str(e.value)
    assert "no MNIST digit 40" in msg and "0 to 39" in msg and "30-39 its test digits" in msg
    with pytest.raises(IndexError, match="no digit 1797: choose an index from 0 to 1796$"):
        load_digits().get(1797)


def test_digits_prepared_are_the_digits_images():
    digits = load_digits()
    idx = np.array([5, 0, 1796])
    np.testing.assert_array_equal(digits.prepared(idx), digits.images[idx])
    assert digits.prepared(idx, "float32").dtype == np.float32
    np.testing.assert_array_equal(standardise(np.ones((2, 3, 3)))[:, 0], np.zeros((2, 3, 3)))


def test_one_digit_prepared_alone_is_the_same_as_all_of_them():
    """The app prepares only its first digit before the first paint (all 1797 took 47 ms); that
    digit is bit for bit the one preparing them all gives, and so are its traces."""
    digits = load_digits()
    fresh = data.Digits(digits.raw, digits.labels)
    alone = np.stack([fresh.get(i)[0] for i in range(len(fresh))])
    assert "images" not in fresh.__dict__  # nothing prepared them all
    assert alone.tobytes() == digits.images.tobytes()
    assert fresh.get(3)[1] == int(digits.labels[3]) and not fresh.get(3)[0].flags.writeable


def test_prepare_mnist_matches_standardise():
    raw = np.arange(784, dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(prepare_mnist(raw), standardise(raw / 255))


def test_unknown_data_set_is_one_sentence():
    with pytest.raises(ValueError, match="there is no data set 'cifar'"):
        data.load_dataset("cifar")


# ---- samples and unlabelled inputs -------------------------------------------------------------


def test_sample_of_a_digit_and_a_label_override():
    s = load_digits().sample(7)
    assert (s.name, s.label, s.index) == ("digit #7", int(load_digits().labels[7]), 7)
    assert load_digits().sample(7, label=3).label == 3
    assert load_digits().sample(7, label=None).label is None
    assert tiny_mnist().sample(33).name == "MNIST #33"


def test_load_sample_refuses_two_inputs_and_labels_outside_0_9():
    with pytest.raises(ValueError, match="give one of them"):
        load_sample("digits", 3, "x.png")
    with pytest.raises(ValueError, match="not a digit"):
        load_sample("digits", 3, None, 10)


def test_without_a_label_the_loss_is_towards_the_predicted_class(seed_params):
    x = load_digits().get(11)[0]
    labelled = build_trace(seed_params, x, 4)
    free = build_trace(seed_params, x, None)
    assert not free.label_given and labelled.label_given
    assert free.label == free.prediction == labelled.prediction
    np.testing.assert_array_equal(free.probs, labelled.probs)
    assert free.loss == pytest.approx(-np.log(free.probs[free.prediction]), rel=1e-12)
    # dlogits = probs - onehot(prediction): negative only at the predicted class
    dlogits = free["dlogits"].value
    assert np.flatnonzero(dlogits < 0).tolist() == [free.prediction]
    assert "no label: loss towards the predicted" in free.label_text


def test_trace_sample_keeps_the_name_explanation_and_original(seed_params):
    digit = np.zeros((28, 28))
    digit[6:22, 12:16] = 1.0
    original = np.ones((40, 30))
    s = data.Sample(standardise(digit), None, "image one.png", data.IMAGE_EXPLANATION,
                    digit=digit, original=original)
    trace = trace_sample(seed_params, s, weights="seed")
    assert trace.input_name == "image one.png" and trace.index is None
    assert trace["x"].formula == data.IMAGE_EXPLANATION[0]
    assert trace.original is original


# ---- training on another data set -------------------------------------------------------------


def test_the_trainer_trains_and_scores_an_mnist_data_set():
    ds = tiny_mnist(60, 20)
    trainer = Trainer(TrainConfig(epochs=3, batch_size=10), data=ds)
    result = trainer.run()
    assert result.status == "finished" and result.epochs_completed == 3
    ev = result.evaluation
    np.testing.assert_array_equal(ev.indices, np.arange(60, 80))
    # evaluating the same weights by hand on the prepared test digits gives the same accuracy
    probs = model.predict(model.SIMPLE_CNN, trainer.params(), ds.prepared(ds.test_idx))
    assert ev.accuracy == pytest.approx(np.mean(probs.argmax(1) == ds.labels[60:]))
    assert ev.accuracy > 0.5  # the blobs are easy: far above chance (0.1)


def test_mnist_training_defaults_differ_from_the_digits():
    assert TrainConfig.for_data("mnist").epochs != TrainConfig.for_data("digits").epochs
    assert TrainConfig.for_data("mnist:/some/dir") == TrainConfig.for_data("mnist")
    assert TrainConfig.for_data("digits") == TrainConfig()


# ---- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["trace", "--data", "cifar"], "there is no data set 'cifar'"),
    (["trace", "--data", "digits:/tmp"], "there is no data set 'digits:/tmp'"),
    (["trace", "--data", "mnist:"], "there is no data set 'mnist:'"),
    (["trace", "--label", "12"], "12 is not a digit"),
    (["--label", "x"], "'x' is not a whole number"),
])
def test_bad_input_flags_are_one_sentence_and_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_trace_json_says_what_the_input_is_and_whether_it_was_labelled(capsys):
    assert cli.main(["trace", "--index", "9", "--label", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["input"], doc["label"], doc["label_given"]) == ("digit #9", 2, True)


def test_index_and_image_together_are_refused(capsys, tmp_path):
    assert cli.main(["trace", "--index", "3", "--image", str(tmp_path / "a.png")]) == 1
    assert "give one of them" in capsys.readouterr().err


def test_data_option_before_a_command_is_pointed_out(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--data", "mnist", "trace"])
    assert "--data goes after the command" in capsys.readouterr().err


# ---- the app ----------------------------------------------------------------------------------


async def test_the_app_pages_an_mnist_data_set_and_jumps_to_an_index(seed_params):
    from screens.picker import DigitGrid, PickerScreen

    ds = tiny_mnist(30, 10)
    app = make_app(seed_params, data=ds, index=31)
    async with app.run_test(size=(100, 30)) as pilot:
        assert "MNIST #31" in app.screen.query_one("#header").plain
        await pilot.press("d")
        assert isinstance(app.screen, PickerScreen)
        grid = app.screen.query_one(DigitGrid)
        assert grid.selected == 31 and len(grid.indices) == 40
        thumb = grid.thumb(0)  # 28x28 at 1/4: 7 pixels, padded to the cell's 8 columns
        assert len(thumb) == 4 and all(sum(len(s.text) for s in row) == 8 for row in thumb)
        status = str(app.screen.query_one("#picker-status").render())
        assert "MNIST #31" in status and "test set" in status
        await pilot.press("3")  # only class 3: digit 5 is hidden
        assert 5 not in grid.indices
        await pilot.press("g", "5", "enter")  # the jump shows everything again to reach it
        assert grid.selected == 5 and len(grid.indices) == 40
        await pilot.press("g", "9", "9", "enter")  # past the end: said, cursor stays
        assert grid.selected == 5
        await pilot.press("end")
        assert grid.selected == 39
        await pilot.press("enter")
        assert app.index == 39 and app.trace.input_name == "MNIST #39"


async def test_an_own_image_shows_its_original_beside_x(seed_params):
    from screens.widgets.tensor_view import TensorView

    digit = np.zeros((28, 28))
    digit[6:22, 12:16] = 1.0
    s = data.Sample(standardise(digit), None, "image one.png", data.IMAGE_EXPLANATION,
                    digit=digit, original=np.linspace(0, 1, 120 * 90).reshape(120, 90))
    app = make_app(seed_params, sample=s)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        view = app.screen.query_one(TensorView).view
        labels = [t.label for t in view.tiles]
        assert labels[-1] == "original 90x120 at 1/5"
        assert view.tiles[-1].data.shape == (24, 18)
        header = app.screen.query_one("#header").plain
        assert "image one.png" in header and "no label" in header
        await pilot.press("right")  # z1: no original
        assert not any("original" in t.label for t in app.screen.query_one(TensorView).view.tiles)


def test_the_least_sure_mnist_digit_is_remembered_per_weights(tmp_path, monkeypatch,
                                                             seed_params):
    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(tmp_path))
    ds = tiny_mnist(10, 1200)  # more than 1000 test digits: worth remembering
    found = model.least_sure_test_digit(model.SIMPLE_CNN, seed_params, ds)
    probs = model.predict(model.SIMPLE_CNN, seed_params, ds.prepared(ds.test_idx))
    assert found == (int(ds.test_idx[np.argmin(probs.max(1))]), float(probs.max(1).min()))
    [saved] = tmp_path.glob("least-sure-*.json")

    def no_predict(*a, **k):
        raise AssertionError("predicted again")

    monkeypatch.setattr(model, "predict", no_predict)
    assert model.least_sure_test_digit(model.SIMPLE_CNN, seed_params, ds) == found
    other = {**seed_params, "b3": seed_params["b3"] + 1.0}  # other weights: not the cached one
    with pytest.raises(AssertionError, match="predicted again"):
        model.least_sure_test_digit(model.SIMPLE_CNN, other, ds)
    saved.write_text("{not json")  # a broken cache is recomputed, never an error
    monkeypatch.undo()
    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(tmp_path))
    assert model.least_sure_test_digit(model.SIMPLE_CNN, seed_params, ds) == found


def test_the_least_sure_digit_works_without_a_writable_cache(tmp_path, monkeypatch, seed_params):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(blocker / "cache"))  # under a file: unwritable
    ds = tiny_mnist(10, 1200)
    index, confidence = model.least_sure_test_digit(model.SIMPLE_CNN, seed_params, ds)
    assert 10 <= index < 1210 and 0 < confidence <= 1


# ---- MNIST from IDX files, through the commands -------------------------------------------------


def test_trace_verify_and_train_read_mnist_from_a_folder(tmp_path, monkeypatch, capsys):
    from test_mnist import write_mnist

    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(tmp_path / "cache"))
    parts = write_mnist(tmp_path / "mnist", n_train=40, n_test=12, gz=True)
    spec = f"mnist:{tmp_path / 'mnist'}"
    assert cli.main(["trace", "--data", spec, "--index", "43", "--weights", "seed",
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["input"] == "MNIST #43" and doc["label"] == int(parts["test_labels"][3])
    assert cli.main(["verify", "--data", spec, "--index", "2", "--weights", "seed"]) == 0
    assert "all tensors agree" in capsys.readouterr().out
    out = tmp_path / "w.npz"
    assert cli.main(["train", "--data", spec, "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "/12)" in printed  # scored on the 12 test digits
    assert f"--data {spec}" in printed.replace("'", "")  # the command that opens them again
    assert str(model.load_weights(out)[1]["data"]) == "mnist"


def test_a_corrupt_idx_file_is_one_sentence_and_exit_1(tmp_path, monkeypatch, capsys):
    from test_mnist import write_mnist

    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(tmp_path / "cache"))
    write_mnist(tmp_path / "m")
    bad = tmp_path / "m" / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:500])
    assert cli.main(["trace", "--data", f"mnist:{tmp_path / 'm'}", "--weights", "seed"]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and err.count("\n") == 1 and "Traceback" not in err


# ---- real MNIST (the [mnist] extra, which CI installs) ----------------------------------------


@pytest.fixture(scope="module")
def real_mnist():
    return data.load_dataset("mnist")


def test_real_mnist_is_60000_then_10000(real_mnist):
    assert len(real_mnist) == 70000 and real_mnist.n_train == 60000
    assert real_mnist.raw.dtype == np.uint8 and set(np.unique(real_mnist.labels)) == set(range(10))


def test_the_shipped_mnist_weights_score_what_the_readme_states(real_mnist):
    import re
    from pathlib import Path

    params, meta = model.load_weights(model.pretrained_path(data="mnist"))
    assert str(meta["data"]) == "mnist"
    ev = Trainer(TrainConfig.for_data("mnist"), params=params, data=real_mnist).evaluate()
    assert ev.accuracy >= 0.985
    assert meta["test_accuracy"] == pytest.approx(ev.accuracy, abs=1e-12)
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## MNIST and your own digit", 1)[1].split("\n## ", 1)[0]
    stated = float(re.search(r"test accuracy of ([\d.]+)%", section).group(1)) / 100
    assert stated == pytest.approx(ev.accuracy, abs=5e-5 + 1e-12)
    assert model.weights_from("pretrained", data="mnist")[1] == "pretrained-mnist"


def test_a_brief_training_on_real_mnist_learns(real_mnist):
    trainer = Trainer(TrainConfig(epochs=1, batch_size=32), data=real_mnist,
                      train_idx=real_mnist.train_idx[:3000], test_idx=real_mnist.test_idx[:1000])
    result = trainer.run()
    assert result.status == "finished"
    assert result.evaluation.accuracy > 0.8  # from 10% (chance) after 3,000 digits


async def test_the_training_screen_trains_on_the_apps_data_set(seed_params, monkeypatch):
    from pilot_helpers import wait_for

    from screens.training import TrainingScreen

    ds = tiny_mnist(60, 20)
    monkeypatch.setattr(TrainConfig, "for_data", classmethod(
        lambda cls, name: cls(epochs=2, batch_size=20) if name == "mnist" else cls()))
    app = make_app(seed_params, data=ds, index=61)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        assert screen.trainer.data is ds and screen.trainer.config.epochs == 2
        await pilot.press("space")
        await wait_for(pilot, lambda: not screen.trainer.running and screen.trainer.epoch == 2)
        ev = screen.trainer.last_evaluation
        np.testing.assert_array_equal(ev.indices, ds.test_idx)  # scored on MNIST's test digits
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.stepper)
        assert app.trace.input_name == "MNIST #61"  # the stepper shows the trained network
        np.testing.assert_array_equal(app.params["W1"], screen.trainer.params()["W1"])
