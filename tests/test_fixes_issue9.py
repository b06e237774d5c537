"""Issue 9: one default for the weights, what ``cnntui train`` prints and saves, the save dialog,
screenshots on every screen and in every colour mode, and the digit the debugger opens on."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pilot_helpers import wait_for_exports

from cnntui import cli, model
from cnntui.data import load_digits
from screens.figure import png_converter

# ---- 1. one default for the weights --------------------------------------------------------


def _trace_json(capsys, *args: str) -> dict:
    assert cli.main(["trace", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_trace_and_verify_default_to_the_debuggers_weights():
    parser = cli.build_parser()
    app_default = parser.parse_args([]).weights
    assert app_default == model.PRETRAINED
    for command in ("trace", "verify"):
        assert parser.parse_args([command]).weights == app_default


def test_trace_without_weights_predicts_what_the_debugger_shows(capsys):
    from screens.app import CnnApp

    doc = _trace_json(capsys, "--index", "7")
    assert doc["weights"] == model.PRETRAINED
    params, desc = model.weights_from(model.PRETRAINED)
    app = CnnApp(params, desc, index=7, reference="off", predictions="off")
    assert doc["prediction"] == app.trace.prediction
    np.testing.assert_allclose(doc["probs"], app.trace.probs, rtol=0, atol=1e-12)


def test_verify_without_weights_checks_the_pretrained_weights(capsys):
    assert cli.main(["verify", "--json", "--index", "4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert doc["weights"] == model.PRETRAINED


def test_weights_seed_still_gives_the_lessons_numbers(capsys):
    from cnntui import lesson

    doc = _trace_json(capsys, "--weights", "seed", "--index", "0")
    assert doc["weights"] == model.SEED
    x, label = load_digits().get(0)
    probs = lesson.SimpleCNN().forward(x)
    np.testing.assert_allclose(doc["probs"], probs, rtol=0, atol=1e-12)
    assert doc["prediction"] == int(np.argmax(probs)) == 3  # the lesson's untrained guess
    assert doc["loss"] == pytest.approx(float(-np.log(probs[label] + 1e-15)), abs=1e-12)


# ---- 2, 3. what ``cnntui train`` prints and saves -----------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "cnntui", "train", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def _misclassified(stdout: str) -> list[tuple[int, int, int]]:
    line = next(x for x in stdout.splitlines() if x.startswith("misclassified test digits"))
    return [tuple(map(int, m)) for m in re.findall(r"#(\d+) \((\d)->(\d)\)", line)]


def test_train_out_prints_a_command_that_opens_the_trained_weights(tmp_path):
    out = tmp_path / "my run" / "w"  # a space, and .npz added
    out.parent.mkdir()
    r = train("--epochs", "1", "--train-limit", "64", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    saved = out.with_suffix(".npz")
    assert saved.is_file()
    assert "cnntui --index N" not in r.stdout
    line = next(x for x in r.stdout.splitlines() if "open one with" in x)
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:3] == ["cnntui", "--weights", str(saved)] and command[-2:] == ["--index", "N"]
    # the digits listed are misclassified by exactly those weights
    index, label, predicted = _misclassified(r.stdout)[0]
    args = cli.build_parser().parse_args([*command[1:-1], str(index)])
    params, _ = model.weights_from(args.weights, model.architecture_of(args.weights))
    x, y = load_digits().get(index)
    probs = model.predict(model.SIMPLE_CNN, params, x[None])[0]
    assert (y, int(probs.argmax())) == (label, predicted) and label != predicted


def test_train_without_out_says_the_weights_were_not_saved(tmp_path):
    r = train("--epochs", "1", "--train-limit", "64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _misclassified(r.stdout)
    assert "cnntui --index N" not in r.stdout and "open one with these weights" not in r.stdout
    assert "these weights were not saved" in r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_reports_the_weights_that_were_saved(tmp_path, as_json):
    out = tmp_path / "stopped.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnntui", "train", "--epochs", "200", "--out", str(out),
         *(["--json"] if as_json else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, COLUMNS="120"))
    progress = proc.stderr if as_json else proc.stdout
    try:
        for line in progress:
            if line.strip().startswith("2/200"):  # two epochs done, the third under way
                break
        time.sleep(0.3)  # some batches of the third epoch: the weights are not epoch 2's
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    params, meta = model.load_weights(out)
    epoch = int(meta["epoch"])
    assert epoch >= 2
    digits = load_digits()
    test = digits.test_idx
    predicted = model.predict(model.SIMPLE_CNN, params, digits.images[test]).argmax(axis=1)
    correct = int(np.sum(predicted == digits.labels[test]))
    wrong = sorted(int(i) for i in test[predicted != digits.labels[test]])
    if as_json:
        doc = json.loads(stdout)
        assert doc["test_accuracy"] == pytest.approx(correct / len(test), abs=1e-12)
        assert sorted(doc["misclassified"]) == wrong
        assert doc["saved"] == str(out) and doc["saved_epoch"] == epoch
    else:
        words = " ".join(stdout.split())  # the table's title wraps
        assert f"test accuracy {correct / len(test):.2%} ({correct}/{len(test)}), the saved " \
               f"weights of epoch {epoch}" in words
        assert f"the last complete epoch, {epoch}" in stdout
        listed = _misclassified(stdout)
        assert len(listed) == min(24, len(wrong)) and {i for i, _, _ in listed} <= set(wrong)


# ---- 4. the save dialog --------------------------------------------------------------------

UI_SIZE = (100, 30)


def _training_app(tmp_path, **kw):
    from pilot_helpers import make_app

    from cnntui.training import TrainConfig, Trainer

    digits = load_digits()

    def trainer(params=None) -> Trainer:  # noqa: ANN001
        return Trainer(TrainConfig(epochs=1, batch_size=32), params=params, data=digits,
                       train_idx=digits.train_idx[:64], test_idx=digits.test_idx[:60])

    params, desc = model.weights_from(model.PRETRAINED)
    kw.setdefault("index", 0)
    return make_app(params, desc, trainer_factory=trainer, screenshot_dir=tmp_path, **kw)


async def _save_as(pilot, text: str) -> None:
    from textual.widgets import Input

    from screens.training import SaveWeightsScreen

    await pilot.press("w")
    assert isinstance(pilot.app.screen, SaveWeightsScreen)
    pilot.app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await pilot.pause()


def _errors(app) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


async def test_save_dialog_given_a_folder_saves_the_default_name_inside_it(tmp_path,
                                                                          monkeypatch):
    from screens.training import DEFAULT_SAVE_PATH, TrainingScreen

    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    app = _training_app(tmp_path)
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press("t")
        await _save_as(pilot, str(folder))
        assert isinstance(app.screen, TrainingScreen) and not _errors(app)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no runs.npz beside it
        saved = folder / DEFAULT_SAVE_PATH
        params, _ = model.load_weights(saved)
        for k, v in app.screen.trainer.params("float64").items():
            np.testing.assert_array_equal(params[k], v)
        assert str(saved) in list(app._notifications)[-1].message
        # the same with a trailing slash, and the next dialog offers the file it saved
        saved.unlink()
        await _save_as(pilot, f"{folder}/")
        assert saved.is_file() and app.screen.save_path == str(saved)


@pytest.mark.parametrize("typed", ["nope/w.npz", "nope/deeper/w", "nope/"])
async def test_save_dialog_refuses_a_missing_folder_and_creates_nothing(tmp_path, monkeypatch,
                                                                       typed):
    from screens.training import SaveWeightsScreen

    monkeypatch.chdir(tmp_path)
    app = _training_app(tmp_path)
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press("t")
        await _save_as(pilot, typed)
        assert isinstance(app.screen, SaveWeightsScreen)  # still open, to correct the path
        errors = _errors(app)
        assert errors == ["the folder nope does not exist; create it first or type another path"]
        assert list(tmp_path.iterdir()) == []
        await pilot.press("escape")
        assert not isinstance(app.screen, SaveWeightsScreen)


# ---- 5, 6. screenshots from every screen and from the palette ------------------------------


def _svgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.svg"))


def _svg_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("&#160;", " ")


@pytest.mark.parametrize("keys, screen, shown", [
    (["question_mark"], "HelpScreen", "cnntui help"),
    (["d"], "PickerScreen", "Enter"),
    (["t", "w"], "SaveWeightsScreen", "save the weights"),
    (["t"], "TrainingScreen", "cnntui training"),
    (["i"], "SummaryScreen", "MACs"),
    ([], "StepperScreen", "digit #0"),
])
async def test_ctrl_s_saves_a_screenshot_on_every_screen(tmp_path, keys, screen, shown):
    app = _training_app(tmp_path)
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press(*keys)
        await pilot.pause()
        assert type(app.screen).__name__ == screen
        assert _svgs(tmp_path) == []
        await pilot.press("ctrl+s")
        await wait_for_exports(pilot)
        files = _svgs(tmp_path)
        assert len(files) == 1, f"ctrl+s saved nothing on the {screen}"
        assert shown in _svg_text(files[0])  # that screen, not the one under it
        assert type(app.screen).__name__ == screen  # and it is still open
        assert any(str(files[0]) in str(n.message) for n in app._notifications)
        await pilot.press("ctrl+s")  # a second one in the same second gets its own name
        await wait_for_exports(pilot)
        assert len(_svgs(tmp_path)) == 2
        # each with its PNG, under the SVG's name, where a converter exists
        assert sorted(p.stem for p in tmp_path.glob("*.png")) == \
            (sorted(p.stem for p in _svgs(tmp_path)) if png_converter() else [])


async def test_palette_screenshot_saves_where_ctrl_s_does(tmp_path, monkeypatch):
    home = tmp_path / "home"  # no Downloads folder in it
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(home / "Downloads"))
    shots = tmp_path / "shots"
    shots.mkdir()
    app = _training_app(shots)
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"Screenshot")
        await pilot.pause(0.5)
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if _svgs(shots):
                break
        files = _svgs(shots)
        assert len(files) == 1 and "digit #0" in _svg_text(files[0])
        assert "Search for commands" not in _svg_text(files[0])  # the palette had closed
        assert not [n for n in app._notifications if n.severity == "error"]
        assert list(home.iterdir()) == []


async def test_screenshot_into_a_missing_folder_goes_to_the_temp_folder_and_says_so(
        tmp_path, monkeypatch):
    import tempfile

    gone, temp = tmp_path / "gone", tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    app = _training_app(gone)
    png = png_converter() is not None
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press("ctrl+s")
        await wait_for_exports(pilot)
        files = _svgs(temp)
        assert len(files) == 1 and not gone.exists()
        names = [files[0].name] + ([files[0].with_suffix(".png").name] if png else [])
        assert sorted(p.name for p in temp.iterdir()) == sorted(names)  # no temp file left
        message = list(app._notifications)[-1].message
        also = " and PNG" if png else ""
        assert message == f"screenshot saved to {files[0]}{also} ({gone} does not exist)"


# ---- 7. a screenshot leaves the terminal's colour system alone -----------------------------

LEAK_SCRIPT = """
import asyncio, json, re, sys
from cnntui import model
from screens.app import CnnApp

async def main(color):
    params, desc = model.weights_from("pretrained")
    app = CnnApp(params, desc, index=0, color=color, reference="off", predictions="sync",
                 screenshot_dir=sys.argv[1])
    counts = {}
    async with app.run_test(size=(100, 30)) as pilot:
        def drawn():  # what the driver writes for a full repaint
            update = app.screen._compositor.render_update(full=True)
            return update.render_segments(app.console)
        def count(text):
            return {"24-bit": len(re.findall(r"\\x1b\\[[0-9;]*[34]8;2;", text)),
                    "256": len(re.findall(r"\\x1b\\[[0-9;]*[34]8;5;", text)),
                    "sgr": text.count("\\x1b[")}
        await pilot.pause()
        counts["before"] = count(drawn())
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("right")  # a new step: new strips
        await pilot.pause()
        counts["after"] = count(drawn())
        counts["system"] = app.console.color_system
    print(json.dumps(counts))

asyncio.run(main(sys.argv[2]))
"""


@pytest.mark.parametrize("color, system", [("256", "256"), ("16", "standard")])
def test_a_screenshot_does_not_leak_24_bit_colour_into_the_terminal(tmp_path, color, system):
    # its own process: Rich caches a Style's codes in the Style, and other tests' apps share them
    r = subprocess.run([sys.executable, "-c", LEAK_SCRIPT, str(tmp_path), color],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout.splitlines()[-1])
    assert len(_svgs(tmp_path)) == 1
    assert counts["system"] == system
    for when in ("before", "after"):
        assert counts[when]["sgr"] > 100  # it draws in colour
        assert counts[when]["24-bit"] == 0, f"24-bit colour codes {when} the screenshot"
        if color == "16":
            assert counts[when]["256"] == 0
        else:
            assert counts[when]["256"] > 0


# ---- 8. the digit the debugger opens on ----------------------------------------------------


def _sklearn_test_split() -> np.ndarray:
    from sklearn.model_selection import train_test_split

    labels = load_digits().labels
    _, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                               random_state=0)
    return test


def test_the_split_without_scikit_learn_is_scikit_learns():
    from cnntui.data import stratified_test_indices

    digits = load_digits()
    ours = stratified_test_indices(digits.labels)
    assert len(ours) == 360
    np.testing.assert_array_equal(ours, np.sort(_sklearn_test_split()))
    np.testing.assert_array_equal(ours, np.sort(digits.test_idx))


@pytest.mark.parametrize("arch_key, weights", [("simple", "pretrained"), ("simple", "seed"),
                                               ("strided", "pretrained")])
def test_least_sure_test_digit_is_the_argmin_of_the_predicted_class_probability(arch_key,
                                                                                weights):
    import torch

    from cnntui.reference import torch_logits

    arch = model.ARCHITECTURES[arch_key]
    params, _ = model.weights_from(weights, arch)
    index, confidence = model.least_sure_test_digit(arch, params)
    # independently: scikit-learn's split, PyTorch's forward pass
    test = _sklearn_test_split()
    x = torch.tensor(load_digits().images[test])
    with torch.no_grad():
        logits = torch_logits(arch, {k: torch.tensor(v) for k, v in params.items()}, x)
    top = torch.softmax(logits, dim=1).max(dim=1).values.numpy()
    assert index == int(test[np.argmin(top)])
    assert confidence == pytest.approx(float(top.min()), abs=1e-9)
    assert index in set(test.tolist()) and np.all(top >= confidence - 1e-9)
    assert confidence < 0.9  # a backward pass worth seeing, unlike digit 0's


def test_least_sure_test_digit_breaks_ties_by_the_lower_index():
    zeros = {k: np.zeros(v) for k, v in model.SIMPLE_CNN.param_shapes.items()}
    index, confidence = model.least_sure_test_digit(model.SIMPLE_CNN, zeros)  # 0.1 for all
    assert index == int(_sklearn_test_split().min()) and confidence == pytest.approx(0.1)


async def test_the_debugger_without_index_opens_on_the_least_sure_digit(monkeypatch):
    from screens.app import CnnApp, run_app

    started = []
    monkeypatch.setattr(CnnApp, "run", lambda self, *a, **kw: started.append(self) or 0)
    args = cli.build_parser().parse_args(["--color", "256"])
    assert args.index is None
    assert run_app(args) == 0
    app = started[0]
    params, _ = model.weights_from(model.PRETRAINED)
    index, confidence = model.least_sure_test_digit(model.SIMPLE_CNN, params)
    assert app.index == app.trace.index == index != 0
    app.reference_mode = app.predictions_mode = "off"  # no PyTorch worker for this test
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert messages == [f"digit #{index}: the test digit the network is least sure about "
                            f"(its prediction at {confidence:.0%}); --index N opens another"]
        # and --index still opens the digit asked for, without that notice
        started.clear()
    assert run_app(cli.build_parser().parse_args(["--index", "0"])) == 0
    assert started[0].index == 0 and started[0].notice is None
