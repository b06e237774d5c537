"""One cell of one step, explained from its parts: a conv's window, kernel, products and sum; a
pool's argmax; which gradient terms reach an input cell; the receptive field and the effective
receptive field; the im2col matrix of a convolution; one SGD step on this digit.

Every number comes from the trace's own tensors. ``Explained.total`` is recomputed from the
parts shown, independently of the traced value, so a wrong part shows up as ``total != value``.
Pure NumPy: never imports textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnntui import layers, model, ops
from cnntui.terminal import finite_or_null
from cnntui.trace import Step, Trace, build_trace

TOP = 8  # how many of the largest terms a line lists


@dataclass
class Grid:
    """One small labelled 2-D table of numbers to draw."""

    label: str  # e.g. "p1[2] window (padded)", "W2[5,2]", "products", "dout[f]"
    data: np.ndarray  # 2-D float
    marks: np.ndarray | None = None  # bool, same shape: cells to emphasise (argmax, padding, ...)


@dataclass
class Region:
    """A box to outline on a tensor that the stepper shows."""

    tensor: str  # step name, e.g. "p1" or "x"
    channels: tuple[int, ...]
    rows: tuple[int, int]  # half-open [r0, r1), unpadded coordinates; may run past the edges
    cols: tuple[int, int]


@dataclass
class Explained:
    step: str
    cell: tuple[int, ...]
    value: float  # the traced tensor's value at cell
    total: float  # the same number recomputed from the parts shown
    lines: list[str]  # the explanation in words and numbers, plain text
    grids: list[Grid] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    receptive_field: tuple[int, int, int, int] | None = None  # r0, r1, c0, c1 inclusive, in x
    effective_rf: np.ndarray | None = None  # (H, W) of x: |d cell / d x|
    data: dict = field(default_factory=dict)  # JSON-ready

    def to_json(self) -> dict:
        """``data`` with the step, cell, value, total and lines; NaN and Inf become None."""
        return finite_or_null({"step": self.step, "cell": list(self.cell), "value": self.value,
                               "total": self.total, "lines": self.lines, **self.data})


def _g(v: float) -> str:
    return f"{float(v):.6g}"


def _idx(cell: tuple[int, ...]) -> str:
    return ",".join(map(str, cell))


def _mat(a: np.ndarray) -> np.ndarray:
    """A 0-, 1- or 2-D array as a 2-D float array for a Grid."""
    a = np.asarray(a, dtype=float)
    return a.reshape(1, -1) if a.ndim < 2 else a


# ---- finding a step and its layer -------------------------------------------------------------


def _step(trace: Trace, name: str) -> Step:
    if name not in trace.names:
        raise ValueError(f"there is no step named {name!r}; the steps are "
                         f"{', '.join(trace.names)}")
    return trace[name]


def _check_cell(step: Step, cell: tuple[int, ...]) -> tuple[int, ...]:
    shape = step.value.shape
    try:
        cell = tuple(int(i) for i in cell)
    except (TypeError, ValueError):
        raise ValueError(f"a cell is a tuple of whole numbers, not {cell!r}") from None
    if len(cell) != len(shape):
        raise ValueError(f"{step.name} has shape {shape}, so a cell needs {len(shape)} "
                         f"indices, not {len(cell)}")
    if any(not 0 <= i < n for i, n in zip(cell, shape, strict=True)):
        raise ValueError(f"cell ({_idx(cell)}) is outside {step.name}, whose shape is {shape}")
    return cell


def _layer_index(trace: Trace, step: Step) -> int:
    return next(i for i, layer in enumerate(trace.arch.layers) if layer.name == step.layer)


def _role(trace: Trace, step: Step) -> str:
    """out (forward), dW / db (a parameter's gradient) or din (the gradient of the input)."""
    if step.phase == "forward":
        return "out"
    layer = step.layer_object
    if isinstance(layer, layers.WeightAndBias) and step.name == "d" + layer.weight:
        return "dW"
    if isinstance(layer, layers.WeightAndBias) and step.name == "d" + layer.bias:
        return "db"
    return "din"


def _params(trace: Trace) -> dict[str, np.ndarray]:
    return {k: v for s in trace.steps if s.phase == "forward" for k, v in s.params.items()}


# ---- the entry point --------------------------------------------------------------------------


def explain_cell(trace: Trace, step_name: str, cell: tuple[int, ...]) -> Explained:
    """How the traced value at ``cell`` of step ``step_name`` comes about, from its parts.
    Raises ValueError (one sentence) for an unknown step or a cell that is not in the tensor."""
    step = _step(trace, step_name)
    cell = _check_cell(step, cell)
    value = float(step.value[cell])
    if step.kind == "input":
        e = _input(trace, step, cell)
    else:
        i = _layer_index(trace, step)
        inp = model.layer_input(trace.arch, i)
        role = _role(trace, step)
        e = _EXPLAIN[step.kind, role == "out"](trace, step, cell, inp, role)
    e.value = value
    e.lines.append(f"recomputed from these parts: {_g(e.total)}; traced {step.name}[{_idx(cell)}]"
                   f" = {_g(value)} (difference {e.total - value:.1e})")
    e.data["value"] = value
    if step.phase == "forward":
        e.receptive_field = receptive_field(trace.arch, step_name, cell)
        e.effective_rf = effective_rf(trace, step_name, cell)
        r0, r1, c0, c1 = e.receptive_field
        e.data["receptive_field"] = {"rows": [r0, r1], "cols": [c0, c1]}
        e.data["effective_rf"] = e.effective_rf.tolist()
        e.lines.append(f"receptive field in x: rows {r0}-{r1}, columns {c0}-{c1} "
                       f"({r1 - r0 + 1}x{c1 - c0 + 1})")
    return e


def _new(step: Step, cell: tuple[int, ...], total: float, lines: list[str], **kw) -> Explained:
    return Explained(step.name, cell, float("nan"), float(total), lines, **kw)


def _input(trace, step, cell):
    return _new(step, cell, step.value[cell],
                [f"x[{_idx(cell)}] is pixel (row {cell[1]}, column {cell[2]}) of the image, "
                 f"standardised: {_g(step.value[cell])}"], data={"pixel": list(cell)})


# ---- convolution ------------------------------------------------------------------------------


def _padded_window(x: np.ndarray, rows: slice, cols: slice, padding: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """x (C, H, W) read over ``rows`` x ``cols`` in unpadded coordinates, with the padding zeros
    made explicit; returns (window, mask of the padding cells)."""
    C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    r = np.arange(rows.start, rows.stop)
    c = np.arange(cols.start, cols.stop)
    window = xp[:, r[:, None] + padding, c[None, :] + padding]
    pad = ~(((r >= 0) & (r < H))[:, None] & ((c >= 0) & (c < W))[None, :])
    return window, np.broadcast_to(pad, window.shape).copy()


def _group(layer: layers.Conv, C: int, f: int) -> tuple[int, int, int]:
    """(group of filter f, input channels per group, filters per group)."""
    Fg = layer.filters // layer.groups
    return f // Fg, C // layer.groups, Fg


def _conv_out(trace, step, cell, inp, role):
    layer = step.layer_object
    x = step.inputs[inp]
    W, b = step.params[layer.weight], step.params[layer.bias]
    f, i, j = cell
    cs, rows, cols = layer.window(x.shape, cell)
    window, pad = _padded_window(x[cs], rows, cols, layer.padding)
    kernel = W[f]
    products = window * kernel
    sums = products.sum(axis=(1, 2))
    total = float(sums.sum() + b[f])
    channels = range(cs.start, cs.stop)
    src = f"{inp}_padded" if layer.padding else inp
    lines = [f"{step.name}[{_idx(cell)}] = sum({src}[{cs.start}:{cs.stop}, "
             f"{rows.start + layer.padding}:{rows.stop + layer.padding}, "
             f"{cols.start + layer.padding}:{cols.stop + layer.padding}] * {layer.weight}[{f}]) "
             f"+ {layer.bias}[{f}]"
             + (f"  (stride {layer.stride})" if layer.stride > 1 else "")]
    if layer.groups > 1:
        lines.append(f"filter {f} is in group {f // (layer.filters // layer.groups)} of "
                     f"{layer.groups}: it reads {inp} channel(s) {cs.start}-{cs.stop - 1} only")
    lines.append(f"window: {inp} rows {rows.start}..{rows.stop - 1}, columns "
                 f"{cols.start}..{cols.stop - 1}; {int(pad[0].sum())} of its "
                 f"{pad[0].size} cells per channel are padding zeros")
    grids = []
    for k, c in enumerate(channels):
        lines.append(f"  channel {c}: sum of the {kernel[k].size} products = {_g(sums[k])}")
        grids += [Grid(f"{inp}[{c}] window (padded)", window[k], pad[k]),
                  Grid(f"{layer.weight}[{f},{k}]", kernel[k]),
                  Grid(f"products c={c}", products[k], pad[k])]
    lines.append(f"  + {layer.bias}[{f}] = {_g(b[f])}  ->  {_g(total)}")
    return _new(step, cell, total, lines, grids=grids,
                regions=[Region(inp, tuple(channels), (rows.start, rows.stop),
                                (cols.start, cols.stop))],
                data={"window": window.tolist(), "padding": pad.tolist(),
                      "kernel": kernel.tolist(), "products": products.tolist(),
                      "channel_sums": sums.tolist(), "bias": float(b[f])})


def _conv_back(trace, step, cell, inp, role):
    layer = step.layer_object
    dout_name = "d" + layer.out
    dout, x = step.inputs[dout_name], step.inputs[inp]
    s, p, k = layer.stride, layer.padding, layer.kernel
    F, H_out, W_out = dout.shape
    if role == "db":
        (f,) = cell
        total = float(dout[f].sum())
        return _new(step, cell, total,
                    [f"{step.name}[{f}] = sum over every (i, j) of {dout_name}[{f},i,j] "
                     f"({H_out * W_out} cells) = {_g(total)}"],
                    grids=[Grid(f"{dout_name}[{f}]", dout[f])],
                    regions=[Region(dout_name, (f,), (0, H_out), (0, W_out))],
                    data={"dout": dout[f].tolist()})
    W = step.params[layer.weight]
    if role == "dW":
        f, c, u, v = cell
        g, Cg, _ = _group(layer, x.shape[0], f)
        cin = g * Cg + c
        xp = np.pad(x[cin], p)
        seen = xp[u:u + s * (H_out - 1) + 1:s, v:v + s * (W_out - 1) + 1:s]
        products = dout[f] * seen
        total = float(products.sum())
        src = f"{inp}_padded" if p else inp
        rows = f"{u}+{s}i" if s > 1 else f"{u}+i"
        cols = f"{v}+{s}j" if s > 1 else f"{v}+j"
        lines = [f"{step.name}[{_idx(cell)}] = sum over (i, j) of {dout_name}[{f},i,j] * "
                 f"{src}[{cin}, {rows}, {cols}]  ({H_out}x{W_out} products)",
                 f"the tap ({u},{v}) of filter {f} saw {inp}[{cin}] rows {u - p}.."
                 f"{u - p + s * (H_out - 1)}, columns {v - p}..{v - p + s * (W_out - 1)}"
                 + (f" (every {s}th)" if s > 1 else ""),
                 f"sum of the products = {_g(total)}"]
        r = np.arange(H_out) * s + u - p
        q = np.arange(W_out) * s + v - p
        pad = ~(((r >= 0) & (r < x.shape[1]))[:, None] & ((q >= 0) & (q < x.shape[2]))[None, :])
        return _new(step, cell, total, lines,
                    grids=[Grid(f"{dout_name}[{f}]", dout[f]),
                           Grid(f"{src}[{cin}] at tap ({u},{v})", seen, pad),
                           Grid("products", products, pad)],
                    regions=[Region(inp, (cin,), (u - p, u - p + s * (H_out - 1) + 1),
                                    (v - p, v - p + s * (W_out - 1) + 1)),
                             Region(dout_name, (f,), (0, H_out), (0, W_out))],
                    data={"dout": dout[f].tolist(), "input": seen.tolist(),
                          "products": products.tolist()})
    # din: every output gradient cell whose window covers (c, y, x), times the kernel tap there
    c, y, xc = cell
    C = x.shape[0]
    Cg, Fg = C // layer.groups, layer.filters // layer.groups
    g, cl = divmod(c, Cg)
    terms, grids = [], []
    for f in range(g * Fg, (g + 1) * Fg):
        taps = np.zeros((k, k))
        reach = np.zeros((k, k), dtype=bool)
        for u in range(k):
            for v in range(k):
                i, ri = divmod(y + p - u, s)
                j, rj = divmod(xc + p - v, s)
                if ri or rj or not (0 <= i < H_out and 0 <= j < W_out):
                    continue
                d, w = float(dout[f, i, j]), float(W[f, cl, u, v])
                terms.append({"f": f, "i": i, "j": j, "u": u, "v": v, "dout": d, "weight": w,
                              "product": d * w})
                taps[u, v], reach[u, v] = d * w, True
        grids.append(Grid(f"{dout_name}[{f},i,j] * {layer.weight}[{f},{cl},u,v] by tap (u,v)",
                          taps, reach))
    total = float(sum(t["product"] for t in terms))
    si = f"{s}i" if s > 1 else "i"
    sj = f"{s}j" if s > 1 else "j"
    where = "padded coordinates" if p else "coordinates"
    lines = [f"{step.name}[{_idx(cell)}] = sum of {dout_name}[f,i,j] * {layer.weight}[f,{cl},u,v]"
             f" over the output cells (i, j) and taps (u, v) that land on {inp}[{c},{y},{xc}]: "
             f"{si} + u = {y + p}, {sj} + v = {xc + p} ({where})",
             f"{len(terms)} terms from filters {g * Fg}-{(g + 1) * Fg - 1}; the largest:"]
    for t in sorted(terms, key=lambda t: -abs(t["product"]))[:TOP]:
        lines.append(f"  {dout_name}[{t['f']},{t['i']},{t['j']}] * {layer.weight}[{t['f']},{cl},"
                     f"{t['u']},{t['v']}] = {_g(t['dout'])} * {_g(t['weight'])} = "
                     f"{_g(t['product'])}")
    lines.append(f"sum of the {len(terms)} terms = {_g(total)}")
    ii = [t["i"] for t in terms] or [0]
    jj = [t["j"] for t in terms] or [0]
    return _new(step, cell, total, lines, grids=grids,
                regions=[Region(dout_name, tuple(range(g * Fg, (g + 1) * Fg)),
                                (min(ii), max(ii) + 1), (min(jj), max(jj) + 1))],
                data={"terms": terms})


# ---- ReLU, pool, flatten ----------------------------------------------------------------------


def _relu_out(trace, step, cell, inp, role):
    z, mask = step.inputs[inp][cell], bool(step.cache["mask"][cell])
    total = float(z) if mask else 0.0
    return _new(step, cell, total,
                [f"{step.name}[{_idx(cell)}] = max(0, {inp}[{_idx(cell)}]) = max(0, {_g(z)}) "
                 f"= {_g(total)}; mask {'on: it passes' if mask else 'off: it is cut to 0'}"],
                regions=[Region(inp, (cell[0],), (cell[1], cell[1] + 1), (cell[2], cell[2] + 1))]
                if len(cell) == 3 else [],
                data={"input": float(z), "mask": mask})


def _relu_back(trace, step, cell, inp, role):
    dout_name = "d" + step.layer_object.out
    d, mask = step.inputs[dout_name][cell], bool(step.cache["mask"][cell])
    z = step.inputs[inp][cell]
    total = float(d) if mask else 0.0
    why = (f"{inp}[{_idx(cell)}] = {_g(z)} > 0, so the gradient passes" if mask else
           f"{inp}[{_idx(cell)}] = {_g(z)} <= 0, so the gradient stops")
    return _new(step, cell, total,
                [f"{step.name}[{_idx(cell)}] = {dout_name}[{_idx(cell)}] * mask = {_g(d)} * "
                 f"{int(mask)} = {_g(total)}", why],
                data={"dout": float(d), "mask": mask, "input": float(z)})


def _pool_out(trace, step, cell, inp, role):
    layer = step.layer_object
    a = step.inputs[inp]
    c, i, j = cell
    _, rows, cols = layer.window(a.shape, cell)
    window = a[c, rows, cols]
    r, q = divmod(int(step.cache["argmax"][cell]), a.shape[2])
    marks = np.zeros(window.shape, dtype=bool)
    marks[r - rows.start, q - cols.start] = True
    total = float(a[c, r, q])
    return _new(step, cell, total,
                [f"{step.name}[{_idx(cell)}] = max({inp}[{c}, {rows.start}:{rows.stop}, "
                 f"{cols.start}:{cols.stop}])",
                 f"the maximum {_g(total)} is at {inp}[{c},{r},{q}] (row {r}, column {q}); the "
                 f"window's largest value is {_g(window.max())}"],
                grids=[Grid(f"{inp}[{c}] window", window, marks)],
                regions=[Region(inp, (c,), (rows.start, rows.stop), (cols.start, cols.stop))],
                data={"window": window.tolist(), "argmax": [r, q]})


def _pool_back(trace, step, cell, inp, role):
    layer = step.layer_object
    dout_name = "d" + layer.out
    dout, argmax = step.inputs[dout_name], step.cache["argmax"]
    c, y, xc = cell
    W = step.value.shape[2]
    got, lines, regions = [], [], []
    for i in range(dout.shape[1]):
        for j in range(dout.shape[2]):
            _, rows, cols = layer.window(step.value.shape, (c, i, j))
            if not (rows.start <= y < rows.stop and cols.start <= xc < cols.stop):
                continue
            regions.append(Region(inp, (c,), (rows.start, rows.stop), (cols.start, cols.stop)))
            r, q = divmod(int(argmax[c, i, j]), W)
            if (r, q) == (y, xc):
                got.append({"i": i, "j": j, "dout": float(dout[c, i, j])})
                lines.append(f"{inp}[{c},{y},{xc}] was the argmax of window ({i},{j}), so it "
                             f"receives {dout_name}[{c},{i},{j}] = {_g(dout[c, i, j])}")
            else:
                lines.append(f"window ({i},{j}) took its maximum at {inp}[{c},{r},{q}], not here"
                             f": {dout_name}[{c},{i},{j}] goes there, 0 comes here")
    if not regions:
        lines.append(f"no window reads {inp}[{c},{y},{xc}], so its gradient is 0")
    total = float(sum(t["dout"] for t in got))
    return _new(step, cell, total, [f"{step.name}[{_idx(cell)}] = {_g(total)}", *lines],
                regions=regions, data={"received": got})


def _flatten_out(trace, step, cell, inp, role):
    shape = step.inputs[inp].shape
    src = tuple(int(i) for i in np.unravel_index(cell[0], shape))
    total = float(step.inputs[inp][src])
    return _new(step, cell, total,
                [f"{step.name}[{cell[0]}] is {inp}[{_idx(src)}] (channel, row, column in C order: "
                 f"{cell[0]} = {src[0]}*{shape[1] * shape[2]} + {src[1]}*{shape[2]} + {src[2]})"
                 f" = {_g(total)}"],
                regions=[Region(inp, (src[0],), (src[1], src[1] + 1), (src[2], src[2] + 1))],
                data={"source": list(src)})


def _flatten_back(trace, step, cell, inp, role):
    dout_name = "d" + step.layer_object.out
    d = int(np.ravel_multi_index(cell, step.value.shape))
    total = float(step.inputs[dout_name][d])
    return _new(step, cell, total,
                [f"{step.name}[{_idx(cell)}] is {dout_name}[{d}] reshaped = {_g(total)}"],
                data={"source": [d]})


# ---- linear and softmax -----------------------------------------------------------------------


def _linear_out(trace, step, cell, inp, role):
    layer = step.layer_object
    h = step.inputs[inp]
    W, b = step.params[layer.weight], step.params[layer.bias]
    (m,) = cell
    products = h * W[:, m]
    total = float(products.sum() + b[m])
    lines = [f"{step.name}[{m}] = sum over d of {inp}[d] * {layer.weight}[d,{m}] + "
             f"{layer.bias}[{m}]  ({len(h)} products); the largest:"]
    for d in np.argsort(-np.abs(products), kind="stable")[:TOP]:
        lines.append(f"  {inp}[{d}] * {layer.weight}[{d},{m}] = {_g(h[d])} * {_g(W[d, m])} = "
                     f"{_g(products[d])}")
    lines.append(f"sum of the products = {_g(products.sum())}; + {layer.bias}[{m}] = "
                 f"{_g(b[m])}  ->  {_g(total)}")
    return _new(step, cell, total, lines, grids=_flat_grids(trace, inp, products, "products"),
                data={"products": products.tolist(), "bias": float(b[m])})


def _flat_grids(trace, inp: str, v: np.ndarray, label: str) -> list[Grid]:
    """A vector that a Flatten made, as one grid per channel of the tensor it came from."""
    i = next((k for k, layer in enumerate(trace.arch.layers) if layer.out == inp), None)
    if i is None or not isinstance(trace.arch.layers[i], layers.Flatten):
        return [Grid(label, _mat(v))]
    shape = trace.arch.shapes[model.layer_input(trace.arch, i)]
    return [Grid(f"{label} c={c}", a) for c, a in enumerate(v.reshape(shape))]


def _linear_back(trace, step, cell, inp, role):
    layer = step.layer_object
    dout_name = "d" + layer.out
    dout, h = step.inputs[dout_name], step.inputs[inp]
    W = step.params[layer.weight]
    if role == "dW":
        d, m = cell
        total = float(h[d] * dout[m])
        return _new(step, cell, total,
                    [f"{step.name}[{d},{m}] = {inp}[{d}] * {dout_name}[{m}] = {_g(h[d])} * "
                     f"{_g(dout[m])} = {_g(total)}"], data={"input": float(h[d]),
                                                            "dout": float(dout[m])})
    if role == "db":
        (m,) = cell
        return _new(step, cell, dout[m], [f"{step.name}[{m}] = {dout_name}[{m}] = "
                                          f"{_g(dout[m])}"], data={"dout": float(dout[m])})
    (d,) = cell
    products = W[d] * dout
    total = float(products.sum())
    lines = [f"{step.name}[{d}] = sum over m of {layer.weight}[{d},m] * {dout_name}[m]:"]
    for m in range(len(dout)):
        lines.append(f"  {layer.weight}[{d},{m}] * {dout_name}[{m}] = {_g(W[d, m])} * "
                     f"{_g(dout[m])} = {_g(products[m])}")
    lines.append(f"sum = {_g(total)}")
    return _new(step, cell, total, lines, grids=[Grid("products", _mat(products))],
                data={"products": products.tolist()})


def _softmax_out(trace, step, cell, inp, role):
    logits = step.inputs[inp]
    (k,) = cell
    top = logits.max()
    e = np.exp(logits - top)
    s = e.sum()
    total = float(e[k] / s)
    loss = float(-np.log(step.value[trace.label] + ops.LOG_EPS))
    lines = [f"{step.name}[{k}] = exp({inp}[{k}] - max) / sum(exp({inp} - max))",
             f"max of {inp} = {_g(top)}; exp({_g(logits[k])} - {_g(top)}) = {_g(e[k])}",
             f"sum of the {len(e)} exponentials = {_g(s)};  {_g(e[k])} / {_g(s)} = "
             f"{_g(total)}",
             f"loss = -log(probs[{trace.label}] + 1e-15) = {_g(loss)} (label {trace.label})"]
    return _new(step, cell, total, lines, grids=[Grid("exp(logits - max)", _mat(e))],
                data={"logits": logits.tolist(), "max": float(top), "exp": e.tolist(),
                      "sum": float(s), "label": trace.label,
                      "loss": loss})


def _softmax_back(trace, step, cell, inp, role):
    probs = step.inputs[step.layer_object.out]
    (k,) = cell
    label = trace.label
    if k != label:
        total = float(probs[k])
        line = (f"{step.name}[{k}] = probs[{k}] - onehot[{k}] = {_g(probs[k])} - 0 = "
                f"{_g(total)}")
    else:
        others = probs.copy()
        others[label] = 0
        total = float(-others.sum())
        line = (f"{step.name}[{k}] = probs[{k}] - 1 = {_g(probs[k])} - 1, computed as -(sum of "
                f"the other probabilities) = {_g(total)} so that no digit is lost")
    return _new(step, cell, total, [line, f"label {label}: onehot is 1 at {label}, 0 elsewhere"],
                data={"probs": probs.tolist(), "label": label})


_EXPLAIN = {
    ("conv", True): _conv_out, ("conv", False): _conv_back,
    ("relu", True): _relu_out, ("relu", False): _relu_back,
    ("pool", True): _pool_out, ("pool", False): _pool_back,
    ("flatten", True): _flatten_out, ("flatten", False): _flatten_back,
    ("linear", True): _linear_out, ("linear", False): _linear_back,
    ("softmax", True): _softmax_out, ("softmax", False): _softmax_back,
}


# ---- receptive fields -------------------------------------------------------------------------


def _forward_index(arch: model.Architecture, step_name: str) -> int:
    """The number of layers up to and including the one that produces ``step_name`` (0: x)."""
    if step_name == "x":
        return 0
    for i, layer in enumerate(arch.layers):
        if layer.out == step_name:
            return i + 1
    raise ValueError(f"{step_name!r} is not a forward tensor of {arch.name}; they are "
                     f"{', '.join(arch.shapes)}")


def receptive_field(arch: model.Architecture, step_name: str, cell: tuple[int, ...]
                    ) -> tuple[int, int, int, int]:
    """The rows and columns of x (r0, r1, c0, c1, inclusive, clipped to the image) that forward
    ``cell`` of ``step_name`` can depend on, from the layers' geometry alone (kernel, stride,
    padding, pool window), composed back to x. A softmax or linear cell reads everything."""
    n = _forward_index(arch, step_name)
    shape = arch.shapes[step_name]
    if len(cell) != len(shape):
        raise ValueError(f"{step_name} has shape {shape}, so a cell needs {len(shape)} indices, "
                         f"not {len(cell)}")
    # a 3-D tensor's region is a box (r0, r1, c0, c1); a vector's a set of indices
    box = (cell[1], cell[1], cell[2], cell[2]) if len(shape) == 3 else None
    idx = None if box else np.array([cell[0]])
    for i in range(n - 1, -1, -1):
        layer = arch.layers[i]
        in_shape = arch.shapes[model.layer_input(arch, i)]
        if isinstance(layer, (layers.Conv, layers.MaxPool)):
            r0, r1, c0, c1 = box
            _, rows0, cols0 = layer.window(in_shape, (0, r0, c0))
            _, rows1, cols1 = layer.window(in_shape, (0, r1, c1))
            H, W = in_shape[1:]
            box = (max(rows0.start, 0), min(rows1.stop - 1, H - 1),
                   max(cols0.start, 0), min(cols1.stop - 1, W - 1))
        elif isinstance(layer, layers.Flatten):
            _, rr, cc = np.unravel_index(idx, in_shape)
            box, idx = (int(rr.min()), int(rr.max()), int(cc.min()), int(cc.max())), None
        elif isinstance(layer, (layers.Linear, layers.SoftmaxCrossEntropy)):
            idx = np.arange(in_shape[0])  # every input reaches every output
        # a ReLU keeps the cell where it is
    return tuple(int(v) for v in box)


def _seed_backward(layer: layers.Layer, params: dict, trace: Trace, inp: str,
                   dh: np.ndarray) -> np.ndarray:
    """dh (1, ...) through ``layer`` back to its input, with the caches rebuilt from the trace:
    its ReLU masks and pool argmaxes, and a conv's or linear layer's own forward on the traced
    input."""
    if isinstance(layer, layers.SoftmaxCrossEntropy):
        # no backward of its own (training uses the loss's): the softmax's Jacobian,
        # p_i (dh_i - sum_j p_j dh_j) written as p_i sum_j p_j (dh_i - dh_j), which never
        # forms 1 - p_i: for a sure network (p = 1 - 3e-9) that keeps only ~7 digits
        p = trace[layer.out].value[None]
        return p * ((dh[:, :, None] - dh[:, None, :]) * p[:, None, :]).sum(axis=2)
    x = trace[inp].value[None]
    if isinstance(layer, layers.ReLU):
        cache = trace[layer.out].cache["mask"][None]
    elif isinstance(layer, layers.MaxPool):
        cache = (x.shape, trace[layer.out].cache["argmax"][None], layer.size, layer.stride)
    elif isinstance(layer, layers.Flatten):
        cache = x.shape
    else:
        _, cache = layer.forward(params, x)
    return layer.backward(params, dh, cache)[0]


def effective_rf(trace: Trace, step_name: str, cell: tuple[int, ...]) -> np.ndarray:
    """|d cell / d x| as an (H, W) map (summed over x's channels): a backward pass through the
    layers' own backward functions seeded with 1 at ``cell`` of the forward tensor
    ``step_name`` and 0 elsewhere, following the trace's ReLU masks and pool argmaxes."""
    step = _step(trace, step_name)
    if step.phase != "forward":
        raise ValueError(f"{step_name} is a gradient; an effective receptive field starts from "
                         f"a forward tensor")
    cell = _check_cell(step, cell)
    n = _forward_index(trace.arch, step_name)
    params = _params(trace)
    dh = np.zeros((1, *step.value.shape), dtype=step.value.dtype)
    dh[(0, *cell)] = 1
    for i in range(n - 1, -1, -1):
        dh = _seed_backward(trace.arch.layers[i], params, trace,
                            model.layer_input(trace.arch, i), dh)
    return np.abs(dh[0]).sum(axis=0)


# ---- im2col -----------------------------------------------------------------------------------


@dataclass
class Im2col:
    """A convolution as one matrix product, for one group of its filters:
    ``cols @ weights + bias`` reshaped to (F, H_out, W_out) is the group's output, and its
    weight gradient is ``cols.T @ dout`` (C*kH*kW, F)."""

    step: str  # the conv's forward step, e.g. "z2"
    inp: str  # the tensor it reads, e.g. "p1"
    group: int  # which group of filters these matrices are for (0 when groups == 1)
    groups: int
    channels: tuple[int, ...]  # the input channels of that group
    filters: tuple[int, ...]  # the filters of that group (columns of weights)
    cols: np.ndarray  # (H_out*W_out, C*kH*kW): row i*W_out + j is output cell (i, j)'s window
    weights: np.ndarray  # (C*kH*kW, F): column f is filter f flattened
    bias: np.ndarray  # (F,)
    dout: np.ndarray  # (H_out*W_out, F): the output's gradient, as cols.T @ dout = dW
    shape: str  # "(784, 9) @ (9, 4) = (784, 4)"
    dw_shape: str  # "(9, 784) @ (784, 4) = (9, 4)"
    row: int | None  # the selected output cell's row of cols (i*W_out + j)
    column: int | None  # a forward cell: its filter's column of weights; a dW cell: its
    #                     (c, u, v) column of cols
    col_labels: list[str]  # per column of cols: "p1[2] (u,v)"
    out_shape: tuple[int, int, int]  # (F, H_out, W_out) of the group's output


def im2col_view(trace: Trace, step_name: str, cell: tuple[int, ...] | None = None) -> Im2col:
    """The im2col matrices of a conv forward step (``z1``...) or of its weight gradient step
    (``dW1``...); ``cell`` picks the group, the row and the column."""
    step = _step(trace, step_name)
    if step.kind != "conv" or _role(trace, step) not in ("out", "dW"):
        raise ValueError(f"{step_name} is not a convolution's output or weight gradient, so it "
                         f"has no im2col matrix")
    if cell is not None:
        cell = _check_cell(step, cell)
    layer = step.layer_object
    inp = model.layer_input(trace.arch, _layer_index(trace, step))
    x, out = trace[inp].value, trace[layer.out].value
    W, b = step.params[layer.weight], step.params[layer.bias]
    k, s, p = layer.kernel, layer.stride, layer.padding
    F, H_out, W_out = out.shape
    g = 0 if cell is None else cell[0] // (layer.filters // layer.groups)
    _, Cg, Fg = _group(layer, x.shape[0], g * (layer.filters // layer.groups))
    cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
    xp = np.pad(x[cs], ((0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s][:, :H_out, :W_out]
    cols = win.transpose(1, 2, 0, 3, 4).reshape(H_out * W_out, Cg * k * k)
    weights = W[fs].reshape(Fg, Cg * k * k).T
    dout = trace["d" + layer.out].value[fs].reshape(Fg, -1).T
    L, K = cols.shape
    row = column = None
    if cell is not None and step.phase == "forward":
        row, column = cell[1] * W_out + cell[2], cell[0] - g * Fg
    elif cell is not None:
        column = (cell[1] * k + cell[2]) * k + cell[3]
    labels = [f"{inp}[{c}] ({u},{v})" for c in range(cs.start, cs.stop)
              for u in range(k) for v in range(k)]
    return Im2col(layer.out, inp, g, layer.groups, tuple(range(cs.start, cs.stop)),
                  tuple(range(fs.start, fs.stop)), cols, weights, b[fs], dout,
                  f"({L}, {K}) @ ({K}, {Fg}) = ({L}, {Fg})",
                  f"({K}, {L}) @ ({L}, {Fg}) = ({K}, {Fg})", row, column, labels,
                  (Fg, H_out, W_out))


# ---- one SGD step -----------------------------------------------------------------------------


@dataclass
class Update:
    """One plain SGD step on this digit's gradients: W <- W - lr * dW."""

    lr: float
    label: int
    params_before: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    params_after: dict[str, np.ndarray]
    ratios: dict[str, float]  # ||lr * dW|| / ||W|| (inf where ||W|| = 0 and the step is not)
    loss_before: float
    loss_after: float
    probs_before: np.ndarray
    probs_after: np.ndarray
    gained: bool  # whether p(label) rose
    trace_after: Trace  # the same digit through the updated parameters
    lines: list[str]

    def to_json(self) -> dict:
        return finite_or_null({"lr": self.lr, "label": self.label, "ratios": self.ratios,
                               "loss_before": self.loss_before, "loss_after": self.loss_after,
                               "probs_before": self.probs_before.tolist(),
                               "probs_after": self.probs_after.tolist(), "gained": self.gained,
                               "lines": self.lines})


def _ratio(step: np.ndarray, w: np.ndarray) -> float:
    a, b = float(np.linalg.norm(step)), float(np.linalg.norm(w))
    return a / b if b else (float("inf") if a else 0.0)


def sgd_update(trace: Trace, lr: float = 0.01) -> Update:
    """What one SGD step with learning rate ``lr`` on this digit's gradients alone would do: the
    new parameters, how large the step is against each parameter, and the digit's new loss and
    probabilities (a new trace of the same digit and architecture)."""
    before = _params(trace)
    grads = {k: trace["d" + k].value for k in before}
    after = {k: before[k] - lr * grads[k] for k in before}
    ratios = {k: _ratio(lr * grads[k], before[k]) for k in before}
    new = build_trace(after, trace["x"].value, trace.label, index=trace.index, dtype=trace.dtype,
                      weights=f"{trace.weights} + one SGD step (lr {lr:g})", arch=trace.arch)
    label = trace.label
    gained = bool(new.probs[label] > trace.probs[label])
    lines = [f"one SGD step, lr {lr:g}: every parameter W <- W - {lr:g} * dW (this digit only)",
             *(f"  {k}: ||lr*d{k}|| / ||{k}|| = {ratios[k]:.3g}" for k in before),
             f"loss {trace.loss:.6g} -> {new.loss:.6g}; p(label {label}) "
             f"{trace.probs[label]:.6g} -> {new.probs[label]:.6g} "
             f"({'rose' if gained else 'did not rise'}); predicted {trace.prediction} -> "
             f"{new.prediction}"]
    return Update(lr, label, before, grads, after, ratios, trace.loss, new.loss, trace.probs,
                  new.probs, gained, new, lines)
