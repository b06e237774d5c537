"""The verifier on every digit: `python tests/bench/sweep_verify.py [--weights W ...]`.

Runs the whole three-way check (``report.verify_trace``, what ``cnntui verify`` runs) on all
1797 digits for each weights and dtype, and prints per combination how many digits disagreed
(with the weights right, each is a false alarm), how many needed a tie followed, and how many
gradients finite differences could not check. Exit 1 if any digit disagreed."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from cnntui import model, report
from cnntui.data import load_digits
from cnntui.trace import build_trace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["seed", "pretrained"])
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    parser.add_argument("--limit", type=int, default=None, help="first N digits only")
    args = parser.parse_args()
    digits = load_digits()
    n = args.limit or len(digits)
    alarms = 0
    for spec in args.weights:
        params, weights = model.weights_from(spec)
        for dtype in args.dtype:
            start, bad, tied, unchecked = time.perf_counter(), [], Counter(), Counter()
            for index in range(n):
                x, label = digits.get(index)
                trace = build_trace(params, x, label, index=index, dtype=dtype, weights=weights)
                v = report.verify_trace(trace, params)
                if not v.ok:
                    bad.append((index, v.problems[0]))
                for note in v.notes:
                    tied["relu" if "relu" in note else "pool"] += 1
                unchecked.update(list(v.unchecked))
            alarms += len(bad)
            print(f"{weights:>10} {dtype}: {n} digits, {len(bad)} disagree, ties followed "
                  f"{dict(tied)}, not checked by finite differences {dict(unchecked)}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            for index, problem in bad[:10]:
                print(f"    #{index}: {problem}", flush=True)
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
