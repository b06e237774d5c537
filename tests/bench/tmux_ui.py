"""The stepper measured from outside, as a user sees it, in a real tmux (issue 11). Reported, never
asserted; run by hand, not by pytest (it needs tmux and takes a minute or more):

    python tests/bench/tmux_ui.py latency [--size 120x40] [--steps 80] [--early]
    python tests/bench/tmux_ui.py paint   [--size 120x40] [--runs 7]
    python tests/bench/tmux_ui.py idle    [--size 120x40] [--seconds 30]
    python tests/bench/tmux_ui.py training [--size 120x40] [--steps 30] [--seconds 20]
    python tests/bench/tmux_ui.py all     (latency at 80x24 and 120x40, paint, idle)

Options: ``--bin`` the command to run (default: the ``cnntui`` beside this Python), ``--args``
its arguments (default ``--index 5``).

- latency: a key (Right, 20 times, then Left, 20 times, ...) sent with ``tmux send-keys``, then
  ``tmux capture-pane`` polled until the pane's text changes: key-to-screen, tmux and the
  polling included (a trivial Textual app measures about 6.5 ms this way). Keys are 150 ms
  apart. By default it starts once PyTorch has loaded (the side pane shows its verdict);
  ``--early`` starts at the first paint, so the first steps happen while PyTorch loads.
- paint: process start (tmux spawning the command) to the first capture showing the header.
- idle: CPU time (user + system, every thread, from /proc) of the app's process over
  ``--seconds`` with no input, after PyTorch has loaded, as a percentage of one core.
- training: ``t`` opens the training screen and space starts the default run; once batches
  arrive, ``+`` and ``-`` (alternating, ``--steps`` of them, 300 ms apart) are timed until the
  header shows the new learning rate (the screen changes all the time while training, so only
  the rate counts). Then ``x`` stops the run and the app's idle CPU is measured as above
  (the trainer's child process, idle, is reported apart).

Each line reports the median, p95 and max (latency) or median and min-max (paint), with the
machine's load average; the machine is shared, so alternate and repeat.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SESSION = "cnntui-bench"
LOADING = "loading PyTorch"
ENV = "TERM=xterm-256color"  # what SSH usually brings: 256 colours (--args "--color truecolor")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout


def capture() -> str:
    return tmux("capture-pane", "-t", SESSION, "-p")


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def start(cmd: str, size: str) -> float:
    """A fresh tmux session running ``cmd`` at ``size``; the time just before it was spawned."""
    w, h = size.split("x")
    tmux("kill-session", "-t", SESSION)
    t0 = time.perf_counter()
    tmux("new-session", "-d", "-s", SESSION, "-x", w, "-y", h,
         f"env -u COLORTERM {ENV} {cmd}")
    return t0


def wait_for(condition, timeout: float = 60.0) -> str:  # noqa: ANN001
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        screen = capture()
        if condition(screen):
            return screen
        time.sleep(0.005)
    raise SystemExit(f"timed out; the screen:\n{capture()}")


def painted(screen: str) -> bool:
    return "cnntui" in screen and "step" in screen


def settled(screen: str) -> bool:
    return painted(screen) and LOADING not in screen


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def latency(cmd: str, size: str, steps: int, early: bool) -> list[float]:
    start(cmd, size)
    try:
        wait_for(painted if early else settled)
        if not early:
            time.sleep(1.0)
        lat = []
        for i in range(steps):
            key = "Right" if (i // 20) % 2 == 0 else "Left"
            before = capture()
            t0 = time.perf_counter()
            tmux("send-keys", "-t", SESSION, key)
            while capture() == before and time.perf_counter() - t0 < 2:
                pass
            lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.15)
        return lat
    finally:
        tmux("kill-session", "-t", SESSION)


def paint(cmd: str, size: str) -> float:
    t0 = start(cmd, size)
    try:
        wait_for(painted)
        return time.perf_counter() - t0
    finally:
        tmux("kill-session", "-t", SESSION)


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def idle(cmd: str, size: str, seconds: float) -> float:
    start(cmd, size)
    try:
        wait_for(settled)
        time.sleep(2.0)
        pid = int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}").strip())
        # the pane runs ``env ... cnntui``; env execs, so the pid is the app's
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        return (cpu_seconds(pid) - c0) / (time.perf_counter() - t0) * 100
    finally:
        tmux("kill-session", "-t", SESSION)


LR = re.compile(r" lr (\S+)")


def header_lr(screen: str) -> str | None:
    found = LR.search(screen.split("\n", 1)[0])
    return found.group(1) if found else None


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def training(cmd: str, size: str, presses: int, seconds: float) -> tuple[list[float], float,
                                                                           float]:
    """Key-to-screen latencies of + and - while training, then idle CPU (app, child) after."""
    start(cmd, size)
    try:
        wait_for(settled)
        tmux("send-keys", "-t", SESSION, "t")
        wait_for(lambda s: "cnntui training" in s)
        tmux("send-keys", "-t", SESSION, "Space")
        wait_for(lambda s: " epoch " in s.split("\n", 1)[0])
        time.sleep(1.0)
        lat = []
        for i in range(presses):
            before = header_lr(capture())
            t0 = time.perf_counter()
            tmux("send-keys", "-t", SESSION, "+" if i % 2 == 0 else "-")
            while header_lr(capture()) == before and time.perf_counter() - t0 < 5:
                pass
            lat.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.3)
        tmux("send-keys", "-t", SESSION, "x")
        wait_for(lambda s: any(w in s.split("\n", 1)[0] for w in ("stopped", "finished")))
        time.sleep(8.0)  # the run's notifications (6 s) have gone
        pid = int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}").strip())
        kids = children(pid)
        c0, k0, t0 = cpu_seconds(pid), sum(map(cpu_seconds, kids)), time.perf_counter()
        time.sleep(seconds)
        wall = time.perf_counter() - t0
        return (lat, (cpu_seconds(pid) - c0) / wall * 100,
                (sum(map(cpu_seconds, kids)) - k0) / wall * 100)
    finally:
        tmux("kill-session", "-t", SESSION)


def main() -> None:
    default_bin = str(Path(sys.executable).with_name("cnntui"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("latency", "paint", "idle", "training", "all"))
    ap.add_argument("--bin", default=default_bin)
    ap.add_argument("--args", default="--index 5")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--early", action="store_true")
    a = ap.parse_args()
    cmd = f"{a.bin} {a.args}"
    sizes = ("80x24", "120x40") if a.what == "all" else (a.size,)
    if a.what in ("latency", "all"):
        for size in sizes:
            lat = latency(cmd, size, a.steps, a.early)
            over = sum(x > 50 for x in lat)
            print(f"latency {size}{' early' if a.early else ''}: median "
                  f"{statistics.median(lat):.1f} ms  p95 {pct(lat, 0.95):.1f}  max {max(lat):.1f}"
                  f"  over 50 ms: {over}/{len(lat)}  (load {load()})", flush=True)
            if a.early:
                print("  first 10:", " ".join(f"{x:.0f}" for x in lat[:10]))
    if a.what in ("paint", "all"):
        for size in sizes:
            times = [paint(cmd, size) for _ in range(a.runs)]
            print(f"first paint {size}: median {statistics.median(times) * 1e3:.0f} ms  "
                  f"min {min(times) * 1e3:.0f}  max {max(times) * 1e3:.0f}  n={len(times)}  "
                  f"(load {load()})", flush=True)
    if a.what == "training":
        lat, app_cpu, child_cpu = training(cmd, a.size, min(a.steps, 30), a.seconds)
        print(f"training {a.size}: key median {statistics.median(lat):.1f} ms  "
              f"p95 {pct(lat, 0.95):.1f}  max {max(lat):.1f}  n={len(lat)}; idle after: app "
              f"{app_cpu:.2f}%, trainer child {child_cpu:.2f}% of a core over {a.seconds:.0f} s"
              f"  (load {load()})", flush=True)
    if a.what in ("idle", "all"):
        print(f"idle CPU {a.size}: {idle(cmd, a.size, a.seconds):.2f}% of a core over "
              f"{a.seconds:.0f} s  (load {load()})", flush=True)


if __name__ == "__main__":
    main()
