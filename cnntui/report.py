"""``cnntui trace`` and ``cnntui verify``: the trace as a table or JSON, and the three-way check
(the lesson's loops, PyTorch, finite differences) with a verdict per tensor."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from rich import box
from rich.table import Table

from cnntui import gradcheck, lesson, model, reference, stats
from cnntui.data import load_digits
from cnntui.terminal import Console, encodable, finite_or_null
from cnntui.trace import Trace, build_trace

LESSON_TOLERANCE = 1e-12  # float64: the loops and the fast path add the same products


def _trace(args: argparse.Namespace) -> tuple[Trace, dict[str, np.ndarray]]:
    params, weights = model.weights_from(args.weights)
    x, label = load_digits().get(args.index)
    trace = build_trace(params, x, label, index=args.index, dtype=args.dtype, weights=weights)
    reference.attach(trace)
    return trace, params


def _num(v: float) -> float | None:
    """JSON has no NaN or Inf: they become null (the nan/inf counts say how many there were)."""
    return v if math.isfinite(v) else None


def short(v: float) -> str:
    """A number in at most 7 characters, so a 25-row table fits an 80-column terminal."""
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.3g}"


def trace_document(trace: Trace, values: bool = False) -> dict:
    steps = []
    for step in trace.steps:
        s = stats.summarize(step.value)
        doc = {
            "index": step.index, "phase": step.phase, "layer": step.layer, "name": step.name,
            "shape": list(s.shape), "dtype": s.dtype, "min": _num(s.min), "max": _num(s.max),
            "mean": _num(s.mean), "std": _num(s.std), "nan": s.nan, "inf": s.inf,
            "zeros": s.zeros, "torch_max_abs_diff": step.torch_max_abs_diff,
            "torch_max_rel_err": step.torch_max_rel_err, "formula": step.formula,
            "code": step.code,
        }
        if values:
            doc["values"] = step.value.tolist()
        steps.append(doc)
    return finite_or_null({  # NaN and Inf (overflowing weights) become null
        "index": trace.index, "label": trace.label, "prediction": trace.prediction,
        "probs": trace.probs.tolist(), "loss": trace.loss, "dtype": trace.dtype,
        "weights": trace.weights, "steps": steps,
    })


def print_trace(trace: Trace, console: Console) -> None:
    title = (f"digit #{trace.index}  label {trace.label}  predicted {trace.prediction} "
             f"({trace.confidence:.0%})  loss {trace.loss:.4f}  weights: {trace.weights}"
             f"  {trace.dtype}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title=title)
    # where rich's ellipsis cannot be written (an ASCII locale), a cell too wide folds instead
    overflow = "ellipsis" if encodable("\u2026", console.file) else "fold"
    for col in ("step", "layer", "shape", "min", "max", "mean", "std", "nan/inf", "vs torch"):
        table.add_column(col, justify="left" if col in ("step", "layer") else "right",
                         no_wrap=overflow == "ellipsis", overflow=overflow)
    for step in trace.steps:
        s = stats.summarize(step.value)
        bad = s.nan + s.inf
        if step.index == trace.first_backward:
            table.add_section()
        table.add_row(
            f"{step.index + 1:>2} {step.name}", step.layer, "x".join(map(str, s.shape)),
            *(short(v) for v in (s.min, s.max, s.mean, s.std)),
            f"[bold red]{s.nan}/{s.inf}[/]" if bad else "0/0",
            "-" if step.torch_max_abs_diff is None else f"{step.torch_max_abs_diff:.0e}",
        )
    console.print(table)


def main(args: argparse.Namespace) -> int:
    if args.command == "trace":
        with np.errstate(all="ignore"):  # overflowing weights are flagged in the output
            trace, _ = _trace(args)
            if args.json:
                json.dump(trace_document(trace, args.values), sys.stdout, allow_nan=False)
                sys.stdout.write("\n")
            else:
                print_trace(trace, Console())
        return 0
    return verify(args)


def verify(args: argparse.Namespace) -> int:
    """Exit 0 when every tensor agrees three ways, 1 (and a red verdict) otherwise."""
    trace, params = _trace(args)
    x = trace["x"].value
    ours64 = trace if trace.dtype == "float64" else build_trace(params, x, trace.label)
    loops = lesson.lesson_tensors(params, x, trace.label)
    ties = reference.tie_breaks(
        ours64, {k[7:]: v for k, v in loops.items() if k.startswith("argmax:")},
        LESSON_TOLERANCE)
    if ties:  # equal maxima that the loops' rounding set apart otherwise: compare through ours
        loops = lesson.lesson_tensors(params, x, trace.label, reference.pool_choices(ours64))
    lesson_results = reference.compare_trace(ours64, loops, LESSON_TOLERANCE)
    notes = [n for n in (reference.tie_note("the lesson loops", ties),
                         next((s.torch_note for s in trace.steps if s.torch_note), "")) if n]
    checks = {g.name: g for g in gradcheck.gradcheck(params, x, trace.label)}
    rows, ok_all = [], True
    for step in trace.steps:
        lesson_diff, lesson_rel, lesson_tol = lesson_results[step.name]
        v = reference.verdict(step)
        g = checks.get(step.name)
        ok = bool(v.ok and lesson_rel <= lesson_tol and (g is None or g.ok))
        ok_all = ok_all and ok
        rows.append({"name": step.name, "phase": step.phase, "lesson_max_abs_diff": lesson_diff,
                     "lesson_rel_err": lesson_rel, "lesson_tolerance": lesson_tol,
                     "torch_max_abs_diff": step.torch_max_abs_diff,
                     "torch_max_rel_err": step.torch_max_rel_err,
                     "torch_tolerance": step.torch_tolerance,
                     "gradcheck_max_rel_error": g.max_rel_error if g else None,
                     "gradcheck_entries": g.checked if g else None, "ok": ok})
    if args.json:
        json.dump({"index": trace.index, "dtype": trace.dtype, "weights": trace.weights,
                   "tolerances": {"lesson": LESSON_TOLERANCE, "torch": reference.TOLERANCE,
                                  "gradcheck": gradcheck.GRADCHECK_TOLERANCE},
                   "notes": notes, "ok": ok_all, "tensors": rows}, sys.stdout)
        sys.stdout.write("\n")
    else:
        console = Console()
        table = Table(title=f"verify digit #{trace.index} ({trace.dtype}, weights: "
                            f"{trace.weights})")
        for col in ("name", "lesson loops rel", "PyTorch max|d|", "PyTorch rel",
                    "finite diff rel (entries)", "verdict"):
            table.add_column(col, justify="left" if col in ("name", "verdict") else "right")
        for r in rows:
            fd = (f"{r['gradcheck_max_rel_error']:.1e} ({r['gradcheck_entries']})"
                  if r["gradcheck_max_rel_error"] is not None else "-")
            table.add_row(r["name"], f"{r['lesson_rel_err']:.1e}",
                          f"{r['torch_max_abs_diff']:.1e}", f"{r['torch_max_rel_err']:.1e}", fd,
                          "[green]ok[/]" if r["ok"] else "[bold red]DISAGREES[/]")
        console.print(table)
        console.print(
            f"tolerances on max|d| / max|reference|: lesson loops {LESSON_TOLERANCE:.0e} (float64),"
            f" PyTorch {reference.TOLERANCE[trace.dtype]:.0e} ({trace.dtype}); backward tensors "
            f"also inherit dlogits' own difference. Finite differences: CS231n relative error "
            f"< {gradcheck.GRADCHECK_TOLERANCE:.0e}.")
        for n in notes:
            console.print(f"note: {n}; compared through our choices")
        console.print("[bold green]all tensors agree[/]" if ok_all
                      else "[bold red]some tensors disagree[/]")
    return 0 if ok_all else 1
