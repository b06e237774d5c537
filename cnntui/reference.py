"""The same network in PyTorch with the same weights: every forward and backward tensor of the
trace, under the same names, and how far each of ours is from it.

torch takes seconds to import, so it is imported only inside these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnntui import model
from cnntui.trace import Step, Trace

# Agreement tolerances on max|ours - torch| / max|torch|, per dtype. float64 sums of a few
# hundred products agree to ~1e-15; float32 to ~1e-6. The gaps are generous but still fail
# loudly for any real bug (those give errors of order 1e-3 and up).
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
# Every backward tensor is linear in dlogits, so it can differ from PyTorch's by as much (in
# relative terms) as dlogits does, times this margin. That matters when the network is sure:
# PyTorch's p - 1 for p = 1 - 1e-10 keeps only ~6 digits, and so does everything after it.
INHERITED_MARGIN = 10.0


def torch_logits(arch: model.Architecture, params: dict, x, keep: dict | None = None,
                 pool_choices: dict[str, np.ndarray] | None = None):
    """``arch`` in PyTorch, functionally: torch tensors ``params`` and a batch ``x`` -> the logits
    (everything before the softmax). The one PyTorch copy of the network that the reference,
    the benchmark and the trainer comparison all use.

    ``keep``, if given, receives every intermediate tensor by name (gradients retained) and each
    pooling layer's argmax as ``argmax:<layer>``. ``pool_choices`` (layer name -> argmax for one
    image) makes those layers take the given cells instead of choosing their own."""
    import torch
    import torch.nn.functional as F

    h = x
    for layer in arch.layers[:-1]:
        if layer.kind == "conv":
            w, b = (params[p] for p in layer.params)
            h = F.conv2d(h, w, b, stride=layer.stride, padding=layer.padding)
        elif layer.kind == "relu":
            h = torch.relu(h)
        elif layer.kind == "pool":
            if keep is None and not pool_choices:
                h = F.max_pool2d(h, layer.size, layer.stride)
                continue
            pooled, idx = F.max_pool2d(h, layer.size, layer.stride, return_indices=True)
            if pool_choices and layer.name in pool_choices:
                idx = torch.from_numpy(np.asarray(pool_choices[layer.name])[None])
                pooled = h.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
            if keep is not None:
                keep["argmax:" + layer.name] = idx
            h = pooled
        elif layer.kind == "flatten":
            h = torch.flatten(h, 1)
        elif layer.kind == "linear":
            w, b = (params[p] for p in layer.params)
            h = h @ w + b
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        if keep is not None:
            h.retain_grad()
            keep[layer.out] = h
    return h


def torch_tensors(params: dict[str, np.ndarray], x: np.ndarray, label: int,
                  dtype: str = "float64", arch: model.Architecture = model.SIMPLE_CNN,
                  pool_choices: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run one (C, H, W) image through a functional PyTorch copy of ``arch`` and return every
    tensor of the trace by name (no batch axis), gradients from autograd with ``retain_grad``,
    and each pooling layer's argmax as ``argmax:<layer>`` (flat indices, as our caches hold).

    ``pool_choices`` (layer name -> argmax) makes those layers take the given cells instead of
    choosing their own: how to compare two passes whose pooling broke a tie differently."""
    import torch
    import torch.nn.functional as F

    tdtype = {"float64": torch.float64, "float32": torch.float32}[str(np.dtype(dtype))]
    leaf = {k: torch.tensor(np.asarray(v), dtype=tdtype, requires_grad=True)
            for k, v in params.items()}
    xt = torch.tensor(np.asarray(x)[None], dtype=tdtype, requires_grad=True)
    acts = {"x": xt}
    logits = torch_logits(arch, leaf, xt, keep=acts, pool_choices=pool_choices)
    loss = F.cross_entropy(logits, torch.tensor([label]))
    acts[arch.layers[-1].out] = torch.softmax(logits, dim=1)
    loss.backward()
    out = {name: t.detach().numpy()[0] for name, t in acts.items()}
    for i, layer in enumerate(arch.layers[:-1]):
        inp = model.layer_input(arch, i)
        out["d" + inp] = acts[inp].grad.numpy()[0]
        for p in layer.params:
            out["d" + p] = leaf[p].grad.numpy()
    out["d" + arch.layers[-2].out] = acts[arch.layers[-2].out].grad.numpy()[0]
    return out


def compare(ours: np.ndarray, theirs: np.ndarray, scale: float | None = None
            ) -> tuple[float, float]:
    """(max |difference|, that divided by ``scale``, by default the largest |reference| value).
    Relative to the tensor's scale, not per element: near-zero entries would otherwise make
    rounding noise look huge."""
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64))))
    if scale is None:
        scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def attach(trace: Trace) -> None:
    """Fill ``torch_value``, ``torch_max_abs_diff`` and ``torch_max_rel_err`` on every step,
    running PyTorch with the very parameters the trace's steps used."""
    x = trace["x"].value
    params = {k: v for step in trace.steps for k, v in step.params.items()}
    ref = torch_tensors(params, x, trace.label, trace.dtype)
    base = TOLERANCE[trace.dtype]
    ties = tie_breaks(trace, {k[7:]: v for k, v in ref.items() if k.startswith("argmax:")}, base)
    note = ""
    if ties:
        # Mathematically equal maxima that rounding set apart differently in the two libraries:
        # both choices are right, but the gradient then flows to different cells. Compare the
        # rest through our choices, so that any other difference still shows.
        ref = torch_tensors(params, x, trace.label, trace.dtype, pool_choices=pool_choices(trace))
        note = tie_note("PyTorch", ties)
    results = compare_trace(trace, ref, base)
    # the choice matters to the pool's forward step and to the backward from that pool on
    affected_from = min((s.index for s in trace.steps if s.phase == "backward" and s.layer in ties),
                        default=len(trace.steps))
    for step in trace.steps:
        step.torch_value = ref[step.name].reshape(step.value.shape)
        step.torch_max_abs_diff, step.torch_max_rel_err, step.torch_tolerance = results[step.name]
        step.torch_note = note if step.index >= affected_from or step.layer in ties else ""


def compare_trace(trace: Trace, ref: dict[str, np.ndarray], base: float
                  ) -> dict[str, tuple[float, float, float]]:
    """Every step of ``trace`` against the same-named tensor of ``ref`` (PyTorch's or the
    lesson's): (max |difference|, relative error, the tolerance that relative error must meet)."""
    results = {}
    inherited = 0.0
    for step in trace.steps:
        theirs = ref[step.name].reshape(step.value.shape)
        tol = base
        if step.index == trace.first_backward:
            # dlogits = probs - onehot: its rounding is relative to the probabilities (<= 1),
            # not to itself, which is tiny when the network is sure
            scale = max(float(np.max(np.abs(theirs))), float(np.max(trace.probs)))
            diff, rel = compare(step.value, theirs, scale)
            inherited = compare(step.value, theirs)[1]
        else:
            diff, rel = compare(step.value, theirs)
            if step.phase == "backward":
                tol = base + INHERITED_MARGIN * inherited
        results[step.name] = (diff, rel, tol)
    return results


def pool_choices(trace: Trace) -> dict[str, np.ndarray]:
    """Each pooling layer's argmax in the trace, by layer name."""
    return {s.layer: s.cache["argmax"] for s in trace.steps
            if s.phase == "forward" and "argmax" in s.cache}


def tie_breaks(trace: Trace, other: dict[str, np.ndarray], tol: float) -> dict[str, int]:
    """Per pooling layer, in how many windows ``other`` (layer -> argmax, from another
    implementation) took a different cell whose value, in our tensor, equals the window's
    maximum to within ``tol`` of the map's scale: a tie that rounding broke differently. Empty
    if some choice differs by more than that, which is a real disagreement."""
    ties = {}
    for step in trace.steps:
        if step.phase != "forward" or "argmax" not in step.cache:
            continue
        ours = step.cache["argmax"]
        theirs = np.asarray(other[step.layer]).reshape(ours.shape)
        differ = ours != theirs
        if not differ.any():
            continue
        (source,) = step.inputs.values()
        flat = source.reshape(source.shape[0], -1)
        ours_v = np.take_along_axis(flat, ours.reshape(len(flat), -1), 1)
        theirs_v = np.take_along_axis(flat, theirs.reshape(len(flat), -1), 1)
        gap = np.abs(ours_v - theirs_v).reshape(differ.shape)[differ]
        if not np.all(gap <= tol * max(float(np.max(np.abs(source))), 1e-300)):
            return {}
        ties[step.layer] = int(differ.sum())
    return ties


def tie_note(who: str, ties: dict[str, int]) -> str:
    return "; ".join(f"{who}'s {layer} took another of tied maxima in {n} window(s)"
                     for layer, n in ties.items())


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: the reference has not run yet
    text: str


def verdict(step: Step, dtype: str | None = None) -> Verdict:
    """Whether a step agrees with PyTorch within the tolerance of its dtype."""
    if step.torch_max_rel_err is None:
        return Verdict(None, "PyTorch has not run yet")
    dtype = dtype or str(step.value.dtype)
    tol = step.torch_tolerance or TOLERANCE[dtype]
    note = f" ({step.torch_note})" if step.torch_note else ""
    if step.torch_max_rel_err <= tol:
        if tol > 2 * TOLERANCE[dtype]:
            return Verdict(True, f"agrees as closely as dlogits allows: when p ~ 1, PyTorch's "
                                 f"p - 1 keeps few digits, and every gradient after it inherits "
                                 f"that (tolerance {tol:.0e}){note}")
        if step.phase == "backward" and step.kind == "softmax":  # dlogits: see compare_trace
            note = " (relative to the probabilities, which p - 1 is rounded to)" + note
        return Verdict(True, f"agrees to {dtype} precision{note}")
    return Verdict(False, f"DISAGREES: relative error {step.torch_max_rel_err:.1e} > {tol:.0e}"
                          f"{note}")
