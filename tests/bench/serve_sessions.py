"""Sessions per core and per GiB for ``cnntui serve``:
`python tests/bench/serve_sessions.py [--sessions N] [--rate R] [--seconds S] [-- cnntui options]`.

Starts ``cnntui serve`` on a free port, opens N tabs in headless Chromium, waits until every
session shows the PyTorch diff pane and its memory has settled, and prints each session
process's PSS (proportional set size, /proc/PID/smaps_rollup: shared pages split between the
processes that map them, so PSS adds up across sessions) and the server's. Then it presses
an arrow R times a second in one tab for S seconds (24 Right then 24 Left: steps 1 to 25 and
back, so every press moves) and prints the CPU time (user + system) that the sessions and the
server used per second of wall clock."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_helpers import (  # noqa: E402
    header,
    make_browser,
    open_tab,
    screen,
    send_keys,
    sessions,
    start_server,
    stop_server,
    wait,
)


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no Pss in /proc/{pid}/smaps_rollup")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def settled(pids: list[int], quiet: float = 5.0, tolerance: float = 0.5) -> list[float]:
    """PSS of each pid once none moved by more than ``tolerance`` MiB for ``quiet`` seconds."""
    last, since = [pss_mib(p) for p in pids], time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(1)
        now = [pss_mib(p) for p in pids]
        if any(abs(a - b) > tolerance for a, b in zip(now, last, strict=True)):
            last, since = now, time.monotonic()
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=5.0, help="Right presses per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--window", default="1300,900", help="browser window, pixels W,H")
    parser.add_argument("app_args", nargs="*", help="options for the debugger (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnntui-serve-bench-") as folder:
        proc, url = start_server(args.app_args, Path(folder))
        browser = make_browser(Path(folder), size=args.window)
        try:
            tabs = []
            for _ in range(args.sessions):
                tabs.append(open_tab(browser, url))
                wait("the PyTorch diffs", lambda: "PyTorch" in screen(browser), timeout=180)
            pids = wait(f"{args.sessions} sessions",
                        lambda: len(s := sessions(proc.pid)) == args.sessions and s)
            size = browser.execute_script("const t = window.cnntuiTerminal; "
                                          "return t.cols + 'x' + t.rows")
            print(f"terminal {size}: {header(browser).strip()[:60]}...")
            pss = settled(pids)
            server = pss_mib(proc.pid)
            print(f"{args.sessions} sessions settled, PSS MiB: median {statistics.median(pss):.1f}"
                  f" (min {min(pss):.1f}, max {max(pss):.1f}); server {server:.1f}; "
                  f"total {sum(pss) + server:.0f}")
            print(f"  sessions per GiB: {1024 / statistics.median(pss):.1f}")
            browser.switch_to.window(tabs[0])
            before = {p: cpu_seconds(p) for p in [*pids, proc.pid]}
            start, presses = time.monotonic(), 0
            while time.monotonic() - start < args.seconds:
                send_keys(browser, "\ue014" if presses // 24 % 2 == 0 else "\ue012")  # Right, Left
                presses += 1
                time.sleep(max(0.0, start + presses / args.rate - time.monotonic()))
            wall = time.monotonic() - start
            used = {p: cpu_seconds(p) - t for p, t in before.items()}
            stepping = sum(used[p] for p in pids)
            print(f"stepping {presses} presses in {wall:.1f} s ({presses / wall:.1f}/s): "
                  f"sessions {stepping / wall:.1%} of a core (the idle ones "
                  f"{sum(used[p] for p in pids if used[p] < max(used[q] for q in pids)) / wall:.1%}"
                  f"), server {used[proc.pid] / wall:.1%}; "
                  f"sessions per core at this rate: {wall / max(stepping, 1e-9):.1f}")
            print(f"terminal after: {header(browser).strip()[:40]}...")
        finally:
            browser.quit()
            stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
