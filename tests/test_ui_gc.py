"""Garbage collections stay out of the steps: the heap is frozen once PyTorch has loaded, so a
full collection never rescans its objects mid-step (125-145 ms each, measured in issue 11)."""

from __future__ import annotations

import gc

from pilot_helpers import make_app, wait_for

from cnntui import model


async def test_the_heap_is_frozen_when_pytorch_has_loaded():
    gc.unfreeze()
    app = make_app(model.weights_from("seed")[0], reference="thread")
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.reference_state != "loading")
            assert app.reference_state == "ready"
            frozen = gc.get_freeze_count()
            assert frozen > 10_000  # the imports, the app, PyTorch
            await pilot.press("right", "right")  # later steps freeze nothing more
            assert gc.get_freeze_count() <= frozen  # (frozen objects freed leave it)
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
