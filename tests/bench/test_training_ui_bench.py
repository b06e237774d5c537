"""Training throughput with the training screen open, against the headless trainer (issue 11:
target >= 90%), reported, never asserted.

Both sides train the same configuration (the default ``TrainConfig`` for ``EPOCHS`` epochs on the
full split, seed 0) in this process, alternating headless and UI runs ``ROUNDS`` times; the
median of each is reported with their ratio. Throughput is training images over the run's wall
time (``TrainResult.seconds``: pauses excluded, per-epoch evaluation included, the same on both
sides). The UI run is the real app under Textual's headless driver at 100x30, the training
screen open and drawing, its trainer in a child process as the app makes it
(``TrainerProcess``). It is driven the way a terminal would drive it (key events posted to the
app, no Pilot waits, which would themselves occupy the UI thread).

Also reported: frames the screen drew per second of training, and the latency of a key during
training (``+``: posted to the app until the trainer's learning rate changed, which is after the
child's reply). Key-to-screen latency in a real terminal:
``python tests/bench/tmux_ui.py training``.

Run: ``pytest tests/bench/test_training_ui_bench.py --benchmark-only -s``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace

import pytest
from textual import events

from cnntui.cli import limit_threads
from cnntui.data import load_digits
from cnntui.model import weights_from
from cnntui.training import TrainConfig, Trainer
from cnntui.training.process import TrainerProcess
from screens.app import CnnApp
from screens.training import TrainingScreen

EPOCHS = 10
ROUNDS = 5
POLL = 0.05
SIZE = (100, 30)


@pytest.fixture(scope="module")
def digits():
    limit_threads()  # one BLAS thread, as every cnntui command and the trainer's child use
    return load_digits()


def headless_rate(config: TrainConfig, digits) -> float:  # noqa: ANN001
    result = Trainer(config, data=digits).run()
    return config.epochs * len(digits.train_idx) / result.seconds


async def _ui_run(config: TrainConfig, digits) -> dict[str, float]:  # noqa: ANN001
    app = CnnApp(weights_from("seed")[0], "seed", color="truecolor", reference="off",
                 predictions="sync",
                 trainer_factory=lambda params: TrainerProcess(config, params=params,
                                                               data=digits))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        await pilot.pause()
        app.post_message(events.Key("space", " "))
        while screen.feed.result is None:
            await asyncio.sleep(POLL)
        result = screen.feed.result
        return {"rate": config.epochs * len(digits.train_idx) / result.seconds,
                "fps": screen.frames / result.seconds}


async def _key_latency(config: TrainConfig, digits, presses: int = 10) -> list[float]:  # noqa: ANN001
    app = CnnApp(weights_from("seed")[0], "seed", color="truecolor", reference="off",
                 predictions="sync",
                 trainer_factory=lambda params: TrainerProcess(config, params=params,
                                                               data=digits))
    times = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        screen = app.screen
        await pilot.pause()
        app.post_message(events.Key("space", " "))
        while len(screen.feed.losses) < 5:
            await asyncio.sleep(0.01)
        for k in range(presses):
            key = ("plus", "+") if k % 2 == 0 else ("minus", "-")
            lr = screen.trainer.lr
            t0 = time.perf_counter()
            app.post_message(events.Key(*key))
            while screen.trainer.lr == lr:
                await asyncio.sleep(0.0005)
            times.append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)
        assert screen.trainer.running  # every press answered during the run
        screen.trainer.stop()
        while screen.active:
            await asyncio.sleep(0.01)
    return times


def test_training_throughput_with_the_screen_open(benchmark, digits):
    config = TrainConfig(epochs=EPOCHS)
    headless: list[float] = []
    ui: list[dict[str, float]] = []

    def pair() -> None:
        headless.append(headless_rate(config, digits))
        ui.append(asyncio.run(_ui_run(config, digits)))

    headless_rate(replace(config, epochs=1), digits)  # warm-up: imports, caches, malloc
    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)
    h = statistics.median(headless)
    u = statistics.median(r["rate"] for r in ui)
    fps = statistics.median(r["fps"] for r in ui)
    latency = sorted(asyncio.run(_key_latency(replace(config, epochs=1000), digits)))
    info = {"headless_images_per_s": round(h), "ui_images_per_s": round(u),
            "ratio": round(u / h, 3), "target": 0.9, "ui_frames_per_s": round(fps, 1),
            "key_latency_median_ms": round(1000 * latency[len(latency) // 2], 1),
            "key_latency_max_ms": round(1000 * latency[-1], 1),
            "headless_samples": [round(x) for x in headless],
            "ui_samples": [round(r["rate"]) for r in ui]}
    benchmark.extra_info.update(info)
    print(f"\ntraining throughput, {EPOCHS} epochs x {len(digits.train_idx)} digits, "
          f"median of {ROUNDS} alternating rounds:")
    print(f"  headless trainer        {h:>8,.0f} images/s  {info['headless_samples']}")
    print(f"  training screen open    {u:>8,.0f} images/s  {info['ui_samples']}")
    print(f"  ratio                   {u / h:>8.2f}    (target >= 0.90)")
    print(f"  screen frames while training {fps:.1f}/s; key latency during training "
          f"median {info['key_latency_median_ms']} ms, max {info['key_latency_max_ms']} ms")
