"""SVG snapshots of the training screen, mid-run and finished, at 100x30 and 80x24.

Deterministic: the screen is fed fixed, recorded-looking events (``TrainingScreen.replay``)
instead of racing a training thread; the filters are the seed initialisation's.
Update with ``pytest tests/test_ui_training_snapshots.py --snapshot-update`` after checking.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnntui.data import load_digits
from cnntui.model import weights_from
from cnntui.training import (
    BatchEnd,
    EpochEnd,
    Evaluation,
    RunEnd,
    TrainConfig,
    Trainer,
    TrainResult,
)
from screens.app import CnnApp

SIZES = [(100, 30), (80, 24)]
EPOCHS, BATCHES = 30, 23
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")


def batch_events(steps: int) -> list[object]:
    """A plausible run: loss from ln 10 down with a wobble, norms shrinking, cosine lr."""
    events: list[object] = []
    for step in range(1, steps + 1):
        epoch, batch = divmod(step - 1, BATCHES)
        loss = 2.3 * math.exp(-step / 40) + 0.05 + 0.04 * math.sin(step * 1.7) ** 2
        norms = {k: (0.5 + i * 0.3) * math.exp(-step / 150) * (1 + 0.2 * math.sin(step + i))
                 for i, k in enumerate(NAMES)}
        lr = 0.01 * 0.5 * (1 + math.cos(math.pi * (step - 1) / (EPOCHS * BATCHES)))
        events.append(BatchEnd(epoch + 1, EPOCHS, batch + 1, BATCHES, step, loss, lr, "adam",
                               9000.0 + 10 * batch, norms))
        if batch + 1 == BATCHES:
            e = epoch + 1
            events.append(EpochEnd(e, EPOCHS, 0.9 / e, 1 - 0.3 / e, 0.8 / e,
                                   1 - 0.2 / e - 0.001 * e, 0.25, 9000.0, lr))
    return events


def finished_events() -> list[object]:
    events = batch_events(2 * BATCHES)
    confusion = np.diag([35, 36, 35, 36, 35, 37, 36, 35, 34, 35]).astype(np.int64)
    confusion[1, 6] = confusion[9, 5] = confusion[8, 3] = 1
    labels = np.repeat(np.arange(10), confusion.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(10), row) for row in confusion])
    indices = np.arange(1000, 1000 + len(labels))
    total = int(confusion.sum())
    ev = Evaluation(0.0612, float(np.trace(confusion)) / total, confusion, indices, labels,
                    predicted)
    result = TrainResult("finished", "trained 2 epochs", 2, [e for e in events
                                                             if isinstance(e, EpochEnd)], ev, 5.2)
    return [*events, RunEnd(result)]


def factory(params=None) -> Trainer:  # noqa: ANN001
    return Trainer(TrainConfig(), params=params, data=load_digits())


SCREENS = {
    "mid_run": (lambda: batch_events(5 * BATCHES + 7), "running"),
    "finished": (finished_events, "finished"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(SCREENS))
def test_training_snapshot(snap_compare, name, size):
    events, state = SCREENS[name]
    app = CnnApp(weights_from("seed")[0], "seed", color="truecolor", reference="off",
                 predictions="sync", trainer_factory=factory)

    async def run_before(pilot) -> None:
        await pilot.press("t")
        app.screen.replay(events(), state)
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_training_snapshot_no_colour(snap_compare):
    app = CnnApp(weights_from("seed")[0], "seed", color="none", reference="off",
                 predictions="sync", trainer_factory=factory)

    async def run_before(pilot) -> None:
        await pilot.press("t")
        app.screen.replay(finished_events(), "finished")
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))
