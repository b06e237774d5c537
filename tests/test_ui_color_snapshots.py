"""SVG snapshots of the pooling view (p1: a1's maxima marked) at each colour depth, 100x30,
with one channel chosen (key 1) so that a1 is drawn at full size with its marks.

Deterministic as in test_ui_snapshots.py: explicit digit and colour mode, no PyTorch worker,
predictions computed up front. Update with ``--snapshot-update`` after looking at the pictures.
"""

from __future__ import annotations

import pytest
from pilot_helpers import make_app

from cnntui.model import weights_from
from screens.colors import MODES


@pytest.mark.parametrize("mode", MODES)
def test_pool_step_snapshot(snap_compare, mode):
    app = make_app(weights_from("seed")[0], color=mode, index=0)
    assert snap_compare(app, press=["right"] * 3 + ["1"], terminal_size=(100, 30))
    assert app.trace.steps[app.step_index].name == "p1"
