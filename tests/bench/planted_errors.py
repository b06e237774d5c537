"""The planted-error table: `python tests/bench/planted_errors.py [--confident FILE]`.

For every error that ``tests/test_verify.py`` plants in ``cnntui.ops``, every dtype and weights
(seed, shipped, and confident ones from ``cnntui train --epochs 40 --no-augment --seed 3``),
runs ``cnntui verify --json`` in-process on a few digits and prints whether the error was
caught (non-zero exit) and which tensor was named first. Runs against whatever ``cnntui`` is
importable, so the same table can be made for an older checkout (PYTHONPATH=...)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

from cnntui import ops, report


def load_plants():
    path = Path(__file__).resolve().parents[1] / "test_verify.py"
    spec = importlib.util.spec_from_file_location("test_verify", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--confident", help="weights of the confident network (default: train)")
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 444])
    args = parser.parse_args()
    tv = load_plants()
    confident = args.confident
    if confident is None:
        from cnntui.training import TrainConfig, Trainer

        trainer = Trainer(TrainConfig(epochs=40, augment=False, seed=3))
        trainer.run()
        confident = str(trainer.save("/tmp/cnntui-confident.npz"))
    weights = {"seed": "seed", "pretrained": "pretrained", "confident": confident}
    sure = {(w, d): tv.most_confident(spec, d) for w, spec in weights.items()
            for d in ("float64", "float32")}
    missed = 0
    print(f"{'planted error':28} {'dtype':8} " + " ".join(f"{w:>22}" for w in weights))
    for plant, dtype in tv.CASES:
        name, breaker, tensor = tv.PLANTS[plant]
        real = getattr(ops, name)
        cells = []
        for w, spec in weights.items():
            setattr(ops, name, breaker(real, dtype == "float32"))
            caught, named = 0, set()
            indices = [*args.digits, sure[(w, dtype)]]
            try:
                for index in indices:
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        code = report.verify(report.Options(weights=spec, index=index,
                                                            dtype=dtype, json=True))
                    doc = json.loads(out.getvalue())
                    bad = [t["name"] for t in doc["tensors"] if not t["ok"]]
                    caught += code != 0
                    named.add(bad[0] if bad else "-")
            finally:
                setattr(ops, name, real)
            missed += len(indices) - caught
            cells.append(f"{caught}/{len(indices)} {','.join(sorted(named))}")
        print(f"{plant:28} {dtype:8} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"digits: {args.digits} and the surest digit per weights and dtype {sure}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
