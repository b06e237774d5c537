"""How a step's tensor is laid out as pictures: tiles of 2-D maps, or labelled bars.

Layout only (reshapes, slices, the argmax positions the trace cached, ranges from
``cnntui.stats``); no network maths happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnntui.stats import nonfinite_counts, summarize
from cnntui.trace import Step, Trace
from screens.colors import POOL_MARKS

MAX_BARS = 16  # 1-D tensors up to this length are drawn as labelled bars


@dataclass
class Tile:
    label: str
    data: np.ndarray  # 2-D
    lo: float
    hi: float
    marks: np.ndarray | None = None  # bool, same shape: a pooling window's argmax
    channel: int | None = None  # which channel (tile) key 0-9 selects
    gap: np.ndarray | None = None  # bool, same shape: no pixel (between kernels); data is NaN


@dataclass
class Bar:
    label: str
    value: float
    note: str = ""


@dataclass
class View:
    kind: str  # "tiles" | "bars"
    title: str  # what the picture shows, one line
    diverging: bool
    lo: float  # the colour scale's range (shared scale) ...
    hi: float
    shared: bool  # ... or each tile has its own range (per-channel scale)
    magnitude: bool = False  # |value| on a log scale
    tiles: list[Tile] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    legend: str = ""  # extra line, e.g. what the pooling marks mean
    channels: int = 0  # how many tiles a number key can select
    selected: int | None = None
    names: list[str] = field(default_factory=list)  # tile labels, for the values table
    nonfinite: tuple[int, int, int] = (0, 0, 0)  # NaN, +Inf, -Inf cells in the picture

    @property
    def has_nonfinite(self) -> bool:
        return any(self.nonfinite)


def argmax_mask(argmax: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (C, H, W) mask of the cells each pooling window took its maximum from."""
    c = shape[0]
    mask = np.zeros((c, int(np.prod(shape[1:]))), dtype=bool)
    np.put_along_axis(mask, argmax.reshape(c, -1), True, axis=1)
    return mask.reshape(shape)


def untied_marks(argmax: np.ndarray, maps: np.ndarray, size: int, stride: int) -> np.ndarray:
    """``argmax_mask`` without the windows whose values in ``maps`` are all equal (e.g. all 0):
    their argmax is only the first cell of a tie, and a mark there would claim a maximum."""
    c = maps.shape[0]
    w = np.lib.stride_tricks.sliding_window_view(maps, (size, size), axis=(1, 2))
    w = w[:, ::stride, ::stride]
    untied = (w.max(axis=(-2, -1)) != w.min(axis=(-2, -1))).reshape(c, -1)  # NaN: untied
    ch, k = np.nonzero(untied)
    mask = np.zeros((c, int(np.prod(maps.shape[1:]))), dtype=bool)
    mask[ch, argmax.reshape(c, -1)[ch, k]] = True
    return mask.reshape(maps.shape)


def flat_channels(trace: Trace) -> int:
    """How many channels the flattened vector came from (p2's channels), for strips."""
    for s in trace.steps:
        if s.kind == "flatten" and s.phase == "forward":
            src = next(iter(s.inputs.values()))
            return int(src.shape[0])
    return 1


def kernel_row(k: np.ndarray) -> np.ndarray:
    """(C, kh, kw) kernels side by side with one gap column between them: (kh, C*kw + C-1)."""
    c, kh, kw = k.shape
    out = np.full((kh, c * (kw + 1) - 1), np.nan)
    for i in range(c):
        out[:, i * (kw + 1): i * (kw + 1) + kw] = k[i]
    return out


def kernel_row_gap(shape: tuple[int, ...]) -> np.ndarray:
    """Where ``kernel_row`` of (C, kh, kw) kernels put its gap columns (bool)."""
    c, kh, kw = shape
    gap = np.zeros((kh, c * (kw + 1) - 1), dtype=bool)
    gap[:, kw::kw + 1] = True
    return gap


def picture_nonfinite(tiles: list[Tile], bars: list[Bar]) -> tuple[int, int, int]:
    """How many NaN, +Inf and -Inf cells the tiles (gaps aside) or bars show."""
    if bars:
        return nonfinite_counts(np.array([b.value for b in bars], dtype=float))
    total = [0, 0, 0]
    for t in tiles:
        data = t.data if t.gap is None else t.data[~t.gap]
        for k, n in enumerate(nonfinite_counts(data)):
            total[k] += n
    return total[0], total[1], total[2]


def _range(a: np.ndarray, diverging: bool, magnitude: bool) -> tuple[float, float]:
    st = summarize(a)
    lo, hi = st.min, st.max
    if not np.isfinite(lo):
        return 0.0, 1.0
    if magnitude:
        return 0.0, max(abs(lo), abs(hi))
    if diverging:
        m = max(abs(lo), abs(hi))
        return -m, m
    return min(lo, 0.0), hi


def class_notes(trace: Trace, i: int) -> str:
    notes = []
    if i == trace.label:
        notes.append("◀ true")
    if i == trace.prediction and np.all(np.isfinite(trace.probs)):  # argmax of NaN means nothing
        notes.append("★ predicted")
    return " ".join(notes)


def build_view(step: Step, trace: Trace, *, shared: bool = True, channel: int | None = None,
               magnitude: bool = False, mode: str = "truecolor") -> View:
    """The picture of ``step``: which maps or bars to draw, their labels, ranges and marks
    (``mode``, the colour depth, words the legend of the marks)."""
    value = np.asarray(step.value, dtype=np.float64)
    magnitude = magnitude and step.phase == "backward"
    diverging = step.signed and not magnitude
    shown = np.abs(value) if magnitude else value
    what = f"|{step.name}|" if magnitude else step.name

    # 1-D tensors: labelled bars, or a strip for the long ones
    if value.ndim == 1 and value.size <= MAX_BARS:
        per_class = value.size == trace.probs.size and step.layer in ("fc", "softmax")
        bars = [Bar(f"{i}", float(v), class_notes(trace, i) if per_class else "")
                for i, v in enumerate(shown)]
        lo, hi = _range(shown, diverging, magnitude)
        if step.kind == "softmax" and step.phase == "forward":
            lo, hi = 0.0, 1.0  # probabilities: a full bar means 100%, not the largest of ten
        title = f"{what}: one bar per {'class' if per_class else 'channel'}"
        return View("bars", title, diverging, lo, hi, True, magnitude, bars=bars,
                    nonfinite=picture_nonfinite([], bars))

    tiles: list[Tile] = []
    legend = ""
    source = shown  # the tensor the colour range is taken from
    if value.ndim == 1:  # flat / dflat: one row per channel of p2
        c = flat_channels(trace)
        rows = shown.reshape(c, -1) if shown.size % c == 0 else shown[None]
        tiles = [Tile(f"{what}: {rows.shape[0]} rows (channels) x {rows.shape[1]}",
                      rows, 0, 0)]
        title = f"{what} as a strip: row c = channel c of p2, in C order"
    elif value.ndim == 2:  # W3-shaped (392, 10): one strip per class
        c = flat_channels(trace)
        for k in range(value.shape[1]):
            col = shown[:, k]
            rows = col.reshape(c, -1) if col.size % c == 0 else col[None]
            tiles.append(Tile(f"class {k}", rows, 0, 0, channel=k))
        title = f"{what}[:, k] for each class k, as channels x positions"
    elif value.ndim == 4:  # conv weight gradient (F, C, kh, kw)
        for f in range(value.shape[0]):
            tiles.append(Tile(f"filter {f}", kernel_row(shown[f]), 0, 0, channel=f,
                              gap=kernel_row_gap(shown[f].shape)))
        title = (f"{what}: one row of {value.shape[1]} kernel(s) {value.shape[2]}x{value.shape[3]}"
                 " per filter")
    else:  # (C, H, W) maps
        marks = None
        maps = shown
        pool_forward = "argmax" in step.cache and step.phase == "forward"
        title = f"{what}: {value.shape[0]} channel(s) {value.shape[1]}x{value.shape[2]}"
        if "argmax" in step.cache:
            pool = step.layer_object
            size, stride = pool.size, pool.stride
            marked, rest = POOL_MARKS[mode]  # how this colour depth draws them
        if pool_forward:
            src_name, src = next(iter(step.inputs.items()))
            maps = source = np.asarray(src, dtype=np.float64)
            marks = untied_marks(step.cache["argmax"], source, size, stride)
            legend = f"{marked}: each {size}x{size} window's max; {rest}; ties unmarked"
            title = f"{src_name} -> {step.name}: where max-pool took its maxima"
        elif "argmax" in step.cache:
            marks = untied_marks(step.cache["argmax"], value, size, stride)
            legend = f"{marked}: each window's argmax, the gradient flows only there"
            title = f"{what}: the gradient routed to each pooling window's argmax"
        for ch in range(maps.shape[0]):
            tiles.append(Tile(f"#{ch}" if maps.shape[0] > 1 else step.name, maps[ch], 0, 0,
                              None if marks is None else marks[ch], channel=ch))
        if pool_forward and channel is not None:
            channel = min(channel, len(tiles) - 1)
            tiles[channel].label = f"{src_name}[{channel}] input"
            tiles.append(Tile(f"{step.name}[{channel}] output", shown[channel], 0, 0,
                              channel=channel))
            tiles = [tiles[channel], tiles[-1]]

    names = [t.label for t in tiles]
    channel_count = 0 if value.ndim == 1 else len(tiles)
    if value.ndim == 3 and "argmax" in step.cache and step.phase == "forward":
        channel_count = value.shape[0]
    if channel is not None and channel_count:
        channel = min(channel, channel_count - 1)
        tiles = [t for t in tiles if t.channel == channel]
    else:
        channel = None

    lo, hi = _range(source, diverging, magnitude)
    for t in tiles:
        if shared:
            t.lo, t.hi = lo, hi
        else:
            t.lo, t.hi = _range(t.data[np.isfinite(t.data)], diverging, magnitude)
            t.label = f"{t.label} {_fmt_range(t.lo, t.hi, diverging)}"
    if step.kind == "input" and trace.original is not None and channel is None:
        tiles.append(original_tile(trace.original))
        title = f"{title}, prepared from the original beside it"
    return View("tiles", title, diverging, lo, hi, shared, magnitude, tiles=tiles, legend=legend,
                channels=channel_count, selected=channel, names=names,
                nonfinite=picture_nonfinite(tiles, []))


def original_tile(original: np.ndarray, rows: int = 28) -> Tile:
    """An own image as read, reduced to about ``rows`` pixel rows (block means) and drawn on
    the diverging scale from -1 (black) to 1 (white)."""
    from screens.widgets.tensor_view import shrink

    h, w = original.shape
    k = max(1, -(-max(h, w) // rows))
    small = shrink(Tile("", 2 * np.asarray(original, dtype=float) - 1, -1.0, 1.0), k)
    small.label = f"original {w}x{h}" + ("" if k == 1 else f" at 1/{k}")
    return small


def _fmt_range(lo: float, hi: float, diverging: bool) -> str:
    if diverging:
        return f"±{hi:.2g}"
    return f"{lo:.2g}..{hi:.2g}"


