"""UI benchmarks (pytest-benchmark; reported, never asserted):

- step latency: a key press to the new step painted, at 120x40 with every pane visible, driven by
  Pilot (``press`` then ``pause``, which waits for every widget and runs the compositor update);
- start-up: a fresh ``cnntui`` process to its first painted screen (PyTorch loads afterwards).

Run: ``pytest tests/bench/test_ui_bench.py --benchmark-only``.

These run headless, inside one process. Issue 11's targets are measured from outside, as a user
sees it, by ``tests/bench/tmux_ui.py`` (needs tmux; run by hand): ``latency`` (a key sent with
``tmux send-keys`` until ``capture-pane`` shows the change, at 80x24 and 120x40: median < 15 ms,
p95 < 30 ms, none over 50 ms), ``paint`` (process start to the first screen: < 0.5 s) and
``idle`` (CPU with no input: < 0.3%); ``all`` runs each. Medians with spreads and the load
average are printed; nothing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from itertools import cycle

import pytest
from textual import events

from cnntui.model import weights_from
from screens.app import CnnApp

STARTUP_SCRIPT = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import json, sys
    from screens.app import CnnApp
    from cnntui.model import weights_from

    class Timed(CnnApp):
        def on_mount(self):
            super().on_mount()
            self.call_after_refresh(self.painted)

        def painted(self):
            self.first_paint = time.perf_counter() - t0
            self.exit()

    params, desc = weights_from("seed")
    app = Timed(params, desc, color="truecolor", reference="thread")
    app.run(headless=True, size=(120, 40))
    print(json.dumps({"first_paint": app.first_paint}))
""")


@pytest.fixture(scope="module")
def seed_params():
    return weights_from("seed")[0]


class PaintTimedApp(CnnApp):
    """Sets ``painted`` when the compositor hands a rendered update to the (headless) driver."""

    painted: asyncio.Event | None = None

    def _display(self, screen, renderable) -> None:  # noqa: ANN001
        super()._display(screen, renderable)
        if self.painted is not None:
            self.painted.set()


class Driver:
    """Runs the app under Pilot in one long-lived task; ``do(coro_fn)`` runs a step in it."""

    def __init__(self, app: CnnApp, size: tuple[int, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = app
        self.queue: asyncio.Queue = asyncio.Queue()
        ready = self.loop.create_future()
        self.task = self.loop.create_task(self._run(size, ready))
        self.pilot = self.loop.run_until_complete(ready)

    async def _run(self, size: tuple[int, int], ready: asyncio.Future) -> None:
        async with self.app.run_test(size=size) as pilot:
            await pilot.pause()
            ready.set_result(pilot)
            while (job := await self.queue.get()) is not None:
                fn, done = job
                try:
                    done.set_result(await fn(pilot))
                except Exception as e:  # surface failures in the benchmark
                    done.set_exception(e)

    def do(self, fn):  # noqa: ANN001, ANN201
        async def submit():  # noqa: ANN202
            done = self.loop.create_future()
            await self.queue.put((fn, done))
            return await done

        return self.loop.run_until_complete(submit())

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.put(None))
        self.loop.run_until_complete(self.task)
        self.loop.close()


@pytest.mark.parametrize("mode", ["steps", "steps_with_values_table"])
def test_step_latency_120x40(benchmark, seed_params, mode):
    """Key press (posted as the terminal would) to the new step painted, median reported."""
    app = PaintTimedApp(seed_params, "seed", color="truecolor", reference="sync",
                        predictions="sync")
    driver = Driver(app, (120, 40))
    try:
        if mode == "steps_with_values_table":
            driver.do(lambda pilot: pilot.press("v"))
        keys = cycle(["n"] * 24 + ["p"] * 24)  # n/p step even while the table has focus
        before: list[int] = []

        async def settle(pilot) -> None:  # noqa: ANN001
            await pilot.pause()
            before.append(app.step_index)

        async def step(pilot) -> None:  # noqa: ANN001
            key = next(keys)
            app.painted = asyncio.Event()
            app.post_message(events.Key(key, key))
            await app.painted.wait()
            app.painted = None

        benchmark.pedantic(lambda: driver.do(step), setup=lambda: driver.do(settle),
                           rounds=96, warmup_rounds=2)
        driver.do(settle)
        assert len(set(before)) == 25  # every step was drawn
        screen = app.screen
        panes = ("#values" if mode == "steps_with_values_table" else "#map", "#side", "#steps",
                 "#explain", "#header")
        for sel in panes:
            assert screen.query_one(sel).size.width > 0, sel  # all panes on screen
    finally:
        driver.close()


def test_pilot_round_trip_120x40(benchmark, seed_params):
    """For comparison: Pilot's own press + pause, which adds its synchronisation waits."""
    app = CnnApp(seed_params, "seed", color="truecolor", reference="sync", predictions="sync")
    driver = Driver(app, (120, 40))
    keys = cycle(["n"] * 24 + ["p"] * 24)

    async def step(pilot) -> None:  # noqa: ANN001
        await pilot.press(next(keys))
        await pilot.pause()

    try:
        benchmark.pedantic(lambda: driver.do(step), rounds=48, warmup_rounds=2)
    finally:
        driver.close()


def test_startup_to_first_paint(benchmark):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

    def start() -> float:
        out = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT], capture_output=True,
                             text=True, env=env, check=True, timeout=60)
        return json.loads(out.stdout.strip().splitlines()[-1])["first_paint"]

    times: list[float] = []
    benchmark.pedantic(lambda: times.append(start()), rounds=5, iterations=1)
    times.sort()
    benchmark.extra_info["first_paint_median_s"] = times[len(times) // 2]
    print(f"\nfirst paint (inside the process, median of {len(times)}): "
          f"{times[len(times) // 2] * 1000:.0f} ms")
