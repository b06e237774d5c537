"""The same network in PyTorch with the same weights: every forward and backward tensor of the
trace, under the same names, and how far each of ours is from it.

torch takes seconds to import, so it is imported only inside these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnntui import model
from cnntui.trace import Step, Trace

# Agreement tolerances on max|ours - reference| / max|reference|, by the dtype of our pass. The
# references always run in float64, from the same weights and input, and their backward passes
# start from our dlogits, so no error is inherited and no tolerance grows. float64 sums of a few
# hundred products agree to ~1e-15, float32 to ~1e-6; a real bug gives 1e-3 and more.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def torch_logits(arch: model.Architecture, params: dict, x, keep: dict | None = None,
                 choices: dict[str, np.ndarray] | None = None, own: dict | None = None):
    """``arch`` in PyTorch, functionally: torch tensors ``params`` and a batch ``x`` -> the logits
    (everything before the softmax). The one PyTorch copy of the network that the reference,
    the benchmark and the trainer comparison all use.

    ``keep``, if given, receives every intermediate tensor by name (gradients retained).
    ``choices`` (layer name -> a ReLU's mask or a pool's flat argmax, for one image) makes those
    layers follow them instead of choosing themselves; ``own`` then receives what each such
    layer would have chosen."""
    choices = choices or {}
    h = x
    for layer in arch.layers[:-1]:
        h = layer.torch(params, h, choices.get(layer.name), own)
        if keep is not None:
            h.retain_grad()
            keep[layer.out] = h
    return h


def torch_tensors(params: dict[str, np.ndarray], x: np.ndarray, label: int,
                  arch: model.Architecture = model.SIMPLE_CNN,
                  choices: dict[str, np.ndarray] | None = None,
                  dlogits: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run one (C, H, W) image through PyTorch's copy of ``arch`` in float64 and return every
    tensor of the trace by name (no batch axis; gradients from autograd with ``retain_grad``),
    and the choices its ReLU and pooling layers made themselves (mask / flat argmax).

    ``choices`` makes those layers follow another pass's choices (see ``torch_logits``);
    ``dlogits`` seeds the backward pass instead of the cross-entropy's own gradient."""
    import torch
    import torch.nn.functional as F

    leaf = {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True)
            for k, v in params.items()}
    xt = torch.tensor(np.asarray(x)[None], dtype=torch.float64, requires_grad=True)
    acts = {"x": xt}
    own: dict[str, np.ndarray] = {}
    logits = torch_logits(arch, leaf, xt, keep=acts, choices=choices, own=own)
    acts[arch.layers[-1].out] = torch.softmax(logits, dim=1)
    if dlogits is None:
        F.cross_entropy(logits, torch.tensor([label])).backward()
    else:
        logits.backward(gradient=torch.tensor(np.asarray(dlogits, dtype=np.float64)[None]))
    out = {name: t.detach().numpy()[0] for name, t in acts.items()}
    for i, layer in enumerate(arch.layers[:-1]):
        inp = model.layer_input(arch, i)
        out["d" + inp] = acts[inp].grad.numpy()[0]
        for p in layer.params:
            out["d" + p] = leaf[p].grad.numpy()
    out["d" + arch.logits] = acts[arch.logits].grad.numpy()[0]
    return out, own


def dlogits_reference(logits: np.ndarray, label: int) -> np.ndarray:
    """probs - onehot(label) in float64 from the given logits, written to keep every digit: the
    label's entry is -(sum of the other probabilities), each exp(l - max) / sum, never 1 - p."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max())
    probs = e / e.sum()
    d = probs.copy()
    d[label] = -(np.sum(probs[:label]) + np.sum(probs[label + 1:]))
    return d


def choices(trace: Trace) -> dict[str, np.ndarray]:
    """The choices every ReLU (mask) and pooling layer (flat argmax) of the trace made."""
    out = {}
    for s in trace.steps:
        if s.phase == "forward":
            for key in ("mask", "argmax"):
                if key in s.cache:
                    out[s.layer] = s.cache[key]
    return out


@dataclass(frozen=True)
class Reference:
    """Every tensor of a trace as another implementation computes it, in float64 from the
    trace's own weights and input, following the trace's ReLU and pooling choices, with its
    backward pass seeded by the trace's dlogits. Its ``dlogits`` is therefore not its own but
    ``dlogits_reference`` of our logits: the check of that first gradient on its own."""

    who: str  # "PyTorch" or "the lesson loops"
    tensors: dict[str, np.ndarray]
    own_choices: dict[str, np.ndarray]  # what its ReLU and pooling layers would have chosen

    @classmethod
    def seeded(cls, who: str, trace: Trace, tensors: dict[str, np.ndarray],
               own_choices: dict[str, np.ndarray]) -> Reference:
        logits = trace.arch.logits
        tensors["d" + logits] = dlogits_reference(trace[logits].value, trace.label)
        return cls(who, tensors, own_choices)


def reference_inputs(trace: Trace) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """(params, x, our choices, our dlogits) in float64: what every reference starts from."""
    params = {k: np.asarray(v, dtype=np.float64) for s in trace.steps for k, v in s.params.items()}
    x = np.asarray(trace["x"].value, dtype=np.float64)
    dlogits = np.asarray(trace.steps[trace.first_backward].value, dtype=np.float64)
    return params, x, choices(trace), dlogits


def torch_reference(trace: Trace) -> Reference:
    params, x, ours, dlogits = reference_inputs(trace)
    tensors, own = torch_tensors(params, x, trace.label, trace.arch, choices=ours,
                                 dlogits=dlogits)
    return Reference.seeded("PyTorch", trace, tensors, own)


def lesson_reference(trace: Trace) -> Reference:
    from cnntui import lesson

    params, x, ours, dlogits = reference_inputs(trace)
    tensors, own = lesson.lesson_tensors(params, x, trace.label, choices=ours, dlogits=dlogits,
                                         arch=trace.arch)
    return Reference.seeded("the lesson loops", trace, tensors, own)


def compare(ours: np.ndarray, theirs: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """(max |difference|, that divided by the largest |reference| value, at least ``floor``).
    Relative to the tensor's scale, not per element: near-zero entries would otherwise make
    rounding noise look huge. NaN or Inf on either side gives (nan, nan): never agreement."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if not (np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs))):
        return float("nan"), float("nan")
    if ours.size == 0:
        return 0.0, 0.0
    diff = float(np.max(np.abs(ours - theirs)))
    scale = max(float(np.max(np.abs(theirs))), floor)
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


@dataclass(frozen=True)
class Agreement:
    """One tensor of ours against the same-named tensor of a reference."""

    max_abs_diff: float
    rel_err: float  # max_abs_diff / max|reference|; nan when either side has NaN or Inf
    tolerance: float  # the one tolerance applied, and the one printed
    note: str = ""  # e.g. that the reference's pooling would have broken a tie otherwise
    wrong_choices: int = 0  # cells where this layer chose otherwise without a tie

    @property
    def ok(self) -> bool:
        return math.isfinite(self.rel_err) and self.rel_err <= self.tolerance \
            and not self.wrong_choices


def choice_differences(trace: Trace, ref: Reference, tol: float
                       ) -> tuple[dict[str, int], dict[str, int]]:
    """Per ReLU and pooling layer, the cells where the reference would have chosen otherwise than
    we did, split into ties (by the reference's own values: an input within ``tol`` of the
    map's scale of 0 for a ReLU, of the window's maximum for a pool; rounding breaks those
    either way) and wrong choices (anything else). Returns (ties, wrong), zero counts left out."""
    floor = float(np.finfo(trace.dtype).tiny)
    ties, wrong = {}, {}
    for layer, ours in choices(trace).items():
        own = np.asarray(ref.own_choices[layer]).reshape(ours.shape)
        differ = ours != own
        if not differ.any():
            continue
        step = next(s for s in trace.steps if s.phase == "forward" and s.layer == layer)
        source = np.asarray(ref.tensors[next(iter(step.inputs))], dtype=np.float64)
        if not np.all(np.isfinite(source)):
            continue  # no choice is meaningful among NaNs; the values already disagree
        scale = max(float(np.max(np.abs(source))), floor)
        if step.layer_object.choice_key == "mask":  # a ReLU: which side of 0 the input is on
            gap = np.abs(source[differ])
        else:  # a pool's argmax: how far the cell we took is below the window's maximum
            flat = source.reshape(len(source), -1)
            taken = np.take_along_axis(flat, ours.reshape(len(flat), -1), 1)
            best = np.take_along_axis(flat, own.reshape(len(flat), -1), 1)
            gap = np.abs(best - taken).reshape(differ.shape)[differ]
        tied = int(np.sum(gap <= tol * scale))  # NaN is never tied
        if tied:
            ties[layer] = tied
        if differ.sum() > tied:
            wrong[layer] = int(differ.sum()) - tied
    return ties, wrong


def check(trace: Trace, ref: Reference) -> dict[str, Agreement]:
    """Every step of ``trace`` against ``ref`` at the tolerance of the trace's dtype: dlogits
    against the formula, every backward tensor after it against the reference's backward pass
    from that same dlogits (see ``Reference``)."""
    tol = TOLERANCE[trace.dtype]
    floor = float(np.finfo(trace.dtype).tiny)  # an all-zero reference: only exact zeros agree
    ties, wrong = choice_differences(trace, ref, tol)
    tie_text = "; ".join(f"{ref.who}'s {layer} would break {n} tie(s) otherwise; it follows ours"
                         for layer, n in ties.items())
    # a choice shapes its layer's output and everything computed after it
    tied_from = min((s.index for s in trace.steps if s.phase == "forward" and s.layer in ties),
                    default=len(trace.steps))
    results = {}
    for step in trace.steps:
        theirs = np.asarray(ref.tensors[step.name]).reshape(step.value.shape)
        diff, rel = compare(step.value, theirs, floor)
        n_wrong = wrong.get(step.layer, 0) if step.phase == "forward" else 0
        notes = [tie_text] if tie_text and step.index >= tied_from else []
        if n_wrong:
            notes.insert(0, f"{step.layer} chose otherwise than {ref.who} in {n_wrong} cell(s) "
                            f"whose values are not tied")
        results[step.name] = Agreement(diff, rel, tol, "; ".join(notes), n_wrong)
    return results


@dataclass(frozen=True)
class TorchResult:
    """PyTorch's value of one step (float64) and how far ours is from it."""

    value: np.ndarray
    agreement: Agreement


def torch_results(trace: Trace) -> dict[str, TorchResult]:
    """PyTorch's value of every step (float64, from the very weights and input of the trace, its
    backward seeded with our dlogits) and the agreement of ours with it. Reads the trace only,
    so a worker thread can compute it while the UI draws the same trace."""
    return results_from(trace, torch_reference(trace))


def results_from(trace: Trace, ref: Reference) -> dict[str, TorchResult]:
    """``ref``'s value of every step and the agreement of ours with it (``torch_results``, from
    a reference computed elsewhere: the helper process of ``reference_process``)."""
    results = check(trace, ref)
    return {s.name: TorchResult(np.asarray(ref.tensors[s.name]).reshape(s.value.shape),
                                results[s.name]) for s in trace.steps}


def apply(trace: Trace, results: dict[str, TorchResult]) -> None:
    """Fill the ``torch_*`` fields of every step from ``torch_results`` (on the thread that
    draws the trace)."""
    for step in trace.steps:
        r = results[step.name]
        a = r.agreement
        step.torch_value = r.value
        step.torch_max_abs_diff, step.torch_max_rel_err = a.max_abs_diff, a.rel_err
        step.torch_tolerance, step.torch_note, step.torch_ok = a.tolerance, a.note, a.ok


def attach(trace: Trace) -> None:
    """``apply(trace, torch_results(trace))``: compare and fill in, in one go."""
    apply(trace, torch_results(trace))


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: the reference has not run yet
    text: str


def verdict(step: Step) -> Verdict:
    """Whether a step agrees with PyTorch, in words, with the tolerance that was applied."""
    if step.torch_ok is None:
        return Verdict(None, "PyTorch has not run yet")
    tol = step.torch_tolerance
    note = f" ({step.torch_note})" if step.torch_note else ""
    if step.torch_ok:
        against = ("float64 probs - onehot from our logits" if step.phase == "backward"
                   and step.kind == "softmax" else "PyTorch's float64")
        return Verdict(True, f"agrees with {against} to {tol:.0e}{note}")
    if not math.isfinite(step.torch_max_rel_err):
        return Verdict(False, f"DISAGREES: NaN or Inf in ours or PyTorch's{note}")
    if step.torch_max_rel_err > tol:
        return Verdict(False, f"DISAGREES: relative error {step.torch_max_rel_err:.1e} > "
                              f"{tol:.0e}{note}")
    return Verdict(False, f"DISAGREES: {step.torch_note}")  # a choice without a tie
