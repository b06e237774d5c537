"""What the training screen shows, as Rich Text and heatmap Views built from the trainer's events.

Formatting and layout only: every number comes from ``cnntui.training``'s events, its evaluation or
its weights; nothing here computes anything about the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rich.style import Style
from rich.text import Text

from cnntui.layers import Conv
from cnntui.model import Architecture
from cnntui.stats import summarize
from cnntui.training import BatchEnd, EpochEnd, Evaluation, TrainResult
from screens.colors import Palette
from screens.panes import KEY_STYLE, OK_STYLE, SPARK, WARN_STYLE, nonfinite_flags, num
from screens.views import Tile, View

BAD_STYLE = "bold red"
STATUS = {  # state -> (label, style)
    "ready": ("ready", "bold"),
    "running": ("▶ running", "bold green"),
    "paused": ("⏸ paused", WARN_STYLE),
    "stopping": ("stopping…", WARN_STYLE),
    "finished": ("✓ finished", OK_STYLE),
    "cancelled": ("■ stopped", WARN_STYLE),
    "diverged": ("✗ diverged", BAD_STYLE),
}


@dataclass
class Feed:
    """What the training thread reports, for the UI to pick up when it next polls.

    The thread only appends to the lists and swaps attributes (each a single atomic step under
    the GIL); ``version`` grows with every event, so a poll that sees no change does nothing.
    Queued updates therefore replace each other: the UI draws the latest state, at most as often
    as it polls, however fast the batches come.
    """

    losses: list[float] = field(default_factory=list)  # every batch of the run
    norms: list[tuple[float, ...]] = field(default_factory=list)  # per batch, in ``names`` order
    names: tuple[str, ...] = ()
    epochs: list[EpochEnd] = field(default_factory=list)
    batch: BatchEnd | None = None  # the latest
    result: TrainResult | None = None  # set when the run ended
    error: str | None = None  # the run failed (a bug, not a user error)
    resets: int = 0  # Reset events seen (a reset during a run restarts it)
    version: int = 0

    def clear(self) -> None:
        """Forget the run (a reset, or a new run). Lists are replaced, never emptied in place,
        so a reader holding the old ones is not surprised."""
        self.losses, self.norms, self.epochs = [], [], []
        self.batch = self.result = self.error = None
        self.version += 1

    def on_batch(self, event: BatchEnd) -> None:
        if not self.names:
            self.names = tuple(event.grad_norms)
        self.losses.append(event.loss)
        self.norms.append(tuple(event.grad_norms.get(k, math.nan) for k in self.names))
        self.batch = event
        self.version += 1

    def on_epoch(self, event: EpochEnd) -> None:
        self.epochs.append(event)
        self.version += 1

    def on_end(self, result: TrainResult) -> None:
        self.result = result
        self.version += 1

    def on_reset(self) -> None:
        self.resets += 1
        self.clear()

    def on_error(self, message: str) -> None:
        self.error = message
        self.version += 1


# ---- header and progress ----------------------------------------------------------------------


def header(state: str, config: object, base_lr: float, feed: Feed, n_train: int, n_test: int,
           start: str) -> Text:
    """The status chip and the run's settings, most important first (it is cropped on the
    right in narrow terminals)."""
    label, style = STATUS.get(state, (state, "bold"))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" cnntui training ", "bold reverse")
    t.append(f" {label} ", style)
    b = feed.batch
    if b is not None:
        t.append(f" epoch {b.epoch}/{b.epochs}", "bold")
    t.append("  ")
    t.append(config.optimizer, "bold cyan")
    t.append(" lr ", KEY_STYLE)
    t.append(num(base_lr), "bold")
    if b is not None:  # the rate the next batch uses: the base rate may have changed since b
        now = base_lr * config.lr_factor(b.step / (b.epochs * b.batches))
        t.append(f" (now {num(now)}, {config.schedule})", KEY_STYLE)
    else:
        t.append(f" ({config.schedule})", KEY_STYLE)
    # during a run: where it started; otherwise where the next run (space) will start
    t.append("  from " if state in ("running", "paused", "stopping") else "  next run from ",
             KEY_STYLE)
    t.append(start)
    t.append(f" · batch {config.batch_size} · {config.epochs} epochs · {n_train}/{n_test} "
             f"train/test digits · ", KEY_STYLE)
    t.append("shifts" if config.augment else "no shifts", KEY_STYLE)
    t.append(f" · seed {config.seed} · {config.dtype}", KEY_STYLE)
    return t


def loss_text(feed: Feed) -> Text:
    """The line above the sparkline: current value and minimum of the per-batch loss."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("loss", "bold")
    t.append(" per batch (log)", KEY_STYLE)
    if not feed.losses:
        t.append("  no batches yet: space starts training", KEY_STYLE)
        return t
    losses = feed.losses
    n = len(losses)
    finite = [i for i in range(n) if math.isfinite(losses[i])]
    low = min(finite, key=losses.__getitem__) if finite else n - 1
    t.append("  now ", KEY_STYLE)
    t.append(f"{losses[-1]:.4f}", "bold" if math.isfinite(losses[-1]) else BAD_STYLE)
    bad = n - len(finite)
    if bad:
        t.append(f"  NaN/Inf! x{bad}", "bold white on red")
    t.append("  min ", KEY_STYLE)
    t.append(f"{losses[low]:.4f}", "bold green")
    t.append(f" @{low + 1}", KEY_STYLE)
    t.append("  first ", KEY_STYLE)
    t.append(f"{losses[0]:.3f}")
    return t


def spark_data(losses: list[float]) -> list[float]:
    """The sparkline's values: log10 of the loss, so the late, small improvements show too."""
    return [math.log10(v) if v > 0 and math.isfinite(v) else -16.0 for v in losses]


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s) or s < 0:
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


def eta_seconds(feed: Feed, batch_size: int, n_train: int) -> float | None:
    """Seconds left in the run: from the finished epochs' wall times once there are some
    (they include the evaluation), else from the images per second of the batches."""
    b = feed.batch
    if b is None:
        return None
    left = b.epochs * b.batches - b.step  # batches
    if feed.epochs:
        per_epoch = sum(e.seconds for e in feed.epochs) / len(feed.epochs)
        return left / b.batches * per_epoch
    if b.images_per_s <= 0:
        return None
    return left * min(batch_size, n_train) / b.images_per_s


def progress_epoch_text(feed: Feed, epochs: int) -> Text:
    b = feed.batch
    done = len(feed.epochs)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{done}/{b.epochs if b else epochs} done", "bold")
    if b is not None:
        t.append("  ")
        t.append(f"{b.images_per_s:,.0f}", "bold")
        t.append(" img/s", KEY_STYLE)
    return t


def progress_batch_text(feed: Feed, batch_size: int, n_train: int, state: str) -> Text:
    b = feed.batch
    t = Text(no_wrap=True, overflow="ellipsis")
    if b is None:
        t.append(f"0/{-(-n_train // batch_size)}", "bold")
        return t
    t.append(f"{b.batch}/{b.batches}", "bold")
    t.append(f" of epoch {b.epoch}", KEY_STYLE)
    eta = eta_seconds(feed, batch_size, n_train)
    if state in ("running", "paused") and eta is not None:
        t.append("  ETA ", KEY_STYLE)
        t.append(fmt_seconds(eta), "bold")
    elif feed.result is not None:
        took = feed.result.seconds
        t.append(f"  took {took:.1f} s" if took < 60 else f"  took {fmt_seconds(took)}",
                 KEY_STYLE)
    return t


# ---- per-epoch accuracies -----------------------------------------------------------------------


def epochs_text(feed: Feed, rows: int) -> Text:
    """The last ``rows - 1`` epochs under a heading; the best test accuracy starred."""
    t = Text(no_wrap=True, overflow="crop")
    t.append(f"{'ep':>3} {'loss':>5} {'train':>6} {'test':>6} {'s':>5}\n", "bold")
    epochs = feed.epochs
    if not epochs:
        t.append(" accuracy per epoch\n appears here", KEY_STYLE)
        return t
    best = max(range(len(epochs)), key=lambda i: epochs[i].test_acc)
    shown = epochs[-max(1, rows - 1):]
    first = len(epochs) - len(shown)
    for k, e in enumerate(shown):
        i = first + k
        t.append(f"{e.epoch:>3} ", KEY_STYLE)
        t.append(f"{e.train_loss:5.3f} ")
        t.append(f"{e.train_acc:6.1%} ")
        t.append(f"{e.test_acc:6.2%}", OK_STYLE if i == best else "bold")
        t.append("★" if i == best else " ", OK_STYLE)
        t.append(f"{e.seconds:5.1f}", KEY_STYLE)
        if k < len(shown) - 1:
            t.append("\n")
    return t


# ---- gradient norms ----------------------------------------------------------------------------


def spark(values: np.ndarray, width: int) -> str:
    """A text sparkline of ``values`` (log scale) in ``width`` characters, bucket means."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0 or width <= 0:
        return ""
    logs = np.log10(v)
    buckets = min(width, logs.size)
    edges = np.linspace(0, logs.size, buckets + 1).astype(int)
    means = np.array([logs[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    lo, hi = means.min(), means.max()
    scaled = (means - lo) / (hi - lo) if hi > lo else np.full_like(means, 0.5)
    return "".join(SPARK[1 + int(round(s * (len(SPARK) - 2)))] for s in scaled)


def conv_weights(arch: Architecture) -> list[tuple[str, str]]:
    """(layer, weight name) of every conv layer: the filters the training screen shows."""
    return [(layer.name, layer.weight) for layer in arch.layers if isinstance(layer, Conv)]


def grads_text(feed: Feed, width: int, arch: Architecture) -> Text:
    """Per layer and parameter: the latest batch's gradient L2 norm and its history."""
    t = Text(no_wrap=True, overflow="crop")
    t.append("gradient L2 norms", "bold")
    b = feed.batch
    if b is None:
        t.append("\nper layer, every batch;\nappear once training runs", KEY_STYLE)
        return t
    t.append(f" batch {b.step}\n", KEY_STYLE)
    history = np.asarray(feed.norms, dtype=float) if feed.norms else np.zeros((0, 0))
    spark_w = max(0, width - 16)
    with_params = [(layer.name, layer.params) for layer in arch.layers if layer.params]
    column = 1 + max(len(layer) for layer, _ in with_params)
    for layer, names in with_params:
        for k, name in enumerate(names):
            t.append(f"{layer if k == 0 else '':<{column}}", "bold" if k == 0 else "")
            t.append(f"{name} ", "cyan")
            value = b.grad_norms.get(name, math.nan)
            t.append(f"{num(value):<8}", BAD_STYLE if not math.isfinite(value) else "")
            if name in feed.names and history.size and spark_w:
                t.append(" " + spark(history[:, feed.names.index(name)], spark_w), "magenta")
            t.append("\n")
    t.append("history over the run, log scale", KEY_STYLE)
    return t


# ---- filters ------------------------------------------------------------------------------------


def kernel_column(k: np.ndarray) -> np.ndarray:
    """(C, kh, kw) kernels stacked top to bottom with one gap row between: (C*kh + C-1, kw)."""
    c, kh, kw = k.shape
    out = np.full((c * (kh + 1) - 1, kw), np.nan)
    for i in range(c):
        out[i * (kh + 1): i * (kh + 1) + kh] = k[i]
    return out


def kernel_column_gap(shape: tuple[int, ...]) -> np.ndarray:
    """Where ``kernel_column`` of (C, kh, kw) kernels put its gap rows (bool)."""
    c, kh, kw = shape
    gap = np.zeros((c * (kh + 1) - 1, kw), dtype=bool)
    gap[kh::kh + 1] = True
    return gap


def filters_view(weights: np.ndarray, name: str) -> View:
    """A conv layer's weights (F, C, kh, kw) as one tile per filter, its C kernels stacked,
    on one diverging colour scale shared by the layer."""
    w = np.asarray(weights, dtype=np.float64)
    st = summarize(w)  # the scale: the finite weights only
    m = max(abs(st.min), abs(st.max)) if st.finite else 0.0
    m = m if math.isfinite(m) and m > 0 else 1.0
    tiles = [Tile(f"#{f}", kernel_column(w[f]), -m, m, gap=kernel_column_gap(w[f].shape))
             if w.shape[1] > 1 else Tile(f"#{f}", w[f, 0], -m, m) for f in range(w.shape[0])]
    title = f"{name} {tuple(w.shape)}"
    return View("tiles", title, True, -m, m, True, tiles=tiles,
                nonfinite=(st.nan, st.posinf, st.neginf))


def filters_title(layer: str, name: str, view: View, channels: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{layer} filters ", "bold")
    t.append(name, "bold cyan")
    t.append(f" {view.title.split(' ', 1)[1]}", KEY_STYLE)
    t.append(f" ±{view.hi:.2g}", "")
    for flag in nonfinite_flags(*view.nonfinite):
        t.append(f" {flag}", BAD_STYLE)
    if channels > 1:
        t.append(f"  each column: a filter's {channels} input kernels", KEY_STYLE)
    return t


# ---- results -------------------------------------------------------------------------------------


def result_line(result: TrainResult | None, ev: Evaluation | None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if ev is None:
        t.append("results appear when a run ends", KEY_STYLE)
        return t
    total = int(ev.confusion.sum())
    t.append("test accuracy ", "bold")
    t.append(f"{ev.accuracy:.2%}", OK_STYLE if ev.accuracy >= 0.95 else WARN_STYLE)
    t.append(f" ({int(ev.confusion.trace())}/{total})  loss {ev.loss:.4f}", KEY_STYLE)
    if result is not None and result.status != "finished":
        t.append(f"  ({STATUS.get(result.status, (result.status,))[0]})", WARN_STYLE)
    return t


def confusion_text(confusion: np.ndarray, pal: Palette) -> Text:
    """The 10x10 confusion matrix: rows the true digit, columns the prediction. Each cell is
    shaded by its share of the row (square root, so single errors still show); errors are bold
    red (reverse video without colour), zeros a dim dot."""
    c = np.asarray(confusion)
    rows = c.sum(axis=1, keepdims=True)
    share = np.sqrt(np.where(rows > 0, c / np.maximum(rows, 1), 0.0))
    levels = pal.levels(share)
    t = Text(no_wrap=True, overflow="crop")
    t.append("t\\p", "bold")
    for j in range(c.shape[1]):
        t.append(f"{j:>4}", "bold")
    t.append("\n")
    colour = pal.mode != "none"
    for i in range(c.shape[0]):
        t.append(f"{i:>3}", "bold")
        for j in range(c.shape[1]):
            n = int(c[i, j])
            text = f" {n:>3}" if n else "   ·"
            if not colour:
                style = Style(reverse=True, bold=True) if n and i != j else \
                    Style(bold=True) if n else Style(dim=True)
            else:
                lv = int(levels[i, j])
                bright = lv > pal.n // 2
                if i == j:
                    fg = "black" if bright else "bright_white"
                    style = Style(color=fg, bold=True, bgcolor=pal.colors[lv])
                elif n:
                    style = Style(color="bright_red" if not bright else "black", bold=True,
                                  bgcolor=pal.colors[lv])
                else:
                    style = Style(color="bright_black", bgcolor=pal.colors[lv])
            t.append(text, style)
        if i < c.shape[0] - 1:
            t.append("\n")
    return t


def confusion_legend(pal: Palette) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("rows: true · columns: predicted · ", KEY_STYLE)
    if pal.mode == "none":
        t.append("errors in reverse video", KEY_STYLE)
        return t
    t.append("√share of row ", KEY_STYLE)
    for lv in np.rint(np.linspace(0, pal.n - 1, 8)).astype(int):
        text, style = pal.swatch(int(lv))
        t.append(text, style)
    return t


def misclassified_rows(ev: Evaluation) -> list[tuple[int, str]]:
    """(digit index, option label) for every wrong test digit."""
    wrong = np.flatnonzero(ev.predicted != ev.labels)
    return [(int(ev.indices[k]), f"#{int(ev.indices[k]):<5} {int(ev.labels[k])} → "
             f"{int(ev.predicted[k])}") for k in wrong]
