"""``cnntui trace`` and ``cnntui verify``: the trace as a table or JSON, and the three-way check
(the lesson's loops, PyTorch, finite differences) with a verdict per tensor."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, fields

import numpy as np
from rich import box
from rich.table import Table

from cnntui import gradcheck, model, reference, stats
from cnntui.data import load_sample, weights_data
from cnntui.reference_process import NO_TORCH, ReferenceUnavailable, torch_available
from cnntui.terminal import Console, encodable, finite_or_null
from cnntui.trace import Trace, trace_sample


@dataclass(frozen=True)
class Options:
    """What ``cnntui trace`` and ``cnntui verify`` are asked for."""

    weights: str = model.PRETRAINED  # the debugger's default too
    index: int | None = None  # None: 0, unless an image is given
    data: str = "digits"
    image: str | None = None
    label: int | None = None  # None: the digit's own (an image: the predicted class)
    dtype: str = "float64"
    arch: str | None = None  # None: what the weights file records, else simple
    json: bool = False
    values: bool = False  # trace --json: every value too
    no_torch: bool = False  # never load PyTorch: trace leaves its column empty, verify refuses

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def trace_for(args: Options | argparse.Namespace, attach: bool = True
              ) -> tuple[Trace, dict[str, np.ndarray]]:
    """The trace ``--weights --arch --data --index --image --label --dtype`` ask for."""
    arch = model.architecture_of(args.weights, args.arch)
    params, weights = model.weights_from(args.weights, arch, weights_data(args.data, args.image))
    sample = load_sample(args.data, args.index, args.image, args.label)
    trace = trace_sample(params, sample, dtype=args.dtype, weights=weights, arch=arch)
    if attach:
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
    doc = {
        "index": trace.index, "input": trace.input_name, "label": trace.label,
        "label_given": trace.label_given, "prediction": trace.prediction,
        "probs": trace.probs.tolist(), "loss": trace.loss, "dtype": trace.dtype,
        "weights": trace.weights, "arch": trace.arch.key, "steps": steps,
    }
    if values:  # the parameters too: everything needed to rerun each step's line
        doc["params"] = {k: v.tolist() for s in trace.steps for k, v in s.params.items()}
    return finite_or_null(doc)  # NaN and Inf (overflowing weights) become null


def print_trace(trace: Trace, console: Console) -> None:
    title = (f"{trace.arch.name}  {trace.input_name}  {trace.label_text}  predicted "
             f"{trace.prediction} ({trace.confidence:.0%})  loss {trace.loss:.4f}  "
             f"weights: {trace.weights}  {trace.dtype}")
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


def main(command: str, args: Options) -> int:
    if command == "trace":
        torch = not args.no_torch and torch_available()
        if not torch and not args.no_torch:
            print(f"cnntui: {NO_TORCH}; the vs torch column is empty", file=sys.stderr)
        with np.errstate(all="ignore"):  # overflowing weights are flagged in the output
            trace, _ = trace_for(args, attach=torch)
            if args.json:
                json.dump(trace_document(trace, args.values), sys.stdout, allow_nan=False)
                sys.stdout.write("\n")
            else:
                print_trace(trace, Console())
        return 0
    return verify(args)


@dataclass
class Verification:
    """The three-way check of one trace: a row per tensor, and what to tell the user."""

    rows: list[dict]
    problems: list[str]  # "<tensor> disagrees: <why>", in trace order
    notes: list[str]  # ties the references followed
    unchecked: dict[str, str]  # gradient -> why finite differences checked none of it

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_trace(trace: Trace, params: dict[str, np.ndarray]) -> Verification:
    """Every tensor of ``trace`` against the lesson loops and PyTorch, every gradient against
    finite differences (in float64, from ``params``)."""
    with np.errstate(all="ignore"):  # overflowing weights: the NaN/Inf are reported per tensor
        against = {"lesson": reference.check(trace, reference.lesson_reference(trace)),
                   "torch": reference.check(trace, reference.torch_reference(trace))}
        checks = {g.name: g for g in gradcheck.gradcheck(params, trace["x"].value, trace.label,
                                                          arch=trace.arch)}
    tol = reference.TOLERANCE[trace.dtype]
    rows, problems, notes = [], [], []
    for step in trace.steps:
        lesson_a, torch_a = against["lesson"][step.name], against["torch"][step.name]
        g = checks.get(step.name)
        ok = lesson_a.ok and torch_a.ok and (g is None or g.ok is not False)
        why = [f"{who}: {_disagreement(a)}" for who, a in
               (("the lesson loops", lesson_a), ("PyTorch", torch_a)) if not a.ok]
        if g is not None and g.ok is False:
            why.append(f"finite differences: relative error {g.max_rel_error:.1e} >= "
                       f"{gradcheck.GRADCHECK_TOLERANCE:.0e}")
        if why:
            problems.append(f"{step.name} disagrees: " + "; ".join(why))
        for a in (lesson_a, torch_a):
            if a.ok and a.note and a.note not in notes:
                notes.append(a.note)
        rows.append({"name": step.name, "phase": step.phase,
                     "lesson_max_abs_diff": _num(lesson_a.max_abs_diff),
                     "lesson_rel_err": _num(lesson_a.rel_err),
                     "torch_max_abs_diff": _num(torch_a.max_abs_diff),
                     "torch_max_rel_err": _num(torch_a.rel_err), "tolerance": tol,
                     "gradcheck_max_rel_error": _num(g.max_rel_error) if g else None,
                     "gradcheck_entries": g.checked if g else None,
                     "gradcheck": None if g is None else
                     {True: "ok", False: "disagrees", None: "not checked"}[g.ok],
                     "ok": ok})
    unchecked = {name: g.why_unchecked for name, g in checks.items() if g.ok is None}
    return Verification(rows, problems, notes, unchecked)


def verify(args: Options) -> int:
    """Exit 0 when every tensor agrees three ways, 1 (and the disagreeing tensors named)
    otherwise; ReferenceUnavailable (the CLI: one sentence, exit status 2) without PyTorch."""
    if args.no_torch or not torch_available():
        raise ReferenceUnavailable("verify cannot run " + (
            "with --no-torch: it checks every tensor against PyTorch" if args.no_torch else
            f"here: {NO_TORCH}"))
    trace, params = trace_for(args, attach=False)
    v = verify_trace(trace, params)
    rows, problems, notes, unchecked = v.rows, v.problems, v.notes, v.unchecked
    tol = reference.TOLERANCE[trace.dtype]
    ok_all = v.ok
    if args.json:
        json.dump({"index": trace.index, "input": trace.input_name, "label": trace.label,
                   "label_given": trace.label_given, "arch": trace.arch.key, "dtype": trace.dtype,
                   "weights": trace.weights,
                   "tolerances": {"reference": tol,
                                  "gradcheck": gradcheck.GRADCHECK_TOLERANCE},
                   "notes": notes, "disagreements": problems, "not_checked": list(unchecked),
                   "ok": ok_all, "tensors": rows}, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0 if ok_all else 1
    console = Console()
    table = Table(title=f"verify {trace.arch.name} {trace.input_name} ({trace.dtype}, "
                        f"weights: {trace.weights})")
    for col in ("name", "lesson loops rel", "PyTorch max|d|", "PyTorch rel",
                "finite diff rel (entries)", "verdict"):
        table.add_column(col, justify="left" if col in ("name", "verdict") else "right")
    for r in rows:
        fd = "-"
        if r["gradcheck"] == "not checked":
            fd = "not checked (0)"
        elif r["gradcheck"] is not None:
            fd = f"{_rel(r['gradcheck_max_rel_error'])} ({r['gradcheck_entries']})"
        table.add_row(r["name"], _rel(r["lesson_rel_err"]), _rel(r["torch_max_abs_diff"]),
                      _rel(r["torch_max_rel_err"]), fd,
                      "[green]ok[/]" if r["ok"] else "[bold red]DISAGREES[/]")
    console.print(table)
    console.print(
        f"tolerance on max|ours - reference| / max|reference|: {tol:.0e} ({trace.dtype}). Both "
        f"references run in float64 from the same weights and input, their backward passes "
        f"from our dlogits; dlogits itself is checked against probs - onehot in float64. "
        f"Finite differences (float64): CS231n relative error < "
        f"{gradcheck.GRADCHECK_TOLERANCE:.0e}.")
    for n in notes:
        console.print(f"note: {n}")
    for why in dict.fromkeys(unchecked.values()):
        names = ", ".join(name for name, w in unchecked.items() if w == why)
        console.print(f"note: not checked by finite differences: {names}: {why}")
    for p in problems:
        console.print(f"[bold red]{p}[/]")
    console.print("[bold green]all tensors agree[/]" if ok_all
                  else f"[bold red]{len(problems)} tensor(s) disagree[/]")
    return 0 if ok_all else 1


def _rel(v: float | None) -> str:
    return "nan/inf" if v is None else f"{v:.1e}"


def _disagreement(a: reference.Agreement) -> str:
    if not math.isfinite(a.rel_err):
        text = "NaN or Inf"
    elif a.rel_err > a.tolerance:
        text = f"relative error {a.rel_err:.1e} > {a.tolerance:.0e}"
    else:
        text = ""
    return "; ".join(t for t in (text, a.note if a.wrong_choices else "") if t)
