"""SVG snapshots of the main screens at 100x32 and 80x24 (pytest-textual-snapshot).

Deterministic: explicit truecolor, the PyTorch reference disabled (no worker timing in the
picture) and the picker's predictions computed before the app starts. Update with
``pytest tests/test_ui_snapshots.py --snapshot-update`` after checking the report.
"""

from __future__ import annotations

import pytest

from cnntui.model import weights_from
from screens.app import CnnApp

SIZES = [(100, 32), (80, 24)]

# name: keys pressed from the first step
SCREENS = {
    "first_step": [],
    "conv2_forward": ["right"] * 4,  # z2
    "pool_step": ["right"] * 3,  # p1: argmax marks on a1
    "backward_gradients": ["end"] + ["left"] * 7,  # dW2: filters, norms, update ratio
    "picker": ["d"],
    "help": ["question_mark"],
}


@pytest.fixture(scope="module")
def seed_params():
    return weights_from("seed")[0]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_snapshot(snap_compare, seed_params, screen, size):
    app = CnnApp(seed_params, "seed", color="truecolor", reference="off", predictions="sync")
    assert snap_compare(app, press=SCREENS[screen], terminal_size=size)


def test_snapshot_no_colour_backward(snap_compare, seed_params):
    """Without colour the sign of a gradient is still readable (glyph families)."""
    app = CnnApp(seed_params, "seed", color="none", reference="off", predictions="sync")
    assert snap_compare(app, press=["end"] + ["left"] * 8, terminal_size=(100, 32))  # dz2
