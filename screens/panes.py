"""The text panes of the stepper, as Rich Text built from a Step: header, stats, gradient sizes,
the PyTorch comparison, the explanation, and the colour scale. Formatting only: every number
comes from the trace or from ``cnntui.stats``."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from cnntui import stats
from cnntui.trace import Step, Trace
from screens.colors import SPECIAL_GLYPHS, SPECIAL_NAMES, Palette
from screens.views import View, flat_channels

SPARK = " ▁▂▃▄▅▆▇█"
OK_STYLE = "bold green"
BAD_STYLE = "bold white on red"
WARN_STYLE = "bold yellow"
KEY_STYLE = "dim"


def num(v: float) -> str:
    """A number in at most 9 characters."""
    if v == 0:
        return "0"
    if not np.isfinite(v):
        return str(v)
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.2e}" if 1e-99 <= abs(v) < 1e100 else f"{v:.1e}"  # 3-digit exponents


def num_within(v: float, width: int) -> str:
    """``num(v)``, with fewer digits if it would not fit in ``width`` characters: digits go,
    never the sign or the exponent."""
    text = num(v)
    if not np.isfinite(v):
        return text
    for digits in (3, 2, 1):
        if len(text) <= width:
            return text
        text = f"{v:.{digits}g}"
    return text if len(text) <= width else f"{v:.0e}"


def nonfinite_flags(nan: int, posinf: int, neginf: int) -> list[str]:
    """Loud lovely-tensors style flags with counts: ``NaN! x3``, ``+Inf! x1``."""
    return [f"{name}! x{n}" for name, n in zip(SPECIAL_NAMES, (nan, posinf, neginf),
                                                  strict=True) if n]


def step_flags(step: Step) -> list[str]:
    """The NaN/Inf flags of a step's tensor (empty when it is finite)."""
    return nonfinite_flags(*stats.nonfinite_counts(step.value))


PHASE_SHORT = {"forward": "fwd", "backward": "bwd"}  # as the step bar says: the loss fits 80


def header(trace: Trace, step: Step, weights: str, playing: bool = False,
           first_bad: Step | None = None, update: bool = False) -> Text:
    """``first_bad``: the first step of the pass whose tensor has a NaN or an Inf, if any;
    ``update``: on the SGD step after the last one."""
    n = len(trace.steps)
    right = trace.prediction == trace.label
    t = Text(no_wrap=True, overflow="ellipsis")
    # most important first: at 80 columns the end is what gets cut
    t.append(" cnntui ", "bold reverse")
    if update:
        t.append(" after the pass: update", "bold")
        t.append(" SGD")
    else:
        t.append(f" step {step.index + 1}/{n} {PHASE_SHORT[step.phase]}", "bold")
        t.append(f" {step.name}")
    flags = [] if update else step_flags(step)
    if flags:
        t.append(" " + " ".join(flags), BAD_STYLE)
    elif first_bad is not None:
        t.append(f" (NaN/Inf from {first_bad.name})", WARN_STYLE)
    if playing:
        t.append("  ▶ playing", WARN_STYLE)
    t.append(f" {trace.input_name} ", "bold")
    t.append(f"({trace.label_text}, ")
    if np.all(np.isfinite(trace.probs)):
        t.append(f"pred {trace.prediction} at {trace.confidence:.0%}",
                 "green" if right else "bold red")
        t.append(f", loss {num(trace.loss)}")
    else:
        t.append("no prediction: probs NaN!", BAD_STYLE)
    t.append(")  ")
    t.append(f"{trace.arch.key} ", "bold")
    t.append("weights: ", KEY_STYLE)
    t.append(weights)
    return t


def title(step: Step, view: View, reduction: int = 1) -> Text:
    """``reduction``: the maps are drawn at 1/reduction resolution so that all channels fit."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{step.layer}  ", "bold")
    t.append(f"{step.name} {tuple(step.value.shape)}", "bold cyan")
    flags = step_flags(step)
    if flags:
        t.append("  " + " ".join(flags), BAD_STYLE)
    if reduction > 1:
        keys = f"0-{view.channels - 1}" if view.channels > 1 else "0"
        t.append(f"  shown at 1/{reduction} ({keys}: full size)", WARN_STYLE)
    t.append(f"  {view.title}", KEY_STYLE)
    return t


def stats_text(step: Step, width: int = 27) -> Text:
    """Lovely-tensors style summary; two numbers per line when ``width`` allows."""
    s = stats.summarize(step.value)
    t = Text()
    t.append(f"{step.name} ", "bold")
    t.append(f"{s.shape}\n")
    t.append(f"{s.dtype} n={s.size}\n", KEY_STYLE)
    if s.nonfinite:
        t.append(f"of the {s.finite} finite values:\n" if s.finite else "no finite values\n",
                 WARN_STYLE)
    pairs = [("min", s.min), ("max", s.max), ("μ", s.mean), ("σ", s.std)]
    wide = width >= 24
    for k, (name, v) in enumerate(pairs):
        t.append(f"{name:<4}", KEY_STYLE)
        t.append(f"{num(v):<10}" if wide and k % 2 == 0 else num(v))
        if not wide or k % 2:
            t.append("\n")
    hist = list(s.histogram)
    while len(hist) + 5 > width and len(hist) > 4:  # narrow pane: merge neighbouring bins
        hist = [a + b for a, b in zip(hist[::2], hist[1::2], strict=True)]
    top = max(hist) or 1
    spark = "".join(SPARK[int(round(c / top * (len(SPARK) - 1)))] if c else " " for c in hist)
    t.append("hist ", KEY_STYLE)
    t.append(spark, "cyan")
    t.append("\n")
    t.append("zeros ", KEY_STYLE)
    t.append(f"{s.zeros} ({s.zeros / max(s.size, 1):.0%})\n")
    t.append("nan ", KEY_STYLE)
    t.append(str(s.nan), BAD_STYLE if s.nan else "")
    if s.inf:  # a line of their own: the counts can be long
        t.append("\n+inf ", KEY_STYLE)
        t.append(str(s.posinf), BAD_STYLE if s.posinf else "")
        t.append("  -inf ", KEY_STYLE)
        t.append(str(s.neginf), BAD_STYLE if s.neginf else "")
    else:
        t.append("  inf ", KEY_STYLE)
        t.append("0")
    for flag in s.flags():
        t.append("\n")
        t.append(f" !! {flag} ", BAD_STYLE)
    return t


def grad_text(step: Step, trace: Trace, width: int = 20) -> Text | None:
    """Per-channel L2 norm bars and, for parameters, the update/weight ratio. None if forward."""
    if step.phase != "backward":
        return None
    v = np.asarray(step.value)
    if v.ndim == 2:  # (392, 10): one norm per class
        groups, what = v.T, "class"
    elif v.ndim == 1 and v.size > 16:
        c = flat_channels(trace)
        groups, what = (v.reshape(c, -1) if v.size % c == 0 else v[None]), "channel"
    elif v.ndim == 1:
        groups, what = None, ""
    else:
        groups, what = v, "filter" if step.is_param_grad else "channel"
    t = Text()
    t.append("gradient ", "bold")
    total = stats.norm(v)
    t.append(f"‖{step.name}‖ ")
    t.append(num(total), "" if np.isfinite(total) else BAD_STYLE)
    t.append("\n")
    if groups is not None:
        norms = stats.channel_norms(groups)
        finite = norms[np.isfinite(norms)]
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        bar_w = max(4, width - 12)
        t.append(f"L2 per {what}\n", KEY_STYLE)
        for i, n in enumerate(norms):
            t.append(f"{i:>2} ", KEY_STYLE)
            if not np.isfinite(n):
                label = "NaN!" if np.isnan(n) else "Inf!"
                t.append(f"{label:<{bar_w}}", BAD_STYLE)
                t.append(f" {num(float(n))}\n", BAD_STYLE)
                continue
            t.append(eighths_bar(n / top, bar_w), "magenta")
            t.append(f" {num(float(n))}\n")
    if step.is_param_grad:
        pname = step.name[1:]
        ratio = stats.update_ratio(step.value, step.params[pname], lr=0.01)
        t.append(f"|0.01·{step.name}|/|{pname}|\n", KEY_STYLE)
        style = OK_STYLE if 1e-5 <= ratio <= 1e-2 else \
            WARN_STYLE if np.isfinite(ratio) else BAD_STYLE
        t.append(f"  {num(ratio)}", style)
        t.append(" (≈1e-3 healthy)" if width >= 26 else "", KEY_STYLE)
        t.append("\n")
    t.rstrip()
    return t


def eighths_bar(fraction: float, width: int) -> str:
    """A bar ``fraction`` (0..1) of ``width`` cells long in eighths of a cell, padded to width."""
    full = min(width, max(0.0, fraction) * width)
    bar = "█" * int(full) + (" ▏▎▍▌▋▊▉"[int((full % 1) * 8)] if full < width else "")
    return f"{bar:<{width}}"


def torch_text(step: Step, state: str, verdict: tuple[bool | None, str] | None) -> Text:
    """``state``: "loading" | "off" | "off: why" | "failed: why" | "ready"."""
    t = Text()
    t.append("PyTorch ", "bold")
    if state == "loading":
        t.append("\nloading PyTorch...", WARN_STYLE)
        return t
    if state.startswith("off"):
        t.append("\n" + (state.partition(": ")[2] or "reference disabled"), KEY_STYLE)
        return t
    if state.startswith("failed"):
        t.append("\n" + state, BAD_STYLE)
        return t
    if step.torch_value is None:
        t.append("\nnot run for this digit yet", KEY_STYLE)
        return t
    tv = stats.summarize(step.torch_value)
    t.append(f"{tv.dtype}\n", KEY_STYLE)
    t.append("torch ", KEY_STYLE)
    t.append(f"[{num(tv.min)}, {num(tv.max)}]\n")
    if tv.nonfinite:
        t.append("torch " + " ".join(tv.flags()) + "\n", BAD_STYLE)
    diff, rel = step.torch_max_abs_diff or 0.0, step.torch_max_rel_err or 0.0
    t.append("max|d| ", KEY_STYLE)
    t.append(num(diff), "" if np.isfinite(diff) else BAD_STYLE)
    t.append("\n")
    t.append("rel    ", KEY_STYLE)
    t.append(num(rel), "" if np.isfinite(rel) else BAD_STYLE)
    if step.torch_tolerance is not None:
        t.append(" tol ", KEY_STYLE)
        t.append(f"{step.torch_tolerance:.0e}")
    t.append("\n")
    if tv.nonfinite or stats.summarize(step.value).nonfinite:
        t.append("NaN/Inf: no number to compare there\n", BAD_STYLE)
    if verdict is not None:
        ok, text = verdict
        if ok:
            t.append("✓ " + text, OK_STYLE)
        elif ok is None:
            t.append(text, KEY_STYLE)
        else:
            t.append("✗ " + text, BAD_STYLE)
    return t


def explain_text(step: Step, legend: str = "") -> Text:
    t = Text()
    t.append("math ", KEY_STYLE)
    t.append(step.formula, "bold")
    t.append("\nnumpy ", KEY_STYLE)
    t.append(step.code, "green")
    if step.lesson_function:
        t.append(f"   (lesson: {step.lesson_function})", KEY_STYLE)
    if legend:
        t.append("\n" + legend, "italic")
    return t


def scale_text(view: View, pal: Palette, width: int) -> Text:
    """The colour scale with its numeric range, always visible under the heatmaps."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if view.kind == "bars":
        _nonfinite_legend(t, view, pal)
        t.append(f"bars scaled to [{num(view.lo)}, {num(view.hi)}] (finite values)"
                 if view.has_nonfinite else f"bars scaled to [{num(view.lo)}, {num(view.hi)}]",
                 KEY_STYLE)
        return t
    _nonfinite_legend(t, view, pal)  # first: the end of the line is what a narrow pane cuts
    n = pal.n
    ramp_w = max(n, min(24, width - 34))
    levels = np.rint(np.linspace(0, n - 1, ramp_w)).astype(int)
    # per channel, each map has its own range r (in its label): the ends are symbolic
    lo = num(view.lo) if view.shared else ("-r" if view.diverging else "0")
    hi = num(view.hi) if view.shared else "r"
    if view.magnitude:
        t.append(f"|·| log: {num(view.hi / 1e4) if view.shared else 'r/1e4'} ", KEY_STYLE)
    else:
        t.append(f"{lo} ")
    for lv in levels:
        text, style = pal.swatch(int(lv))
        t.append(text, style)
    t.append(f" {hi}")
    t.append("  shared" if view.shared else "  r per channel", KEY_STYLE)
    if pal.mode == "none":
        t.append("  (≡=-· <0 │ >0 ░▒▓█)" if view.diverging else "  (░▒▓█)", KEY_STYLE)
    return t


def _nonfinite_legend(t: Text, view: View, pal: Palette) -> None:
    """The NaN/Inf cells' glyphs with their counts: they are off the colour scale, which
    covers the finite values only."""
    if not view.has_nonfinite:
        return
    for k, n in enumerate(view.nonfinite):
        if n:
            t.append(SPECIAL_GLYPHS[k], pal.special_style(pal.special_base + k))
            t.append(f"{SPECIAL_NAMES[k]}! ", BAD_STYLE)
    t.append("│ ", KEY_STYLE)


def grid_text(grid, width: int) -> Text:
    """A small grid of numbers (a window, a kernel, the products), its marked cells bold."""
    t = Text()
    t.append(grid.label + "\n", KEY_STYLE)
    data, marks = grid.data, grid.marks
    if data.shape[0] == 1 and data.shape[1] * 7 > width:  # a long row: one number per line
        data, marks = data.T, None if marks is None else marks.T
    cols = data.shape[1]
    cell_w = max(6, min(10, width // max(cols, 1)))  # the row fits the pane where it can
    for r, row in enumerate(data):
        for c, x in enumerate(row):
            marked = marks is not None and marks[r, c]
            text = " " + f"{num_within(float(x), cell_w - 1):>{cell_w - 1}}"
            t.append(text, (BAD_STYLE if not np.isfinite(x) else "bold underline" if marked
                            else ""))
        t.append("\n")
    return t


def cell_text(explained, width: int, small: int) -> Text:
    """Cell mode's side pane: the explanation's lines, then its small grids as numbers
    (``small``: the most numbers a printed grid has; larger ones are drawn as heatmaps)."""
    t = Text()
    t.append(f"{explained.step}[{','.join(map(str, explained.cell))}]", "bold cyan")
    t.append(f" = {explained.value:.6g}\n", "bold")
    for line in explained.lines:
        t.append(line + "\n")
    for grid in explained.grids:
        if grid.data.size <= small:
            t.append("\n")
            t.append_text(grid_text(grid, width))
    t.rstrip()
    return t


def update_text(update, width: int) -> Text:
    """The update step's side pane: the ratios (the 1e-3 rule of thumb) and what the digit's
    loss and probabilities did."""
    t = Text()
    t.append("SGD step ", "bold")
    t.append(f"lr {update.lr:g}\n", "bold cyan")
    t.append("|lr·dW|/|W| (≈1e-3 healthy)\n", KEY_STYLE)
    for name, ratio in update.ratios.items():
        t.append(f"  {name:<5}", KEY_STYLE)
        if not np.any(update.params_before[name]):
            t.append(f"n/a: {name} = 0\n", KEY_STYLE)  # a zero bias: no ratio to take
            continue
        style = OK_STYLE if 1e-5 <= ratio <= 1e-2 else \
            WARN_STYLE if np.isfinite(ratio) else BAD_STYLE
        t.append(f"{num(ratio)}\n", style)
    t.append("loss ", KEY_STYLE)
    t.append(f"{num(update.loss_before)} -> {num(update.loss_after)}\n",
             OK_STYLE if update.loss_after < update.loss_before else WARN_STYLE)
    label = update.label
    t.append(f"p(label {label}) ", KEY_STYLE)
    t.append(f"{update.probs_before[label]:.4f} -> {update.probs_after[label]:.4f} ")
    t.append("gained ✓\n" if update.gained else "did not gain ✗\n",
             OK_STYLE if update.gained else WARN_STYLE)
    t.append("\nclass before   after\n", KEY_STYLE)
    for k, (a, b) in enumerate(zip(update.probs_before, update.probs_after, strict=True)):
        mark = "◀" if k == label else " "
        t.append(f"{k:>3}{mark} {a:7.4f} {b:7.4f}", "bold" if k == label else "")
        t.append(f" {b - a:+.1e}\n" if width >= 27 else "\n", KEY_STYLE)
    t.rstrip()
    return t


def im2col_text(im, step: Step, legend: str) -> Text:
    """The explanation pane under the im2col view: the shapes of both products."""
    t = Text()
    t.append("im2col ", KEY_STYLE)
    t.append(f"cols @ W = out: {im.shape}", "bold")
    t.append(f"   dW = cols.T @ dout: {im.dw_shape}\n", KEY_STYLE)
    labels = im.col_labels
    t.append("columns of cols: ", KEY_STYLE)
    t.append(", ".join(labels[:6]) + (f" ... {labels[-1]}" if len(labels) > 6 else ""))
    if legend:
        t.append("\n" + legend, "italic")
    return t


def update_explain(update, legend: str, can_undo: bool) -> Text:
    t = Text()
    t.append("math ", KEY_STYLE)
    t.append(f"W <- W - lr·dW for every parameter, lr = {update.lr:g}, this digit's gradients",
             "bold")
    t.append("\nnumpy ", KEY_STYLE)
    t.append(f"for k in params: params[k] -= {update.lr:g} * grads['d' + k]", "green")
    t.append("\nkeys ", KEY_STYLE)
    t.append("u applies it to the network" + (", z undoes the last one" if can_undo else ""))
    if legend:
        t.append("\n" + legend, "italic")
    return t
