"""``cnntui explain``: how one cell of one step of a digit's trace was computed, from its parts
(cnntui/explain.py), as text or as strict JSON. The parser imports this module, so the
network's modules are imported only when the command runs."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


class CellError(ValueError):
    """A --cell that is not a comma-separated list of whole numbers."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--step", required=True, help="a step's name, e.g. z1, p2, dW2, dp1, logits")
    p.add_argument("--cell", required=True, help="its indices, comma-separated, e.g. 0,3,4")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of text")


def parse_cell(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CellError(f"--cell {text!r} is not a comma-separated list of whole numbers, such "
                        f"as 0,3,4") from None


def _grid_text(grid) -> list[str]:
    """A grid as rows of numbers; marked cells (padding, the argmax) in brackets."""
    marks = np.zeros(grid.data.shape, dtype=bool) if grid.marks is None else grid.marks
    rows = [" ".join(f"[{v:9.3g}]" if m else f" {v:9.3g} " for v, m in zip(r, mr, strict=True))
            for r, mr in zip(grid.data, marks, strict=True)]
    return [f"{grid.label}:", *("  " + r for r in rows)]


def main(args: argparse.Namespace) -> int:
    from cnntui import explain
    from cnntui.report import trace_for

    cell = parse_cell(args.cell)
    with np.errstate(all="ignore"):  # overflowing weights show as NaN/Inf in the numbers
        trace, _ = trace_for(args, attach=False)
        e = explain.explain_cell(trace, args.step, cell)
    if args.json:
        json.dump(e.to_json(), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    out = [f"{trace.arch.name}  {trace.input_name} ({trace.label_text})  weights: "
           f"{trace.weights}  {trace.dtype}", *e.lines]
    for grid in e.grids:
        out += _grid_text(grid)
    if e.receptive_field is not None:
        r0, r1, c0, c1 = e.receptive_field
        out.append(f"receptive field: {r1 - r0 + 1}x{c1 - c0 + 1} pixels of x")
    print("\n".join(out))
    return 0
