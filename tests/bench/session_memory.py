"""Memory of one settled stepper session, per way of running the PyTorch reference (issue 12).

Run: ``python tests/bench/session_memory.py [MODE ...] [--rounds N]`` (modes: process thread
off). Each round is a fresh process: the stepper at 120x40 (headless) on the shipped weights,
until PyTorch's diffs are shown, then ``SETTLE`` seconds more; then one digit change and its
diffs. Every mode has the picker's predictions computed by then (the app computes them after
the first diffs). PSS and RSS come from /proc/<pid>/smaps_rollup: the session when settled, and
every helper process (a child of the session) sampled every 20 ms while alive.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

SETTLE = 3.0

SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    from cnntui.cli import limit_threads
    limit_threads()
    from cnntui.model import weights_from
    from cnntui import reference_process
    from screens.app import CnnApp, freeze_heap
    reference_process.LINGER = float(sys.argv[3])

    def rollup(pid):
        out = {}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("Rss", "Pss"):
                        out[k] = int(v.split()[0]) / 1024  # MiB
        except OSError:
            return None
        return out

    def children(pid):
        kids = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
        return kids

    peak = {"child_pss": 0.0, "sum_pss": 0.0, "children_seen": set()}
    def sample():
        while True:
            me = rollup(os.getpid())
            kids = [r for c in children(os.getpid()) if (r := rollup(c))]
            peak["children_seen"].update(children(os.getpid()))
            cp = sum(k["Pss"] for k in kids)
            peak["child_pss"] = max(peak["child_pss"], cp)
            if me:
                peak["sum_pss"] = max(peak["sum_pss"], me["Pss"] + cp)
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()

    MODE, SETTLE = sys.argv[1], float(sys.argv[2])
    result = {}

    class Measured(CnnApp):
        def on_mount(self):
            super().on_mount()
            self.t0 = time.perf_counter()
            self.set_interval(0.05, self.poll)
            self.phase = "first"

        def shown(self):
            return (self.reference_state not in ("loading",)
                    and (MODE == "off" or self.trace.steps[0].torch_value is not None))

        def poll(self):
            if self.phase == "first" and self.shown():
                result["first_diffs_s"] = time.perf_counter() - self.t0
                self.ensure_predictions()  # as the app does after the diffs (off: the picker)
                self.phase, self.t1 = "settling", time.perf_counter()
            elif self.phase == "settling" and time.perf_counter() - self.t1 > SETTLE:
                result["settled"] = rollup(os.getpid())
                result["settled_children"] = [rollup(c) for c in children(os.getpid())]
                self.phase, self.t2 = "next", time.perf_counter()
                self.set_digit(self.index + 1)
            elif self.phase == "next" and self.shown():
                result["next_diffs_s"] = time.perf_counter() - self.t2
                self.phase, self.t3 = "settling2", time.perf_counter()
            elif self.phase == "settling2" and time.perf_counter() - self.t3 > SETTLE:
                result["settled2"] = rollup(os.getpid())
                result["settled2_children"] = [rollup(c) for c in children(os.getpid())]
                self.exit()

    params, desc = weights_from("pretrained")
    app = Measured(params, desc, index=5, color="truecolor", reference=MODE)
    freeze_heap()
    app.run(headless=True, size=(120, 40))
    result["peak_child_pss"] = peak["child_pss"]
    result["peak_sum_pss"] = peak["sum_pss"]
    result["helpers_started"] = len(peak["children_seen"])
    result["torch_in_ui"] = "torch" in sys.modules
    print(json.dumps(result))
""")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("modes", nargs="*", default=["process", "thread", "off"],
                   help="MODE or MODE:LINGER:SETTLE (seconds; defaults: the app's linger, "
                        f"{SETTLE})")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from cnntui.reference_process import LINGER

    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    for _ in range(args.rounds):
        for spec in args.modes:  # alternated: the machine is shared
            mode, linger, settle = (spec.split(":") + ["", ""])[:3]
            out = subprocess.run([sys.executable, "-c", SCRIPT, mode, settle or str(SETTLE),
                                  linger or str(LINGER)],
                                 capture_output=True, text=True, check=True)
            runs[spec].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"load: {os.getloadavg()}")
    for mode, rs in runs.items():
        def med(f, rs=rs):
            vals = [f(r) for r in rs]
            return f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})"
        print(f"{mode:12s} settled PSS {med(lambda r: r['settled']['Pss'])} MiB, "
              f"RSS {med(lambda r: r['settled']['Rss'])}; "
              f"after a digit change PSS {med(lambda r: r['settled2']['Pss'])}; "
              f"helper alive at settle: {rs[0]['settled_children']}; "
              f"peak helper PSS {med(lambda r: r['peak_child_pss'])}, "
              f"peak session+helper {med(lambda r: r['peak_sum_pss'])}; "
              f"diffs after {med(lambda r: 1000 * r['first_diffs_s'])} ms, "
              f"next digit {med(lambda r: 1000 * r['next_diffs_s'])} ms; "
              f"torch in UI: {rs[0]['torch_in_ui']}")


if __name__ == "__main__":
    main()
