"""Centred finite differences (with one Richardson step) on sampled entries of every parameter
and of the input, compared with the analytic gradients by CS231n's relative error
``|a - n| / max(1e-8, |a| + |n|)``. Its floor of 1e-8 assumes gradients of order 1; here it
scales with the tensor's largest gradient and is never below what finite differences can resolve
(the loss's rounding error divided by h)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnntui import model

GRADCHECK_TOLERANCE = 1e-6  # float64; a wrong gradient gives errors of order 1e-2 or more


@dataclass(frozen=True)
class GradCheck:
    name: str  # the gradient's name: dW1 ... dx
    checked: int  # entries compared
    skipped: int  # entries whose +-h nudge moved a ReLU or a pooling argmax (a kink)
    max_rel_error: float  # nan if the loss or a gradient is NaN or Inf
    max_abs_error: float
    why_unchecked: str = "every entry tried sits at a kink (a ReLU or pooling choice moves)"

    @property
    def ok(self) -> bool | None:
        """True or False; None when no entry could be checked (every one sat at a kink)."""
        if not math.isfinite(self.max_rel_error):
            return False
        if self.checked == 0:
            return None
        return self.max_rel_error < GRADCHECK_TOLERANCE


def cross_entropy(logits: np.ndarray, label: int) -> float:
    """-log softmax(logits)[label], to full relative precision even when that probability is
    1 - 1e-10: then ``-log(p)`` of a rounded p has ~6 good digits, too few for a finite
    difference of a tiny loss. With s = logits - logits[label], loss = log(sum(exp(s)))."""
    s = np.delete(logits - logits[label], label)
    m = max(0.0, float(s.max()))
    if m == 0.0:  # the label has the largest logit: loss = log(1 + sum(exp(s)))
        return float(np.log1p(np.exp(s).sum()))
    return m + float(np.log(np.exp(-m) + np.exp(s - m).sum()))


def _loss_and_kinks(arch: model.Architecture, params: dict[str, np.ndarray], x: np.ndarray,
                    label: int) -> tuple[float, list[np.ndarray]]:
    """The loss, and every ReLU mask and pooling argmax: where the network is not smooth."""
    p = model.forward(arch, params, x[None])
    loss = cross_entropy(p.acts[arch.logits][0], label)
    kinks = [layer.choice(p.caches[layer.name]) for layer in arch.layers if layer.choice_key]
    return loss, kinks


def gradcheck(params: dict[str, np.ndarray], x: np.ndarray, label: int, *, samples: int = 12,
              h: float = 1e-5, seed: int = 0,
              arch: model.Architecture = model.SIMPLE_CNN) -> list[GradCheck]:
    """Check ``samples`` random entries of each parameter gradient and of ``dx`` (plus the
    entry with the largest analytic gradient), in float64."""
    params = model.cast_params(params, np.float64)
    x = np.asarray(x, dtype=np.float64)
    p = model.loss_and_grads(arch, params, x[None], np.array([label]))
    analytic = p.grads
    base_loss, base_kinks = _loss_and_kinks(arch, params, x, label)
    # A centred difference cannot resolve less than the loss's rounding divided by h: below
    # that, |a - n| is noise. The loss comes from differences of logits, each rounded relative
    # to the largest logit. CS231n's floor of 1e-8 assumes gradients of order 1 and this noise
    # far below; here the floor is raised until noise alone stays under the tolerance.
    logit_scale = 1 + float(np.max(np.abs(p.acts[arch.logits])))
    with np.errstate(over="ignore", invalid="ignore"):  # Inf here means: nothing resolvable
        noise = 10 * np.finfo(np.float64).eps * abs(base_loss) * logit_scale / h
    rng = np.random.default_rng(seed)
    rows = []
    for name in [*params, "x"]:
        grad = analytic["d" + name].reshape(-1)
        target = x if name == "x" else params[name]
        if not (np.isfinite(base_loss) and np.all(np.isfinite(grad))):
            rows.append(GradCheck("d" + name, 0, 0, float("nan"), float("nan")))
            continue
        floor = max(1e-8 * float(np.max(np.abs(grad))), noise / GRADCHECK_TOLERANCE, 1e-300)
        if not np.isfinite(floor):  # the loss's rounding alone overwhelms any difference
            rows.append(GradCheck("d" + name, 0, 0, 0.0, 0.0, "the loss's rounding error "
                                  "over h overflows, so no finite difference resolves it"))
            continue
        order = rng.permutation(target.size)
        largest = int(np.argmax(np.abs(grad)))
        picks = np.unique(np.append(order[:samples], largest))
        rel, abs_, skipped, drawn = [], [], 0, samples
        while True:
            for i in picks:
                numeric = _numeric(arch, params, x, label, name, target, int(i), h, base_kinks)
                if numeric is None:
                    skipped += 1
                    continue
                abs_.append(abs(grad[i] - numeric))
                rel.append(abs_[-1] / max(floor, abs(grad[i]) + abs(numeric)))
            # every entry drawn sat at a kink: draw more rather than report nothing checked
            if rel or drawn >= min(target.size, 16 * samples):
                break
            picks = np.setdiff1d(order[drawn:2 * drawn], [largest])
            drawn *= 2
        rows.append(GradCheck("d" + name, len(rel), skipped,
                              float(np.max(rel)) if rel else 0.0,
                              float(np.max(abs_)) if abs_ else 0.0))
    return rows


def _numeric(arch: model.Architecture, params: dict[str, np.ndarray], x: np.ndarray, label: int,
             name: str, target: np.ndarray, i: int, h: float,
             base_kinks: list[np.ndarray]) -> float | None:
    """The loss's derivative by entry ``i`` of ``target`` (parameter ``name`` or the input),
    or None when a nudge moves a ReLU or a pooling argmax: no derivative at a kink."""
    losses = []
    for step in (h, -h, h / 2, -h / 2):
        bumped = target.copy()
        bumped.reshape(-1)[i] += step
        if name == "x":
            loss, kinks = _loss_and_kinks(arch, params, bumped, label)
        else:
            loss, kinks = _loss_and_kinks(arch, {**params, name: bumped}, x, label)
        if any(not np.array_equal(a, b) for a, b in zip(kinks, base_kinks, strict=True)):
            return None
        losses.append(loss)
    # Richardson: the h^2 error of the two centred differences cancels, leaving h^4.
    # (conv1's weights move the logits fast enough for h^2 to show at 1e-6.)
    wide = (losses[0] - losses[1]) / (2 * h)
    narrow = (losses[2] - losses[3]) / h
    return (4 * narrow - wide) / 3
