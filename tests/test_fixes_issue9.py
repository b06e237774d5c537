"""Issue 9: one default for the weights, what ``cnntui train`` prints and saves, the save dialog,
screenshots on every screen and in every colour mode, and the digit the debugger opens on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnntui import cli, model
from cnntui.data import load_digits

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
