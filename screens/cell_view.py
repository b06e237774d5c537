"""How the stepper's cell mode lays out one cell: where the cursor sits in the step's pictures,
how the arrows move it, and the tiles that show its explanation (the step's channel with the
cursor, the input windows it read, large grids such as a weight gradient's products, the
effective receptive field on x).

Layout only: every number comes from the trace or from ``cnntui.explain``.
"""

from __future__ import annotations

import numpy as np

from cnntui.explain import Explained, Im2col, Update
from cnntui.trace import Step, Trace
from screens.colors import POOL_MARKS
from screens.views import (
    MAX_BARS,
    Bar,
    Tile,
    View,
    _range,
    class_notes,
    flat_channels,
    kernel_row,
    kernel_row_gap,
)

SMALL_GRID = 25  # grids up to this many numbers are printed; larger ones become heatmaps


def is_bars(step: Step) -> bool:
    return step.value.ndim == 1 and step.value.size <= MAX_BARS


def strip_width(step: Step, trace: Trace) -> int:
    """Positions per row of a flat (1-D, long) or W3-shaped (2-D) tensor drawn as a strip."""
    size = step.value.shape[0]
    c = flat_channels(trace)
    return size // c if size % c == 0 else size


def first_cell(step: Step) -> tuple[int, ...]:
    return (0,) * step.value.ndim


def clip_cell(step: Step, cell: tuple[int, ...] | None) -> tuple[int, ...]:
    """``cell`` made valid for ``step`` (another step may have another shape)."""
    shape = step.value.shape
    if cell is None or len(cell) != len(shape):
        return first_cell(step)
    return tuple(min(max(0, i), n - 1) for i, n in zip(cell, shape, strict=True))


def channel_of(step: Step, cell: tuple[int, ...]) -> int | None:
    """The channel (tile) the cursor is on, as number keys count them."""
    v = step.value
    if v.ndim in (3, 4):
        return cell[0]
    if v.ndim == 2:
        return cell[1]  # one strip per class
    return None


def channel_count(step: Step) -> int:
    """How many channels number keys choose from."""
    v = step.value
    return v.shape[0] if v.ndim in (3, 4) else v.shape[1] if v.ndim == 2 else 0


def with_channel(step: Step, cell: tuple[int, ...], channel: int) -> tuple[int, ...]:
    v = step.value
    if v.ndim in (3, 4):
        return clip_cell(step, (channel, *cell[1:]))
    if v.ndim == 2:
        return clip_cell(step, (cell[0], channel))
    return cell


def move(step: Step, trace: Trace, cell: tuple[int, ...], dr: int, dc: int) -> tuple[int, ...]:
    """The cell one arrow press away, as the cell is drawn (rows down, columns right)."""
    v = step.value
    if v.ndim == 3:
        c, i, j = cell
        return clip_cell(step, (c, i + dr, j + dc))
    if v.ndim == 4:  # one row of C kernels per filter: right runs on into the next kernel
        f, c, u, w = cell
        kw = v.shape[3]
        col = min(max(0, c * kw + w + dc), v.shape[1] * kw - 1)
        return clip_cell(step, (f, col // kw, u + dr, col % kw))
    if is_bars(step):
        return clip_cell(step, (cell[0] + dr + dc,))
    per = strip_width(step, trace)
    if v.ndim == 2:
        d, m = cell
        return clip_cell(step, (min(max(0, d + dr * per + dc), v.shape[0] - 1), m))
    return clip_cell(step, (min(max(0, cell[0] + dr * per + dc), v.shape[0] - 1),))


def tile_position(step: Step, trace: Trace, cell: tuple[int, ...]) -> tuple[int, int]:
    """Where ``cell`` sits in its tile's 2-D data (row, column)."""
    v = step.value
    if v.ndim == 3:
        return cell[1], cell[2]
    if v.ndim == 4:
        f, c, u, w = cell
        return u, c * (v.shape[3] + 1) + w
    per = strip_width(step, trace)
    return divmod(cell[0], per)


def cell_at(step: Step, trace: Trace, tile: Tile, row: int, col: int) -> tuple[int, ...] | None:
    """The tensor cell that a click at (row, col) of one of the normal view's tiles picks."""
    v = step.value
    if not (0 <= row < tile.data.shape[0] and 0 <= col < tile.data.shape[1]):
        return None
    if tile.gap is not None and tile.gap[row, col]:
        return None
    if v.ndim == 3:
        if "argmax" in step.cache and step.phase == "forward" and tile.data.shape != v.shape[1:]:
            pool = step.layer_object  # the pooling view shows the input: its window's output
            return clip_cell(step, (tile.channel or 0, row // pool.stride, col // pool.stride))
        return clip_cell(step, (tile.channel or 0, row, col))
    if v.ndim == 4:
        kw = v.shape[3]
        return clip_cell(step, (tile.channel or 0, col // (kw + 1), row, col % (kw + 1)))
    per = strip_width(step, trace)
    if v.ndim == 2:
        return clip_cell(step, (row * per + col, tile.channel or 0))
    return clip_cell(step, (row * per + col,))


def cell_name(step: Step, cell: tuple[int, ...]) -> str:
    return f"{step.name}[{','.join(map(str, cell))}]"


def _own_tile(step: Step, trace: Trace, cell: tuple[int, ...]) -> Tile:
    """The channel of the step's tensor that holds the cursor, the cursor its one marked cell."""
    v = np.asarray(step.value, dtype=np.float64)
    if v.ndim == 3:
        data, gap, label = v[cell[0]], None, f"{step.name}[{cell[0]}]"
    elif v.ndim == 4:
        data, gap = kernel_row(v[cell[0]]), kernel_row_gap(v[cell[0]].shape)
        label = f"{step.name}[{cell[0]}]"
    else:
        per = strip_width(step, trace)
        col = v[:, cell[1]] if v.ndim == 2 else v
        data, gap = col.reshape(-1, per), None
        label = f"{step.name}[:, {cell[1]}]" if v.ndim == 2 else step.name
    marks = np.zeros(data.shape, dtype=bool)
    marks[tile_position(step, trace, cell)] = True
    return Tile(f"{label} cursor", data, 0, 0, marks, channel=channel_of(step, cell), gap=gap)


def _region_tiles(trace: Trace, explained: Explained) -> list[Tile]:
    tiles = []
    for region in explained.regions:
        if region.tensor not in trace.names:
            continue
        value = np.asarray(trace[region.tensor].value, dtype=np.float64)
        for ch in region.channels:
            data = value[ch] if value.ndim == 3 else value.reshape(1, -1)
            marks = np.zeros(data.shape, dtype=bool)
            r0, r1 = max(0, region.rows[0]), min(data.shape[0], region.rows[1])
            c0, c1 = max(0, region.cols[0]), min(data.shape[1], region.cols[1])
            marks[r0:r1, c0:c1] = True
            name = f"{region.tensor}[{ch}]" if value.ndim == 3 else region.tensor
            tiles.append(Tile(f"{name} read", data, 0, 0, marks))
    return tiles


def _ranged(tiles: list[Tile], diverging: bool) -> None:
    for t in tiles:
        finite = t.data[np.isfinite(t.data)]
        t.lo, t.hi = _range(finite, diverging, False)


def cell_view(step: Step, trace: Trace, explained: Explained, mode: str = "truecolor") -> View:
    """The pictures of cell mode: the cursor's channel, what the cell read (outlined by the
    brightness: the rest is dimmed), large grids as heatmaps, and the effective receptive
    field on x with the receptive field outlined. Each picture has its own colour range."""
    cell = explained.cell
    title = f"{cell_name(step, cell)} = {explained.value:.6g}: where it comes from"
    if is_bars(step):
        per_class = step.value.size == trace.probs.size and step.layer in ("fc", "softmax")
        bars = [Bar(f"{i}", float(x), ("◆ cursor " if i == cell[0] else "")
                    + (class_notes(trace, i) if per_class else ""))
                for i, x in enumerate(np.asarray(step.value, dtype=np.float64))]
        lo, hi = _range(np.asarray(step.value, dtype=np.float64), step.signed, False)
        if step.kind == "softmax" and step.phase == "forward":
            lo, hi = 0.0, 1.0
        return View("bars", title, step.signed, lo, hi, True, bars=bars)
    tiles = [_own_tile(step, trace, cell)]
    tiles += _region_tiles(trace, explained)
    for g in explained.grids:  # the large ones, unless a picture above already shows them
        data = np.asarray(g.data, dtype=np.float64)
        if g.data.size > SMALL_GRID and not any(
                t.data.shape == data.shape and np.array_equal(t.data, data, equal_nan=True)
                for t in tiles):
            tiles.append(Tile(g.label, data, 0, 0, g.marks))
    if explained.effective_rf is not None:
        r0, r1, c0, c1 = explained.receptive_field
        marks = np.zeros(explained.effective_rf.shape, dtype=bool)
        marks[r0:r1 + 1, c0:c1 + 1] = True
        size = f"RF {r1 - r0 + 1}x{c1 - c0 + 1}"
        if not any(t.label.startswith("x[") for t in tiles):  # past the first layer: x itself
            x = np.asarray(trace["x"].value, dtype=np.float64)
            tiles.append(Tile(f"x {size}", x.reshape(-1, *x.shape[-2:])[0], 0, 0, marks))
        tiles.append(Tile(f"|d cell/dx| in {size}",
                          explained.effective_rf, 0, 0, marks))
    _ranged(tiles, True)
    # selected: drawn at full size (scrolling if it must), so the cursor is one pixel
    return View("tiles", title, True, 0.0, 1.0, False, tiles=tiles,
                legend=f"{POOL_MARKS[mode][0]}: the cursor, the cells it read, its receptive "
                       "field; each picture on its own scale",
                selected=channel_of(step, cell) or 0)


def side_by_side(blocks: list[tuple[np.ndarray, np.ndarray | None]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D blocks in one picture, left to right with a gap column between them, top-aligned,
    each scaled by its own largest |value| (so that each reads on the same colour scale);
    returns the picture, its marks and its gap mask."""
    height = max(a.shape[0] for a, _ in blocks)
    width = sum(a.shape[1] for a, _ in blocks) + len(blocks) - 1
    data = np.full((height, width), np.nan)
    marks = np.zeros((height, width), dtype=bool)
    gap = np.ones((height, width), dtype=bool)
    x = 0
    for a, m in blocks:
        h, w = a.shape
        top = np.abs(a[np.isfinite(a)]).max(initial=0.0)
        data[:h, x:x + w] = a / top if top > 0 else a
        gap[:h, x:x + w] = False
        if m is not None:
            marks[:h, x:x + w] = m
        x += w + 1
    return data, marks, gap


def im2col_view(trace: Trace, view: Im2col, mode: str = "truecolor",
                cell: tuple[int, ...] | None = None) -> View:
    """The lesson's im2col made visible. A forward cell: cols @ W (+ b) = out side by side,
    the cell's row of cols and of out lit, and its filter's column of W. A weight-gradient cell
    dW[f,c,u,v]: cols and dout side by side (dW = cols.T @ dout), the (c,u,v) column of cols and
    filter f's column of dout lit."""
    lit = POOL_MARKS[mode][0]
    L, K = view.cols.shape
    F = view.weights.shape[1]
    if view.row is None:  # a weight gradient: dW = cols.T @ dout
        cmarks = np.zeros((L, K), dtype=bool)
        dmarks = np.zeros((L, F), dtype=bool)
        if view.column is not None and cell is not None:
            cmarks[:, view.column] = True
            dmarks[:, view.filters.index(cell[0])] = True
        data, marks, gap = side_by_side([(view.cols, cmarks), (view.dout, dmarks)])
        label = f"cols {view.cols.shape} | dout {view.dout.shape}"
        shape = f"dW = cols.T @ dout: {view.dw_shape}"
        legend = (f"column (c,u,v) of cols: every output cell's input at that tap; {lit}: the "
                  "cursor's column and its filter's column of dout; each block scaled to its "
                  "own largest |value|")
    else:
        rows = np.zeros(L, dtype=bool)
        rows[view.row] = True
        wmarks = np.zeros((K, F), dtype=bool)
        if view.column is not None:
            wmarks[:, view.column] = True
        # the traced output of the group's filters, one column per filter, as the product gives
        value = np.asarray(trace[view.step].value, dtype=np.float64)
        out = value[list(view.filters)].reshape(len(view.filters), -1).T
        data, marks, gap = side_by_side([
            (view.cols, np.repeat(rows[:, None], K, axis=1)), (view.weights, wmarks),
            (out, np.repeat(rows[:, None], F, axis=1))])
        label = f"cols {view.cols.shape} | W {view.weights.shape} | out {out.shape}"
        shape = view.shape
        legend = (f"row i*W_out+j of cols is output cell (i, j)'s window, flattened; {lit}: the "
                  "cursor's row and its filter's column of W; each block scaled to its own "
                  "largest |value|")
    tiles = [Tile(label, data, -1.0, 1.0, marks if marks.any() else None, gap=gap)]
    group = f", group {view.group} of {view.groups}" if view.groups > 1 else ""
    return View("tiles", f"im2col of {view.step}: {shape}{group}", True, -1.0, 1.0, False,
                tiles=tiles, selected=0, legend=legend)


def update_view(update: Update) -> View:
    """W before, the step -lr*dW, and W after, for every conv weight (one filter row each)."""
    tiles = []
    for name, before in update.params_before.items():
        if before.ndim != 4:
            continue
        after, delta = update.params_after[name], update.params_after[name] - before
        for what, a in ((f"{name} before", before), (f"-lr*d{name}", delta),
                        (f"{name} after", after)):
            rows = np.concatenate([kernel_row(a[f]) for f in range(a.shape[0])], axis=0)
            gaps = np.concatenate([kernel_row_gap(a[f].shape) for f in range(a.shape[0])],
                                  axis=0)
            tiles.append(Tile(what, rows, 0, 0, gap=gaps))
    _ranged(tiles, True)
    return View("tiles", f"one SGD step, lr {update.lr:g}: W - lr*dW for this digit", True,
                0.0, 1.0, False, tiles=tiles,
                legend="each filter a row of its kernels; the middle picture is the change")
