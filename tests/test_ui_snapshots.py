"""SVG snapshots of the main screens at 100x32 and 80x24 (pytest-textual-snapshot).

Deterministic: explicit truecolor, the PyTorch reference disabled (no worker timing in the
picture) and the picker's predictions computed before the app starts. Update with
``pytest tests/test_ui_snapshots.py --snapshot-update`` after checking the report.
"""

from __future__ import annotations

import pytest

from cnntui.model import ARCHITECTURES, weights_from
from screens.app import CnnApp

SIZES = [(100, 32), (80, 24)]

# name: keys pressed from the first step
SCREENS = {
    "first_step": [],
    "conv2_forward": ["right"] * 4,  # z2
    "pool_step": ["right"] * 3,  # p1: argmax marks on a1
    "backward_gradients": ["end"] + ["left"] * 7,  # dW2: filters, norms, update ratio
    # cell mode: z2[0,2,2] with its windows on p1 and its receptive field on x
    "cell_conv": ["right"] * 4 + ["c", "down", "down", "right", "right"],
    "cell_backward": ["end"] + ["left"] * 7 + ["c", "right", "down"],  # dW2[0,0,1,1]
    "im2col": ["right"] * 4 + ["c", "down", "down", "right", "right", "m"],
    "update_step": ["end", "right"],  # the SGD step after dx
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


# the lesson's two exercises: strided conv1 (14x14 from 28x28, no pooling) and separable's
# depthwise conv z2d, then a backward step of each
ARCH_SCREENS = {
    "strided": {"z1": ["right"], "dW2": ["end"] + ["left"] * 6},
    "separable": {"z2d": ["right"] * 4, "dW2d": ["end"] + ["left"] * 7},
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("arch,step", [(a, s) for a, steps in ARCH_SCREENS.items()
                                       for s in steps])
def test_snapshot_architecture(snap_compare, arch, step, size):
    a = ARCHITECTURES[arch]
    app = CnnApp(a.init_params(), "seed", color="truecolor", reference="off",
                 predictions="sync", arch=a)
    assert snap_compare(app, press=ARCH_SCREENS[arch][step], terminal_size=size)
    assert app.trace.steps[app.step_index].name == step


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_canvas(snap_compare, size):
    """The drawing canvas with a stroke drawn by the keyboard, its prediction and what the
    network sees (the MNIST weights, as a drawing gets)."""
    params, desc = weights_from("pretrained")

    async def draw(pilot) -> None:
        await pilot.press("D", "up", "up", "up", "up", "left", "left", "left", "p",
                          *["right"] * 8, *["down", "left"] * 4, *["down"] * 7, "p")
        await pilot.pause(0.2)  # the prediction follows the strokes after a short delay

    app = CnnApp(params, desc, color="truecolor", reference="off", predictions="sync")
    assert snap_compare(app, run_before=draw, terminal_size=size)
