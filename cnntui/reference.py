"""The same network in PyTorch with the same weights: every forward and backward tensor of the
trace, under the same names, and how far each of ours is from it.

torch takes seconds to import, so it is imported only inside these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnntui import model
from cnntui.trace import Step, Trace

# Agreement tolerances on max|ours - torch| / max(|torch|, tiny), per dtype. float64 sums of a
# few hundred products agree to ~1e-15; float32 to ~1e-6. The gaps are generous but still fail
# loudly for any real bug (those give errors of order 1).
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def torch_tensors(params: dict[str, np.ndarray], x: np.ndarray, label: int,
                  dtype: str = "float64", arch: model.Architecture = model.SIMPLE_CNN
                  ) -> dict[str, np.ndarray]:
    """Run one (C, H, W) image through a functional PyTorch copy of ``arch`` and return every
    tensor of the trace by name (no batch axis), gradients from autograd with ``retain_grad``."""
    import torch
    import torch.nn.functional as F

    tdtype = {"float64": torch.float64, "float32": torch.float32}[str(np.dtype(dtype))]
    leaf = {k: torch.tensor(np.asarray(v), dtype=tdtype, requires_grad=True)
            for k, v in params.items()}
    xt = torch.tensor(np.asarray(x)[None], dtype=tdtype, requires_grad=True)
    acts = {"x": xt}
    h = xt
    for layer in arch.layers:
        if layer.kind == "conv":
            w, b = (leaf[p] for p in layer.params)
            h = F.conv2d(h, w, b, stride=layer.stride, padding=layer.padding)
        elif layer.kind == "relu":
            h = torch.relu(h)
        elif layer.kind == "pool":
            h = F.max_pool2d(h, layer.size, layer.stride)
        elif layer.kind == "flatten":
            h = torch.flatten(h, 1)
        elif layer.kind == "linear":
            w, b = (leaf[p] for p in layer.params)
            h = h @ w + b
        elif layer.kind == "softmax":
            logits = acts[arch.layers[-2].out]
            loss = F.cross_entropy(logits, torch.tensor([label]))
            h = torch.softmax(logits, dim=1)
        if h.requires_grad:
            h.retain_grad()
        acts[layer.out] = h
    loss.backward()
    out = {name: t.detach().numpy()[0] for name, t in acts.items()}
    for i, layer in enumerate(arch.layers[:-1]):
        inp = model.layer_input(arch, i)
        out["d" + inp] = acts[inp].grad.numpy()[0]
        for p in layer.params:
            out["d" + p] = leaf[p].grad.numpy()
    out["d" + arch.layers[-2].out] = acts[arch.layers[-2].out].grad.numpy()[0]
    return out


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(max |difference|, that divided by the largest |reference| value). Relative to the
    tensor's scale, not per element: near-zero entries would otherwise make noise look huge."""
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64))))
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def attach(trace: Trace) -> None:
    """Fill ``torch_value``, ``torch_max_abs_diff`` and ``torch_max_rel_err`` on every step,
    running PyTorch with the very parameters the trace's steps used."""
    x = trace["x"].value
    params = {k: v for step in trace.steps for k, v in step.params.items()}
    ref = torch_tensors(params, x, trace.label, trace.dtype)
    for step in trace.steps:
        theirs = ref[step.name].reshape(step.value.shape)
        step.torch_value = theirs
        step.torch_max_abs_diff, step.torch_max_rel_err = compare(step.value, theirs)


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: the reference has not run yet
    text: str


def verdict(step: Step, dtype: str | None = None) -> Verdict:
    """Whether a step agrees with PyTorch within the tolerance of its dtype."""
    if step.torch_max_rel_err is None:
        return Verdict(None, "PyTorch has not run yet")
    dtype = dtype or str(step.value.dtype)
    tol = TOLERANCE[dtype]
    if step.torch_max_rel_err <= tol:
        return Verdict(True, f"agrees to {dtype} precision")
    return Verdict(False, f"DISAGREES: relative error {step.torch_max_rel_err:.1e} > {tol:.0e}")
