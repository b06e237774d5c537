"""Steps while the PyTorch reference loads (issue 11: none over 50 ms).

Run: ``python tests/bench/reference_load_steps.py [MODE ...] [--rounds N]`` (modes: process
thread). Each round is a fresh process: the stepper at 120x40 under Pilot, stepping (right,
right, ..., left, ...) from the first paint until 1 s after PyTorch's diffs are shown; each
step is timed from the key press to the screen updated (``press`` then ``pause``). ``off`` (no
reference) is the baseline: its first 3 s count as "while loading".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys, time
    from cnntui.cli import limit_threads
    limit_threads()
    from cnntui.model import weights_from
    from screens.app import CnnApp, freeze_heap

    async def main(mode):
        params, desc = weights_from("pretrained")
        app = CnnApp(params, desc, index=5, color="truecolor", reference=mode)
        freeze_heap()
        times, during, keys, done_at = [], [], ["right"] * 12 + ["left"] * 12, None
        arrival = None
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            i = 0
            t0 = time.perf_counter()
            while done_at is None or time.perf_counter() - done_at < 1.0:
                loading = app.reference_state == "loading" or (
                    mode == "off" and time.perf_counter() - t0 < 3)
                t = time.perf_counter()
                await pilot.press(keys[i % len(keys)])
                await pilot.pause()
                dt = (time.perf_counter() - t) * 1000
                times.append(dt)
                still = app.reference_state == "loading" or (
                    mode == "off" and time.perf_counter() - t0 < 3)
                if loading and still:
                    during.append(dt)
                elif loading:  # the diffs arrived during this step (then the picker's
                    arrival = dt  # predictions start in a thread)
                i += 1
                if done_at is None and not still:
                    done_at = time.perf_counter()
                await asyncio.sleep(0.03)
        print(json.dumps({"during": during, "all": times, "state": app.reference_state,
                          "arrival": arrival}))

    asyncio.run(main(sys.argv[1]))
""")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("modes", nargs="*", default=["process", "thread", "off"])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    for _ in range(args.rounds):
        for mode in args.modes:  # alternated: the machine is shared
            out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                                 text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"load: {os.getloadavg()}")
    for mode, rs in runs.items():
        during = [t for r in rs for t in r["during"]]
        every = [t for r in rs for t in r["all"]]
        arrivals = [round(r["arrival"]) for r in rs if r["arrival"] is not None]
        worst = [round(max(r["during"] + [r["arrival"] or 0])) for r in rs]
        text = "no step entirely" if not during else (
            f"{len(during)} steps, median {statistics.median(during):.0f} ms, max "
            f"{max(during):.0f}, over 50 ms: {sum(t > 50 for t in during)}")
        print(f"{mode:8s} while loading: {text}; the step the diffs arrive in {arrivals} ms; "
              f"worst per round {worst} ms; every step's median {statistics.median(every):.0f}"
              f" ms; states {[r['state'] for r in rs]}")

if __name__ == "__main__":
    main()
