"""Repeated use must not keep widgets alive (issue 7: the training screen kept about 1 MB per run).

Textual's Footer recomposes whenever the active bindings change (a run starting or ending, a
focus change), and each recompose left the removed FooterKeys alive through the footer's watcher
list. Here a few short training runs, and focus changes in the stepper, must not grow the
number of live widgets.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import replace

from pilot_helpers import wait_for
from test_ui_training import TINY, make_app
from textual.widget import Widget

from cnntui.model import weights_from
from screens.training import TrainingScreen
from screens.widgets.footer import Footer

SIZE = (100, 30)
ONE_EPOCH = replace(TINY, epochs=1)


def live_widgets() -> int:
    """Widgets still in memory, in the DOM or not."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Widget))


def footer_watchers(footer: Footer) -> int:
    return sum(len(v) for v in (getattr(footer, "__watchers", None) or {}).values())


async def test_training_runs_do_not_keep_widgets_alive():
    app = make_app(weights_from("pretrained")[0], ONE_EPOCH, n_train=64)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TrainingScreen)

        async def one_run() -> None:
            runs_before = screen.epochs_trained
            await pilot.press("space")
            await wait_for(pilot, lambda: screen.epochs_trained > runs_before)
            await wait_for(pilot, lambda: not screen.active and screen.result is not None)
            await pilot.pause(0.1)  # the footer recomposes after the run's last refresh

        tracemalloc.start()  # from the first run: what a run replaces is traced too
        try:
            await one_run()
            await one_run()
            base, base_watchers = live_widgets(), footer_watchers(screen.query_one(Footer))
            runs = 4
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(runs):
                await one_run()
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        grown = live_widgets() - base
        # before the fix a single run kept about 0.9 MB; now 4 runs keep a few tens of kB
        assert kept < 600_000, f"{runs} runs kept {kept / 1e6:.2f} MB"
        # before the fix every run kept about 44 FooterKeys (4 footer recomposes of 11 keys)
        assert grown < 11, f"{runs} runs kept {grown} more widgets alive"
        in_dom = len(screen.query("*"))
        assert footer_watchers(screen.query_one(Footer)) <= max(base_watchers, in_dom)


async def test_stepper_focus_changes_do_not_keep_footer_keys_alive():
    app = make_app(weights_from("pretrained")[0], ONE_EPOCH)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v", "v")  # the values table takes and gives back the focus
        await pilot.pause(0.1)
        base = live_widgets()
        for _ in range(5):
            await pilot.press("v")
            await pilot.pause(0.05)
            await pilot.press("v")
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        grown = live_widgets() - base
        assert grown < 10, f"5 focus round trips kept {grown} more widgets alive"
